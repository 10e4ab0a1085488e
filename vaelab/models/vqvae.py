"""VQ-VAE (van den Oord et al. 2017): conv encoder, vector quantizer, conv decoder.

Encoder: stride-2 4x4 convolutions (`model.conv_channels`, each followed by the
activation), a 3x3 convolution and `model.num_res_blocks` residual blocks (act, 3x3 conv
to `model.res_channels`, act, 1x1 conv back), then a 1x1 convolution to `model.code_dim`.
The latent map is H / 2**len(conv_channels) on a side (CIFAR-10 with the paper's two
convolutions: 8x8). Each latent vector is quantized by `model.quantizer` (below). The decoder
mirrors the encoder with pixel-shuffle upsampling (nets.Upsample) and emits logits whose
sigmoid is the image; `model.recon_loss` is `mse` (squared error of that image, the
paper's Gaussian) or `bernoulli`. The objective is losses/vq.py's, with the commitment
weight `loss.commitment` entering the step as an array.

Quantizers (`model.quantizer`, each usable in both VQ families and at both levels of
VQ-VAE-2; their modules return one dict, see quantizer.VectorQuantizer.__call__):
  vq        the nearest of `model.num_codes` codes (models/quantizer.py; EMA codebook unless
            `model.ema_decay` = 0; restarts, k-means). The default.
  fsq       finite scalar quantization (models/fsq.py) to the grid `model.fsq_levels`:
            prod(levels) implicit codes, no codebook, no quantization loss. model.code_dim
            may differ from len(fsq_levels): a learned projection is put between them.
  residual  `model.num_quantizers` codebooks of `model.num_codes` codes, each quantizing
            the previous one's residual (models/residual_vq.py); EMA etc. as for vq.
Options where they apply: `model.codebook_norm` = "l2" (vq: cosine lookup, ViT-VQGAN),
`model.codebook_dim` > 0 (vq, residual: lookup in a learned projection to that dimension;
0 = no projection), `model.gradient` = "straight_through" | "rotation" (all: the rotation
trick, quantizer.rotation_trick). `validate` refuses what does not apply.

Reported: every step train/perplexity and train/codebook_usage of the global batch; at
the end eval/perplexity and eval/codebook_usage of the whole evaluation set (`analyses`:
the eval step only averages per-example values, and the perplexity of a set is not the
mean of its images'; the per-image one is eval/image_perplexity), eval/recon_sse, and
the PCA baseline eval/pca_recon_sse with as many components as the model has latent
values, one code index per latent position (H'W'; eval/pca_components).
The names are the same for every quantizer: for fsq the usage and perplexity are over the
prod(fsq_levels) grid points, commitment is the squared distance of the bounded input to
its grid point (not in the loss); for residual each codebook has its own names with a
suffix _q0, _q1, ... (perplexity, codebook_usage, commitment = that level's
||r_l - q_l||^2, the residual it leaves), and the un-suffixed perplexity and codebook_usage
are their means over the levels, commitment the distance from z to the sum of its codes
(VQ-VAE-2 puts its level last: eval/codebook_usage_q0_bottom).

The prior over codes (another module) trains on `encode_indices` of a frozen model and
decodes its samples with `decode_indices`; `encode_source` extracts a whole split. One index
per latent position, in [0, prior_num_codes(config)) (fsq: prod(fsq_levels)). A residual
model has num_quantizers indices per position, which that prior does not model:
its encode_indices refuses (ConfigError), `code_maps` gives all of them.
There is no `sample` here: sampling needs that prior.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaelab import spmd
from vaelab.errors import ConfigError
from vaelab.evaluate import pca
from vaelab.losses import reconstruction
from vaelab.losses import vq as vq_losses
from vaelab.losses.ae import recon_loss_per_example
from vaelab.models import fsq, nets, quantizer as quantizer_lib
from vaelab.models.base import Family
from vaelab.models.quantizer import COLLECTION, VectorQuantizer, perplexity
from vaelab.models.residual_vq import ResidualVectorQuantizer

# The mesh axis of the train step (vaelab.training.step.AXIS); the loss runs under shard_map.
AXIS = "batch"
RECON_LOSSES = ("mse", "bernoulli")
QUANTIZERS = ("vq", "fsq", "residual")
# The step-changing string options, with all their values (Family.options).
OPTIONS = {"model.quantizer": QUANTIZERS,
           "model.codebook_norm": quantizer_lib.CODEBOOK_NORMS,
           "model.gradient": tuple(quantizer_lib.GRADIENTS)}


def config_keys(c, name: str = "vqvae") -> None:
  """The keys of the VQ families (paper's CIFAR-10 shape), replacing the MLP/VAE trunk keys
  of config_base that these models do not read."""
  c.model.name = name
  c.model.encoder = "conv"  # the only trunk here: strided convolutions + residual blocks
  c.model.conv_channels = (256, 256)  # stride-2 4x4 convolutions; latents H / 2**len
  c.model.num_res_blocks = 2
  c.model.res_channels = 256  # width of the 3x3 convolution inside a residual block
  c.model.activation = "relu"
  c.model.num_codes = 512  # K
  c.model.code_dim = 64  # D
  c.model.ema_decay = 0.99  # gamma of the EMA codebook; 0: codebook learned by gradient
  c.model.ema_epsilon = 1e-5  # Laplace smoothing of the EMA counts
  c.model.dead_code_steps = 0  # > 0: restart codes unused for this many steps (EMA only)
  c.model.kmeans_init = False  # codebook from k-means of the first batch (EMA only)
  c.model.quantizer = "vq"  # vq | fsq | residual (module docstring)
  c.model.codebook_norm = "none"  # none | l2 (cosine lookup; vq only)
  c.model.codebook_dim = 0  # > 0: lookup in a learned projection to this dim (vq, residual)
  c.model.gradient = "straight_through"  # straight_through | rotation (the rotation trick)
  c.model.fsq_levels = (8, 5, 5, 5)  # fsq only: levels per channel, prod = 1000 codes
  c.model.num_quantizers = 4  # residual only: codebooks of num_codes each
  c.model.recon_loss = "mse"  # mse (squared error of the sigmoid image) | bernoulli
  c.loss.commitment = 0.25  # beta
  for key in ("hidden", "dense", "latent_dim"):
    del c.model[key]


# Config variants (`configs/vqvae_mnist.py:quantizer=fsq`): each sets the quantizer and the
# companion keys it needs, from a config whose model.num_codes is K.
PRESETS = ("vq", "fsq", "residual", "cosine", "rotation")


def apply_preset(c, preset: str) -> None:
  """vq: as configured; fsq: the recommended levels nearest K (fsq.levels_near), no restarts or
  k-means; residual: 2 codebooks of K; cosine: l2-normalized 4-d codes learned by the
  codebook loss (ViT-VQGAN), no restarts (they need the EMA); rotation: the rotation trick."""
  m = c.model
  if preset not in PRESETS:
    raise ValueError(f"config variant quantizer={preset!r}: expected one of {PRESETS}")
  if preset == "fsq":
    m.quantizer, m.fsq_levels = "fsq", fsq.levels_near(int(m.num_codes))
    m.dead_code_steps, m.kmeans_init = 0, False
  elif preset == "residual":
    m.quantizer, m.num_quantizers = "residual", 2
  elif preset == "cosine":
    m.codebook_norm, m.codebook_dim, m.ema_decay = "l2", 4, 0.0
    m.dead_code_steps, m.kmeans_init = 0, False
  elif preset == "rotation":
    m.gradient = "rotation"


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """The hashable trunk keys of `config.model` (Flax fields must be hashable)."""
  channels: tuple[int, ...] = (256, 256)
  num_res_blocks: int = 2
  res_channels: int = 256
  activation: str = "relu"
  dtype: str = "float32"  # of the activations (config.dtype); parameters stay float32

  @classmethod
  def from_config(cls, m, dtype: str = "float32") -> "ConvSpec":
    return cls(tuple(int(c) for c in m.conv_channels), int(m.num_res_blocks),
               int(m.res_channels), m.activation, dtype)

  def conv(self, features, kernel_size, **kwargs) -> nn.Conv:
    """A convolution computing in this spec's dtype."""
    return nn.Conv(features, kernel_size, dtype=nets.compute_dtype(self.dtype), **kwargs)


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
  num_codes: int = 512
  code_dim: int = 64
  ema_decay: float = 0.99
  epsilon: float = 1e-5
  dead_code_steps: int = 0
  kmeans_init: bool = False
  quantizer: str = "vq"
  codebook_norm: str = "none"
  codebook_dim: int = 0
  gradient: str = "straight_through"
  fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
  num_quantizers: int = 4

  @classmethod
  def from_config(cls, m) -> "QuantizerSpec":
    # .get: a prior rebuilds a frozen run from its config.json, which lacks the keys that
    # did not exist when it was written (it used today's defaults).
    return cls(int(m.num_codes), int(m.code_dim), float(m.ema_decay), float(m.ema_epsilon),
               int(m.dead_code_steps), bool(m.kmeans_init), m.get("quantizer", "vq"),
               m.get("codebook_norm", "none"), int(m.get("codebook_dim", 0)),
               m.get("gradient", "straight_through"),
               tuple(int(l) for l in m.get("fsq_levels", (8, 5, 5, 5))),
               int(m.get("num_quantizers", 4)))

  @property
  def codebook_size(self) -> int:
    """The number of values one index takes (fsq: the grid's prod(fsq_levels))."""
    return fsq.codebook_size(self.fsq_levels) if self.quantizer == "fsq" else self.num_codes

  @property
  def num_indices(self) -> int:
    """Indices per latent position: num_quantizers for residual, else 1."""
    return self.num_quantizers if self.quantizer == "residual" else 1

  @property
  def ema(self) -> bool:
    """Whether the module keeps state in the "vq" collection (an EMA codebook)."""
    return self.quantizer != "fsq" and self.ema_decay > 0

  def module(self, axis_name, name=None) -> nn.Module:
    if self.quantizer == "fsq":
      return fsq.FiniteScalarQuantizer(self.fsq_levels, self.code_dim, self.gradient,
                                       axis_name, name=name)
    if self.quantizer == "residual":
      return ResidualVectorQuantizer(
          self.num_quantizers, self.num_codes, self.code_dim, self.ema_decay, self.epsilon,
          self.dead_code_steps, self.kmeans_init, axis_name, self.codebook_dim,
          self.gradient, name=name)
    return VectorQuantizer(self.num_codes, self.code_dim, self.ema_decay, self.epsilon,
                           self.dead_code_steps, self.kmeans_init, axis_name,
                           self.codebook_norm, self.codebook_dim, self.gradient, name=name)


def refuse_multiple_indices(spec: QuantizerSpec) -> None:
  """Raises ConfigError when a latent position has more than one index (what a prior over
  one code per position cannot take)."""
  if spec.num_indices > 1:
    raise ConfigError(
        f"model.quantizer={spec.quantizer!r} stores model.num_quantizers={spec.num_indices} "
        f"indices per latent position; encode_indices / decode_indices (and the vq_prior) "
        f"take one: use model.quantizer='vq' or 'fsq', or code_maps for all the levels")


def prior_num_codes(config) -> int:
  """The number of values a code of a trained VQ run takes, what a prior over its codes
  models: model.num_codes, or prod(model.fsq_levels) for fsq. ConfigError for residual."""
  spec = QuantizerSpec.from_config(config.model)
  refuse_multiple_indices(spec)
  return spec.codebook_size


class ResStack(nn.Module):
  """Residual blocks x + conv1x1(act(conv3x3(act(x)))), then the activation."""
  spec: ConvSpec

  @nn.compact
  def __call__(self, x):
    act = nets.activation(self.spec.activation)
    for i in range(self.spec.num_res_blocks):
      h = self.spec.conv(self.spec.res_channels, (3, 3), padding="SAME",
                         name=f"block{i}_3x3")(act(x))
      x = x + self.spec.conv(x.shape[-1], (1, 1), name=f"block{i}_1x1")(act(h))
    return act(x)


class Encoder(nn.Module):
  """Stride-2 4x4 convolutions, a 3x3 convolution and the residual stack."""
  spec: ConvSpec

  @nn.compact
  def __call__(self, x):
    act = nets.activation(self.spec.activation)
    for i, c in enumerate(self.spec.channels):
      x = act(self.spec.conv(c, (4, 4), strides=(2, 2), padding="SAME", name=f"down_{i}")(x))
    x = self.spec.conv(self.spec.channels[-1], (3, 3), padding="SAME", name="conv")(x)
    return ResStack(self.spec, name="res")(x)


class Decoder(nn.Module):
  """The encoder's mirror: a 3x3 convolution, the residual stack, then one x2 upsampling
  per encoder convolution (pixel shuffle: faster than ConvTranspose on CPU), the last to
  `out_channels` without activation; the output is float32."""
  spec: ConvSpec
  out_channels: int

  @nn.compact
  def __call__(self, z):
    act = nets.activation(self.spec.activation)
    x = self.spec.conv(self.spec.channels[-1], (3, 3), padding="SAME", name="conv")(z)
    x = ResStack(self.spec, name="res")(x)
    widths = [*reversed(self.spec.channels[:-1]), self.out_channels]
    for i, c in enumerate(widths):
      x = nets.Upsample(c, nets.compute_dtype(self.spec.dtype), name=f"up_{i}")(x)
      if i < len(widths) - 1:
        x = act(x)
    return x.astype(jnp.float32)


class VQVAE(nn.Module):
  spec: ConvSpec
  quantizer: QuantizerSpec
  image_shape: tuple[int, int, int]
  # Set by the loss for the call inside the train step (see models/quantizer.py).
  axis_name: str | None = None

  # Names of the latent levels, suffixes of their metrics ("" for the single level).
  LEVELS = ("",)

  def setup(self):
    self.encoder = Encoder(self.spec)
    self.pre_vq = self.spec.conv(self.quantizer.code_dim, (1, 1))
    self.vq = self.quantizer.module(self.axis_name)
    self.decoder = Decoder(self.spec, self.image_shape[-1])

  def encode(self, x):
    """Encoder outputs z_e (B, H', W', D) before quantization, float32: the quantizer's
    distances and EMA statistics are kept at full precision."""
    return self.pre_vq(self.encoder(x)).astype(jnp.float32)

  def __call__(self, x, keys=None):
    """(decoder logits, (quantizer output,)); updates the EMA codebook when "vq" is mutable."""
    q = self.vq(self.encode(x), keys)
    return self.decoder(q["quantized"]), (q,)

  def encode_indices(self, x):
    """Images (B, H, W, C) in [0, 1] -> code indices int32 (B, H', W'), each in
    [0, quantizer.codebook_size). A residual quantizer is refused (refuse_multiple_indices)."""
    refuse_multiple_indices(self.quantizer)
    return self.vq(self.encode(x))["indices"]

  def code_indices(self, x):
    """The index maps of every level, as a tuple (LEVELS order)."""
    return (self.encode_indices(x),)

  def code_maps(self, x):
    """Like code_indices for every quantizer: residual maps are (B, H', W', num_quantizers)."""
    return (self.vq(self.encode(x))["indices"],)

  def decode_indices(self, indices):
    """Code indices int32 (B, H', W') -> images (B, H, W, C) in [0, 1]. A residual
    quantizer's maps (B, H', W', num_quantizers) decode too."""
    return jax.nn.sigmoid(self.decoder(self.vq.lookup(indices)))

  def quantize(self, x):
    """The quantized latent map (B, H', W', code_dim), the decoder's input: the features a
    probe reads."""
    return self.vq(self.encode(x))["quantized"]

  def reconstruct(self, x):
    return jax.nn.sigmoid(self(x)[0])


def dtype_of(config) -> str:
  """config.dtype; a prior rebuilds a frozen run from its config.json, which lacks the key
  if it was written before the key existed (its activations were float32)."""
  return config.get("dtype", "float32")


def make_model(config, info):
  return VQVAE(ConvSpec.from_config(config.model, dtype_of(config)),
               QuantizerSpec.from_config(config.model),
               tuple(info.image_shape))


def latent_shapes(model) -> list[tuple[int, int]]:
  """(H', W') of every level of a VQVAE."""
  h, w, _ = model.image_shape
  f = 2**len(model.spec.channels)
  return [(h // f, w // f)]


def _name(metric: str, level: str) -> str:
  return f"{metric}_{level}" if level else metric


def _image_perplexity(indices, num_codes: int):
  """(B, ...) code indices -> (B,) perplexity of each image's own code usage."""
  counts = jax.vmap(lambda i: quantizer_lib.code_counts(i, num_codes))(indices)
  return jax.vmap(perplexity)(counts)


def _per_codebook(indices, residual: bool):
  """A quantizer's index map(s) as a list, one per codebook (residual: the last axis)."""
  return [indices[..., l] for l in range(indices.shape[-1])] if residual else [indices]


def _usage_metrics(q, level: str, residual: bool) -> dict:
  """train/ code statistics of one latent level from its quantizer output (module
  docstring: residual levels get _q<l> names, the plain names are their means)."""
  counts = q["counts"] if residual else q["counts"][None]
  ppl = [perplexity(c) for c in counts]
  usage = [jnp.mean(c > 0) for c in counts]
  out = {_name("perplexity", level): jnp.mean(jnp.stack(ppl)),
         _name("codebook_usage", level): jnp.mean(jnp.stack(usage))}
  if residual:
    for l, (p, u) in enumerate(zip(ppl, usage)):
      out[_name(f"perplexity_q{l}", level)] = p
      out[_name(f"codebook_usage_q{l}", level)] = u
  return out


def _commitment_metrics(q, level: str, residual: bool) -> dict:
  """Per-example squared distances from each level's input to its code (module docstring)."""
  out = {_name("commitment", level): vq_losses.commitment_loss(q["z_e"], q["z_q"])}
  if residual:
    for l, (r, code) in enumerate(q["pairs"]):
      out[_name(f"commitment_q{l}", level)] = vq_losses.commitment_loss(r, code)
  return out


def make_loss(config, info=None, axis_name: str | None = AXIS):
  """The objective of both VQ families (their modules return (logits, levels))."""
  recon_loss = config.model.recon_loss
  spec = QuantizerSpec.from_config(config.model)
  ema, residual = spec.ema, spec.quantizer == "residual"

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    # The quantizers psum their statistics over the step's mesh axis (quantizer.py).
    model = model.clone(axis_name=axis_name)
    variables = {"params": params, **model_state}
    if ema:
      (logits, levels), updated = model.apply(variables, x, keys, mutable=[COLLECTION])
      model_state = {**model_state, **updated}
    else:
      logits, levels = model.apply(variables, x, keys)
    recon = recon_loss_per_example(recon_loss, logits, x)
    quant = vq_losses.vq_loss([p for q in levels for p in q["pairs"]], hparams["commitment"],
                              ema)
    metrics = {"recon": recon.mean(),
               "recon_sse": reconstruction.sse(jax.nn.sigmoid(logits), x).mean()}
    for level, q in zip(model.LEVELS, levels):
      metrics.update({k: v.mean() for k, v in _commitment_metrics(q, level, residual).items()})
      # Of the global batch: counts are psummed over devices inside the quantizer.
      metrics.update(_usage_metrics(q, level, residual))
    return (recon + quant).mean(), (metrics, model_state)

  return loss


def make_eval_metrics(config):
  recon_loss = config.model.recon_loss
  spec = QuantizerSpec.from_config(config.model)
  ema, residual, num_codes = spec.ema, spec.quantizer == "residual", spec.codebook_size

  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    logits, levels = model.apply(variables, x)
    recon = recon_loss_per_example(recon_loss, logits, x)
    quant = vq_losses.vq_loss([p for q in levels for p in q["pairs"]], hparams["commitment"],
                              ema)
    out = {"loss": recon + quant, "recon": recon,
           "recon_sse": reconstruction.sse(jax.nn.sigmoid(logits), batch.get("image_raw", x))}
    for level, q in zip(model.LEVELS, levels):
      out.update(_commitment_metrics(q, level, residual))
      # Residual: the mean over the codebooks of each one's per-image perplexity.
      out[_name("image_perplexity", level)] = jnp.mean(jnp.stack(
          [_image_perplexity(i, num_codes) for i in _per_codebook(q["indices"], residual)]), 0)
    return out

  return eval_metrics


def encode_source(model, variables, source, batch_size: int = 500, limit=None,
                  method: str = "code_indices"):
  """Code indices of a whole split: a tuple (LEVELS order) of int32 arrays (N, H', W').

  What a prior trains on: `variables` of a frozen trained model (e.g.
  `loop.restore_latest(exp, workdir).variables()`), `source` a data source. With
  method="code_maps", residual maps are (N, H', W', num_quantizers).
  """
  codes = functools.partial(spmd.apply, model, method=method)
  n = len(source) if limit is None else min(len(source), limit)
  chunks = [jax.device_get(codes(variables, source.get(np.arange(i, min(i + batch_size, n)))[
      "image"])) for i in range(0, n, batch_size)]
  return tuple(np.concatenate([c[l] for c in chunks]).astype(np.int32)
               for l in range(len(model.LEVELS)))


def code_statistics(indices, num_codes: int) -> tuple[float, float]:
  """(perplexity, fraction of codes used) of a set of code indices."""
  counts = np.bincount(np.asarray(indices).ravel(), minlength=num_codes)
  return float(perplexity(counts)), float(np.mean(counts > 0))


def analyses(config, model, variables, train_source, eval_source):
  """Set-level code statistics of the evaluation split: eval/perplexity = exp(entropy) of
  the code frequencies over all its latent positions, eval/codebook_usage = the fraction
  of the K codes used at least once (per level with a suffix for VQ-VAE-2; residual: per
  codebook with _q<l>, the plain names their means; fsq: K = prod(fsq_levels))."""
  spec = QuantizerSpec.from_config(config.model)
  residual = spec.quantizer == "residual"
  out = {}
  for level, idx in zip(model.LEVELS, encode_source(model, variables, eval_source,
                                                     int(config.eval.batch_size),
                                                     method="code_maps")):
    stats = [code_statistics(i, spec.codebook_size) for i in _per_codebook(idx, residual)]
    out[f"eval/{_name('perplexity', level)}"] = float(np.mean([p for p, _ in stats]))
    out[f"eval/{_name('codebook_usage', level)}"] = float(np.mean([u for _, u in stats]))
    if residual:
      for l, (ppl, usage) in enumerate(stats):
        out[f"eval/{_name(f'perplexity_q{l}', level)}"] = ppl
        out[f"eval/{_name(f'codebook_usage_q{l}', level)}"] = usage
  return out


def make_baselines(make_model_fn, shapes_fn):
  """The family's `baselines`: PCA with as many components as the model has latent values
  (one code index per latent position, summed over levels), fitted on the training split;
  skipped when that is as many as the pixels."""

  def baselines(config, train_source, eval_source):
    k = sum(h * w for h, w in shapes_fn(make_model_fn(config, train_source.info)))
    if k >= int(np.prod(train_source.info.image_shape)):
      return {}
    return {"eval/pca_recon_sse": pca.pca_recon_sse(train_source, eval_source, k),
            "eval/pca_components": float(k)}

  return baselines


def encode(model, variables, x):
  """Family.encode: the code index maps of every quantizer (VQ-VAE: one array (B, H', W'),
  VQ-VAE-2: (top, bottom); residual: a last axis of num_quantizers)."""
  maps = spmd.apply(model, variables, x, method="code_maps")
  return maps[0] if len(maps) == 1 else tuple(maps)


def decode(model, variables, codes):
  """Family.decode: images in [0, 1] of what `encode` returns."""
  codes = tuple(codes) if isinstance(codes, (tuple, list)) else (codes,)
  return spmd.apply(model, variables, *codes, method="decode_indices")


def hparams(config):
  return {"commitment": float(config.loss.commitment)}


def _int_at_least(value, key: str, minimum: int):
  if isinstance(value, bool) or not isinstance(value, (int, float)) \
      or not math.isfinite(value) or int(value) != value or value < minimum:
    raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}")


def validate(config):
  """Checks the keys of the VQ families; raises ConfigError naming the key."""
  m = config.model
  if m.encoder != "conv":
    raise ConfigError(f"model.encoder={m.encoder!r}: the VQ families are convolutional; use "
                      f"'conv'")
  channels = tuple(m.conv_channels)
  if not channels:
    raise ConfigError("model.conv_channels=(): give at least one stride-2 convolution")
  for c in channels:
    _int_at_least(c, f"model.conv_channels (entry {c!r})", 1)
  _int_at_least(m.num_res_blocks, "model.num_res_blocks", 0)
  _int_at_least(m.res_channels, "model.res_channels", 1)
  if m.activation not in nets.ACTIVATIONS:
    raise ConfigError(f"model.activation={m.activation!r}: expected one of "
                      f"{sorted(nets.ACTIVATIONS)}")
  if m.recon_loss not in RECON_LOSSES:
    raise ConfigError(f"model.recon_loss={m.recon_loss!r}: expected one of {RECON_LOSSES}")
  _int_at_least(m.num_codes, "model.num_codes", 1)
  _int_at_least(m.code_dim, "model.code_dim", 1)
  if not 0 <= float(m.ema_decay) < 1:
    raise ConfigError(f"model.ema_decay={m.ema_decay}: must be in [0, 1) (0 turns the EMA "
                      f"codebook off)")
  if not 0 < float(m.ema_epsilon) < math.inf:
    raise ConfigError(f"model.ema_epsilon={m.ema_epsilon}: must be a number > 0")
  if not 0 <= float(config.loss.commitment) < math.inf:
    raise ConfigError(f"loss.commitment={config.loss.commitment}: must be a number >= 0")
  _int_at_least(m.dead_code_steps, "model.dead_code_steps", 0)
  if not isinstance(m.kmeans_init, bool):
    raise ConfigError(f"model.kmeans_init={m.kmeans_init!r}: must be True or False")
  if float(m.ema_decay) == 0:
    # Both overwrite codes; a parameter codebook may only change by the optimizer's updates.
    if m.dead_code_steps > 0:
      raise ConfigError(f"model.dead_code_steps={m.dead_code_steps} needs the EMA codebook: "
                        f"set model.ema_decay > 0 or model.dead_code_steps=0")
    if m.kmeans_init:
      raise ConfigError("model.kmeans_init=True needs the EMA codebook: set "
                        "model.ema_decay > 0 or model.kmeans_init=False")
  _validate_quantizer(m)


def _validate_quantizer(m):
  """The keys of model.quantizer and its options, and the combinations that do not apply."""
  for key, values in OPTIONS.items():
    value = m[key.split(".")[1]]
    if value not in values:
      raise ConfigError(f"{key}={value!r}: expected one of {values}")
  _int_at_least(m.codebook_dim, "model.codebook_dim", 0)
  _int_at_least(m.num_quantizers, "model.num_quantizers", 1)
  levels = m.fsq_levels
  if not isinstance(levels, (tuple, list)) or not levels:
    raise ConfigError(f"model.fsq_levels={levels!r}: expected a non-empty tuple of integers "
                      f">= 2, e.g. (8, 5, 5, 5)")
  for level in levels:
    _int_at_least(level, f"model.fsq_levels (entry {level!r})", 2)
  if fsq.codebook_size(levels) >= 2**31:
    raise ConfigError(f"model.fsq_levels={tuple(levels)}: prod = {fsq.codebook_size(levels)} "
                      f"codes do not fit an int32 index; use fewer or smaller levels")
  if m.quantizer == "fsq":
    # FSQ has a fixed grid and no codebook: nothing to normalize, restart or initialize, and
    # its lookup space is len(fsq_levels) (a projection from code_dim is added when needed).
    # model.ema_decay is not read (it has a default that every VQ config sets).
    if m.codebook_norm != "none":
      raise ConfigError(f"model.codebook_norm={m.codebook_norm!r} does not apply to "
                        f"model.quantizer='fsq' (its codes are a fixed grid): use 'none'")
    if m.codebook_dim:
      raise ConfigError(f"model.codebook_dim={m.codebook_dim} does not apply to "
                        f"model.quantizer='fsq': its dimension is len(model.fsq_levels) = "
                        f"{len(levels)} (projected from model.code_dim when they differ); "
                        f"use 0")
    if m.dead_code_steps > 0:
      raise ConfigError(f"model.dead_code_steps={m.dead_code_steps} needs a learned codebook; "
                        f"model.quantizer='fsq' has none: set model.dead_code_steps=0")
    if m.kmeans_init:
      raise ConfigError("model.kmeans_init=True needs a learned codebook; "
                        "model.quantizer='fsq' has none: set model.kmeans_init=False")
  if m.quantizer == "residual" and m.codebook_norm != "none":
    raise ConfigError(f"model.codebook_norm={m.codebook_norm!r} does not apply to "
                      f"model.quantizer='residual' (unit-norm codes cannot sum to the "
                      f"shrinking residuals): use 'none'")


FAMILY = Family(
    name="vqvae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    analyses=analyses,
    hparams=hparams,
    validate=validate,
    baselines=make_baselines(make_model, latent_shapes),
    features="quantize",
    encode=encode,
    decode=decode,
    mixed_precision=True,
    options=OPTIONS,
)
