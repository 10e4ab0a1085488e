"""The prior of VQ-VAE / VQ-VAE-2: PixelSNAIL-style autoregressive models over the code maps
of a frozen, trained VQ run (`vq_workdir`), and ancestral sampling through its decoder.

Data. `transform_sources` replaces the images of `config.data` by their code maps under the
frozen model (vaelab/models/frozen_vq.py); the VQ model is rebuilt from the run's config.json
and restored from its latest checkpoint, whose step is kept (eval/vq_step) so that a prior
is known to belong to one encoder. `config.data` must be the data the VQ model was trained
on (a checkpoint that does not fit those images is refused, naming `vq_workdir`).

Model. One PixelSNAIL per level (models/pixelsnail.py): VQ-VAE has one map; VQ-VAE-2 has a
top prior over the top map and a bottom prior over the bottom map conditioned on the top
map (and, in general, level i on every coarser level before it), as in Razavi et al.
The objective (losses/vq_prior.py) is the cross-entropy of the codes, reported in nats per
code (all levels: total nats over total codes) and per level.

Evaluation. eval/prior_nll (nats per code, held-out codes) and eval/prior_bits_per_code,
per level eval/prior_nll_<level>, beside two baselines on the same held-out codes:
eval/prior_uniform_nll = log K, and eval/prior_unigram_nll, the cross-entropy under the code
frequencies of the training codes (add-one smoothed, so a code never seen in training
costs finite nats), per level eval/prior_unigram_nll_<level>: a prior must beat both to
have learned more than code usage. (eval/uniform_nll and eval/unigram_nll[_<level>], the
names of earlier runs, are written beside them.)
Sampling draws the top map, then the bottom map given it, then decodes with the frozen VQ
decoder, all in one compiled program (`sample`): samples.png at the end, `--mode=sample`,
and code_reconstructions.png (decoded held-out codes, what a perfect prior's samples would
look like). `eval.sampler` chooses PixelSNAIL's sampler: `cached` (the default: per new
position only what its logits need) or `full` (one full network pass per position, the
reference); both give the same codes from the same key (models/pixelsnail_sampler.py).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vaelab import checks
from vaelab.data import vq_codes
from vaelab.errors import ConfigError
from vaelab.evaluate import pictures as pictures_lib
from vaelab.losses import vq_prior as prior_losses
from vaelab.models import frozen_vq, nets, pixelsnail, pixelsnail_sampler
from vaelab.models.base import Family


def config_keys(c) -> None:
  """The keys of the prior, replacing the image-model trunk keys of config_base."""
  c.model.name = "vq_prior"
  c.vq_workdir = ""  # workdir of a trained vqvae / vqvae2 run
  for key in ("encoder", "hidden", "conv_channels", "dense", "activation", "latent_dim"):
    del c.model[key]
  c.model.channels = 64  # width of both PixelSNAIL streams
  c.model.num_blocks = 2  # blocks of gated residual layers, each followed by attention
  c.model.res_per_block = 2
  c.model.num_heads = 4
  c.model.attention = True  # False: a Gated PixelCNN
  c.model.kernel_size = 3  # odd size of the masked convolutions
  c.model.dropout = 0.0
  c.eval.temperature = 1.0  # of the samples in pictures and --mode=sample; 0: argmax
  # PixelSNAIL's sampler: "cached" (incremental, same codes) or "full" (a pass per position)
  c.eval.sampler = "cached"
  c.eval.disentanglement = False  # codes have no features to score


@dataclasses.dataclass(frozen=True)
class PriorSpec:
  channels: int = 64
  num_blocks: int = 2
  res_per_block: int = 2
  num_heads: int = 4
  attention: bool = True
  kernel_size: int = 3
  dropout: float = 0.0
  dtype: str = "float32"  # of the activations; parameters and the loss stay float32

  @classmethod
  def from_config(cls, config) -> "PriorSpec":
    m = config.model
    return cls(int(m.channels), int(m.num_blocks), int(m.res_per_block), int(m.num_heads),
               bool(m.attention), int(m.kernel_size), float(m.dropout), str(config.dtype))

  def pixelsnail(self, num_codes: int, condition_codes: tuple[int, ...] = (),
                 name=None) -> pixelsnail.PixelSNAIL:
    return pixelsnail.PixelSNAIL(num_codes, self.channels, self.num_blocks, self.res_per_block,
                                 self.num_heads, self.attention, self.kernel_size,
                                 condition_codes, self.dropout, nets.compute_dtype(self.dtype),
                                 name=name)


class CodePrior(nn.Module):
  """p(codes) = prod over levels (coarse to fine) of PixelSNAIL(level | coarser levels)."""
  spec: PriorSpec
  num_codes: int
  levels: tuple[str, ...]  # the VQ model's LEVELS, coarse to fine
  code_shapes: tuple[tuple[int, int], ...]
  # Where the decoder of the samples lives, and the image shape to rebuild it for.
  vq_workdir: str
  vq_step: int
  image_shape: tuple[int, ...]
  temperature: float = 1.0
  sampler: str = "cached"  # eval.sampler, read here so that FAMILY.sample needs no config

  @nn.compact
  def __call__(self, codes, keys=None, deterministic: bool = True):
    """codes: one int map (B, H_l, W_l) per level -> one logits map (B, H_l, W_l, K) each."""
    return tuple(
        level_prior(self, i, name=prior_name(level))(c, tuple(codes[:i]) or None,
                                                    deterministic=deterministic)
        for i, (level, c) in enumerate(zip(self.levels, codes)))


def level_prior(model: CodePrior, i: int, name=None) -> pixelsnail.PixelSNAIL:
  """The PixelSNAIL of level i, conditioned on the i coarser levels. A function, not a
  method: a module built inside a method of an unbound module would be attached to it."""
  return model.spec.pixelsnail(model.num_codes, (model.num_codes,) * i, name=name)


def prior_name(level: str) -> str:
  return f"prior_{level}" if level else "prior"


def _codes(model: CodePrior, batch) -> tuple:
  return tuple(batch[vq_codes.code_key(level)] for level in model.levels)


def make_loss(config, info=None):
  dropout = float(config.model.dropout) > 0

  def loss(model, params, model_state, batch, keys, hparams):
    variables = {"params": params, **model_state}
    codes = _codes(model, batch)
    if dropout:
      # One dropout key per example, so masks do not depend on how the batch is split.
      def one(example_codes, key):
        out = model.apply(variables, tuple(c[None] for c in example_codes),
                          deterministic=False, rngs={"dropout": key})
        return tuple(l[0] for l in out)
      logits = jax.vmap(one)(codes, keys)
    else:
      logits = model.apply(variables, codes)
    terms = prior_losses.nll_terms(model.levels, logits, codes)
    metrics = {k: v.mean() for k, v in terms.items()}
    metrics["bits_per_code"] = metrics["nll"] / math.log(2)
    return metrics["nll"], (metrics, model_state)

  return loss


def make_eval_metrics(config):

  def eval_metrics(model, variables, batch, keys, hparams):
    codes = _codes(model, batch)
    terms = prior_losses.nll_terms(model.levels, model.apply(variables, codes), codes)
    out = {"loss": terms["nll"], "prior_bits_per_code": terms["nll"] / math.log(2)}
    out.update({f"prior_{k}": v for k, v in terms.items()})
    return out

  return eval_metrics


def unigram_nll(train_codes: np.ndarray, eval_codes: np.ndarray, num_codes: int) -> float:
  """Mean nats of the held-out codes under the add-one smoothed frequencies of the training
  codes: the entropy of code usage, measured on held-out codes."""
  counts = np.bincount(np.asarray(train_codes).ravel(), minlength=num_codes) + 1.0
  log_p = np.log(counts / counts.sum())
  return float(-log_p[np.asarray(eval_codes).ravel()].mean())


def final_baselines(config, train_source, eval_source):
  """Uniform and unigram nats per code of the held-out codes, overall and per level."""
  frozen = frozen_vq.load_frozen(config.vq_workdir, tuple(train_source.info.image_shape))
  k = frozen.num_codes
  out = {"prior_uniform_nll": math.log(k), "prior_uniform_bits_per_code": math.log2(k)}
  total_nats, total_codes = 0.0, 0
  for level in frozen.levels:
    key = vq_codes.code_key(level)
    held = eval_source.codes(key)
    nll = unigram_nll(train_source.codes(key), held, k)
    total_nats += nll * held.size
    total_codes += held.size
    if len(frozen.levels) > 1:
      out[prior_losses.level_metric("prior_unigram_nll", level)] = nll
      out[prior_losses.level_metric("prior_uniform_nll", level)] = math.log(k)
  out["prior_unigram_nll"] = total_nats / total_codes
  # The names of earlier runs (no prior_ prefix) stay beside the fixed ones.
  out.update({name[len("prior_"):]: value for name, value in list(out.items())
              if not name.startswith("prior_uniform_nll_")})
  out["vq_step"] = float(frozen.step)
  return {f"eval/{name}": value for name, value in out.items()}


def sample_codes(model: CodePrior, variables, key, n: int, temperature=None,
                 sampler: str | None = None) -> tuple:
  """Ancestral samples of every level, coarse to fine, each given the ones before it.
  `temperature` and `sampler` default to the model's (eval.temperature, eval.sampler)."""
  temperature = model.temperature if temperature is None else temperature
  sampler = model.sampler if sampler is None else sampler
  codes = []
  for i, (level, (h, w)) in enumerate(zip(model.levels, model.code_shapes)):
    level_vars = {"params": variables["params"][prior_name(level)]}
    codes.append(pixelsnail_sampler.sample(level_prior(model, i), level_vars,
                                   jax.random.fold_in(key, i), (n, h, w),
                                   tuple(codes) or None, temperature, sampler))
  return tuple(codes)


def _frozen_for(model: CodePrior) -> frozen_vq.FrozenVQ:
  frozen = frozen_vq.load_frozen(model.vq_workdir, model.image_shape)
  if frozen.step != model.vq_step:
    logging.warning("The VQ run %s is now at step %d; this prior was trained on the codes of "
                    "its step %d, so its samples are decoded by another decoder.",
                    model.vq_workdir, frozen.step, model.vq_step)
  return frozen


def sample(model: CodePrior, variables, key, n: int, config=None):
  """n images: codes from the prior, decoded by the frozen VQ decoder, in one compiled call.

  `config` (optional): its eval.temperature and eval.sampler replace the model's."""
  temperature, sampler = model.temperature, model.sampler
  if config is not None:
    temperature, sampler = float(config.eval.temperature), str(config.eval.sampler)
  frozen = _frozen_for(model)
  return sample_images(model, frozen.model, variables, frozen.variables, key, int(n),
                       temperature, sampler)


@functools.partial(jax.jit, static_argnames=("model", "vq_model", "n", "sampler"))
def sample_images(model: CodePrior, vq_model, variables, vq_variables, key, n: int,
                  temperature, sampler: str):
  """Every level's prior, coarse to fine, then `vq_model`'s decoder: one program, so that
  --mode=sample compiles once and runs without a host round trip between the stages."""
  codes = sample_codes(model, variables, key, n, temperature, sampler)
  return vq_model.apply(vq_variables, *codes, method="decode_indices")


def pictures(config, model, variables, workdir, eval_source):
  """Held-out codes through the frozen decoder: the reference for the samples."""
  n = min(int(config.eval.num_pictures), len(eval_source))
  batch = eval_source.get(np.linspace(0, len(eval_source) - 1, n).astype(int))
  images = _frozen_for(model).decode(_codes(model, batch))
  return [pictures_lib.save_grid(np.asarray(images),
                                 os.path.join(workdir, "code_reconstructions.png"))]


def transform_sources(config, train_source, eval_source):
  frozen = frozen_vq.load_frozen(config.vq_workdir, tuple(train_source.info.image_shape))
  mine, theirs = config.data, frozen.config.data
  differ = [k for k in ("name", "train_path", "data_dir", "train_split") if mine[k] != theirs[k]]
  if differ:
    # Legitimate (a VQ model of other images), but more often a forgotten data flag.
    logging.warning("This prior's data.%s differ from those of the VQ run in %s (%s vs %s): "
                    "the codes are extracted from this config's data.", "/".join(differ),
                    config.vq_workdir, [mine[k] for k in differ], [theirs[k] for k in differ])
  return frozen_vq.encode(frozen, train_source), frozen_vq.encode(frozen, eval_source)


def make_model(config, info):
  frozen = frozen_vq.load_frozen(config.vq_workdir, tuple(info.image_shape))
  return CodePrior(PriorSpec.from_config(config), frozen.num_codes, frozen.levels,
                   frozen.latent_shapes(), frozen.workdir, frozen.step,
                   tuple(info.image_shape), float(config.eval.temperature),
                   str(config.eval.sampler))


def init_input(model: CodePrior, train_source):
  return tuple(jnp.zeros((1, h, w), jnp.int32) for h, w in model.code_shapes)


def validate(config):
  m = config.model
  for key, minimum in (("channels", 1), ("num_blocks", 0), ("res_per_block", 0),
                       ("num_heads", 1), ("kernel_size", 1)):
    checks.integer(m[key], f"model.{key}", minimum)
  if m.kernel_size % 2 == 0:
    raise ConfigError(f"model.kernel_size={m.kernel_size}: must be odd (the mask's centre is "
                      f"the output position)")
  if not isinstance(m.attention, bool):
    raise ConfigError(f"model.attention={m.attention!r}: must be True or False")
  if m.attention and m.channels % m.num_heads:
    raise ConfigError(f"model.channels={m.channels} is not divisible by model.num_heads="
                      f"{m.num_heads}")
  if not 0 <= float(m.dropout) < 1:
    raise ConfigError(f"model.dropout={m.dropout}: must be in [0, 1)")
  if not 0 <= float(config.eval.temperature) < math.inf:
    raise ConfigError(f"eval.temperature={config.eval.temperature}: must be a number >= 0")
  if config.eval.sampler not in pixelsnail_sampler.SAMPLERS:
    raise ConfigError(f"eval.sampler={config.eval.sampler!r}: expected one of "
                      f"{pixelsnail_sampler.SAMPLERS}")
  frozen_vq.check_workdir(config.vq_workdir)


FAMILY = Family(
    name="vq_prior",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    validate=validate,
    sample=sample,
    final_baselines=final_baselines,
    pictures=pictures,
    transform_sources=transform_sources,
    init_input=init_input,
    # PixelSNAIL computes in config.dtype; the cross-entropy casts the logits to float32.
    mixed_precision=True,
)
