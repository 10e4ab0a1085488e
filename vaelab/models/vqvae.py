"""VQ-VAE (van den Oord et al. 2017): conv encoder, vector quantizer, conv decoder.

The trunk is models/vq_trunk.py's: stride-2 convolutions and residual blocks to a latent
map H / 2**len(model.conv_channels) on a side, then a 1x1 convolution to `model.code_dim`.
Each latent vector is quantized by `model.quantizer` (models/quantizer_spec.py: vq, fsq,
residual, lfq, bsq or simvq, with their options). The decoder mirrors the encoder and emits
logits whose sigmoid is the image; `model.likelihood` is `sigmoid_sse` (squared error of that image,
the paper's Gaussian) or `bernoulli` (losses/reconstruction.py). The objective is
losses/vqvae.py's, with the commitment weight `loss.commitment` entering the step as an
array, and for lfq / bsq the entropy penalty (loss.entropy_weight, loss.entropy_temperature);
VQ-VAE-2 (models/vqvae2.py) shares it and everything below but the module.

Reported (models/vq_metrics.py): every step train/perplexity and train/codebook_usage of
the global batch; at the end eval/perplexity and eval/codebook_usage of the whole
evaluation set, eval/image_perplexity, eval/commitment, eval/recon_sse, and the PCA
baseline eval/pca_recon_sse with as many components as the model has latent values, one
code index per latent position (H'W'; eval/pca_components). lfq and bsq also log
train/entropy_per_sample and train/entropy_codebook (nats per latent position, global
batch; the codebook one is bsq's factorised bound).

The prior over codes (another module) trains on `encode_indices` of a frozen model and
decodes its samples with `decode_indices`; `vq_metrics.encode_source` extracts a whole
split. One index per latent position, in [0, quantizer_spec.prior_num_codes(config)). A
residual model has num_quantizers indices per position, which that prior does not model:
its encode_indices refuses (ConfigError), `code_maps` gives all of them.
There is no `sample` here: sampling needs that prior.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaelab import checks, spmd
from vaelab.errors import ConfigError
from vaelab.evaluate import pca
from vaelab.losses import reconstruction
from vaelab.losses import vqvae as vq_losses
from vaelab.models import fsq, nets, vq_metrics
from vaelab.models.base import Family, method
from vaelab.models.quantizer import COLLECTION
from vaelab.models.quantizer_spec import OPTIONS, QuantizerSpec, refuse_multiple_indices
from vaelab.models.quantizer_spec import validate as validate_quantizer, validate_entropy
from vaelab.models.vq_trunk import ConvSpec, Decoder, Encoder, dtype_of

# The decoder emits logits.
LIKELIHOODS = reconstruction.LOGIT_LIKELIHOODS


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
  c.model.quantizer = "vq"  # vq | fsq | residual | lfq | bsq | simvq (quantizer_spec.py)
  c.model.codebook_norm = "none"  # none | l2 (cosine lookup; vq only)
  c.model.codebook_dim = 0  # > 0: lookup in a learned projection to this dim (vq, residual)
  c.model.gradient = "straight_through"  # straight_through | rotation (the rotation trick)
  c.model.fsq_levels = (8, 5, 5, 5)  # fsq only: levels per channel, prod = 1000 codes
  c.model.num_quantizers = 4  # residual only: codebooks of num_codes each
  c.model.likelihood = "sigmoid_sse"  # sigmoid_sse | bernoulli (losses/reconstruction.py)
  c.loss.commitment = 0.25  # beta
  c.loss.entropy_weight = 0.1  # lfq, bsq: weight of the entropy penalty (MAGVIT-v2's)
  c.loss.entropy_temperature = 1.0  # lfq, bsq: tau of the soft assignment (models/lfq.py)
  for key in ("hidden", "dense", "latent_dim"):
    del c.model[key]


# Config variants (`configs/vqvae_mnist.py:quantizer=fsq`): each sets the quantizer and the
# companion keys it needs, from a config whose model.num_codes is K.
PRESETS = ("vq", "fsq", "residual", "cosine", "rotation", "lfq", "bsq", "simvq")


def apply_preset(c, preset: str) -> None:
  """vq: as configured; fsq: the recommended levels nearest K (fsq.levels_near), no
  restarts or k-means; residual: 2 codebooks of K; cosine: l2-normalized 4-d codes learned
  by the codebook loss (ViT-VQGAN), no restarts (they need the EMA); rotation: the rotation
  trick; lfq, bsq: d = log2(K) sign channels (K a power of 2) with their entropy penalty
  (weight 0.1, tau 1: models/lfq.py, models/bsq.py); simvq: a frozen random codebook of K
  codes through a learned linear map (models/simvq.py). The last three have no EMA, restarts
  or k-means."""
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
  elif preset in ("lfq", "bsq", "simvq"):
    m.quantizer, m.codebook_norm, m.codebook_dim = preset, "none", 0
    m.dead_code_steps, m.kmeans_init = 0, False
    if preset == "simvq":
      m.ema_decay = 0.0  # not read: the codebook is learned by the codebook loss
    else:
      c.loss.entropy_weight, c.loss.entropy_temperature = 0.1, 1.0


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


def make_model(config, info):
  return VQVAE(ConvSpec.from_config(config.model, dtype_of(config)),
               QuantizerSpec.from_config(config.model),
               tuple(info.image_shape))


def latent_shapes(model) -> list[tuple[int, int]]:
  """(H', W') of every level of a VQVAE."""
  h, w, _ = model.image_shape
  f = 2**len(model.spec.channels)
  return [(h // f, w // f)]


def entropy_of(config) -> vq_losses.Entropy | None:
  """The entropy penalty of the config's quantizer (lfq, bsq), None for the others. .get:
  a config.json written before the keys existed has none."""
  spec = QuantizerSpec.from_config(config.model)
  if not spec.entropy:
    return None
  return vq_losses.Entropy(float(config.loss.get("entropy_weight", 0.1)),
                           float(config.loss.get("entropy_temperature", 1.0)),
                           exact=spec.quantizer == "lfq")


def make_loss(config, info=None, axis_name: str | None = spmd.AXIS):
  """The objective of both VQ families (their modules return (logits, levels))."""
  likelihood = config.model.likelihood
  spec = QuantizerSpec.from_config(config.model)
  ema, residual = spec.ema, spec.quantizer == "residual"
  no_codebook_term, entropy = not spec.codebook_loss, entropy_of(config)

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
    recon, quant = vq_losses.objective(likelihood, logits, x, levels, hparams["commitment"],
                                       no_codebook_term, entropy)
    metrics = train_metrics(model, recon, jax.nn.sigmoid(logits), x, levels, residual,
                            entropy)
    return (recon + quant).mean(), (metrics, model_state)

  return loss


def train_metrics(model, recon, x_hat, x, levels, residual: bool, entropy) -> dict:
  """The VQ families' per-step metrics (VQ-VAE, VQ-VAE-2, VQGAN): the reconstruction terms
  and, per latent level, commitment, usage of the global batch (counts are psummed over
  devices inside the quantizer) and, for lfq / bsq, the two entropies."""
  metrics = {"recon": recon.mean(), "recon_sse": reconstruction.sse(x_hat, x).mean()}
  for level, q in zip(model.LEVELS, levels):
    metrics.update({k: v.mean()
                    for k, v in vq_metrics.commitment_metrics(q, level, residual).items()})
    metrics.update(vq_metrics.usage_metrics(q, level, residual))
    if entropy is not None:
      per_sample, codebook = vq_losses.level_entropies(q, entropy)
      metrics[vq_metrics.metric_name("entropy_per_sample", level)] = per_sample
      metrics[vq_metrics.metric_name("entropy_codebook", level)] = codebook
  return metrics


def make_eval_metrics(config):
  likelihood = config.model.likelihood
  spec = QuantizerSpec.from_config(config.model)
  residual, num_codes = spec.quantizer == "residual", spec.codebook_size
  # eval/loss leaves out lfq's and bsq's entropy penalty: it is a statistic of a batch,
  # where the evaluation averages per-example values over a split (padding included in
  # its last batch).
  no_codebook_term = not spec.codebook_loss

  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    logits, levels = model.apply(variables, x)
    recon, quant = vq_losses.objective(likelihood, logits, x, levels, hparams["commitment"],
                                       no_codebook_term)
    out = {"loss": recon + quant, "recon": recon,
           "recon_sse": reconstruction.sse(jax.nn.sigmoid(logits), batch.get("image_raw", x))}
    for level, q in zip(model.LEVELS, levels):
      out.update(vq_metrics.commitment_metrics(q, level, residual))
      # Residual: the mean over the codebooks of each one's per-image perplexity.
      out[vq_metrics.metric_name("image_perplexity", level)] = jnp.mean(jnp.stack(
          [vq_metrics.image_perplexity(i, num_codes)
           for i in vq_metrics.per_codebook(q["indices"], residual)]), 0)
    return out

  return eval_metrics


def make_final_baselines(make_model_fn, shapes_fn):
  """The family's `final_baselines`: PCA with as many components as the model has latent
  values (one code index per latent position, summed over levels), fitted on the training
  split; skipped when that is as many as the pixels."""

  def final_baselines(config, train_source, eval_source):
    k = sum(h * w for h, w in shapes_fn(make_model_fn(config, train_source.info)))
    if k >= int(np.prod(train_source.info.image_shape)):
      return {}
    return {"eval/pca_recon_sse": pca.pca_recon_sse(train_source, eval_source, k),
            "eval/pca_components": float(k)}

  return final_baselines


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
    checks.integer(c, f"model.conv_channels (entry {c!r})", 1)
  checks.integer(m.num_res_blocks, "model.num_res_blocks", 0)
  checks.integer(m.res_channels, "model.res_channels", 1)
  if m.activation not in nets.ACTIVATIONS:
    raise ConfigError(f"model.activation={m.activation!r}: expected one of "
                      f"{sorted(nets.ACTIVATIONS)}")
  reconstruction.validate(m.likelihood, LIKELIHOODS, m.name)
  if not 0 <= float(config.loss.commitment) < math.inf:
    raise ConfigError(f"loss.commitment={config.loss.commitment}: must be a number >= 0")
  validate_entropy(config.loss)
  validate_quantizer(m)


FAMILY = Family(
    name="vqvae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    final_analyses=vq_metrics.final_analyses,
    hparams=hparams,
    validate=validate,
    final_baselines=make_final_baselines(make_model, latent_shapes),
    features=method("quantize"),
    encode=encode,
    decode=decode,
    mixed_precision=True,
    options=OPTIONS,
)
