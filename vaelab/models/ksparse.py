"""k-sparse autoencoder (Makhzani & Frey 2013).

A linear code layer of `model.latent_dim` units keeps only its k largest values per example
and zeroes the rest; k starts at `model.k_start` and falls linearly to `model.k` over the
first half of training. The top-k mask, the k schedule and the loss are the objective's
(vaelab/losses/ksparse.py). For downstream use (`features`) the code keeps alpha*k units, as
the paper's classification experiments do. The decoder is tied (W^T plus its own bias,
`model.tied`) or a free Dense. The paper's model has no layer below the code
(`model.hidden=()`); a trunk is allowed, and a tied decoder then ties only the code layer.
"""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaelab import checks
from vaelab.errors import ConfigError
from vaelab.evaluate import latent_pictures
from vaelab.evaluate import pictures as pictures_lib
from vaelab.losses import ksparse as ksparse_losses
from vaelab.losses import reconstruction
from vaelab.models import ae, nets
from vaelab.models.base import Family, method


def config_keys(c) -> None:
  """The keys of the k-sparse autoencoder: the autoencoder's, k, its schedule's start, the
  features' alpha (k and alpha: the paper's MNIST settings) and the tied decoder."""
  ae.config_keys(c)
  c.model.name = "ksparse"
  c.model.k = 25  # units kept per example at the end of the schedule
  c.model.k_start = 100  # units kept at step 0, falling linearly to k by half of training
  c.model.alpha = 3.0  # the features keep alpha * k units
  c.model.tied = True  # decoder = encoder kernel transposed (+ its own bias)


class KSparseAE(nn.Module):
  spec: nets.NetSpec
  latent_dim: int
  image_shape: tuple[int, int, int]
  k: int
  alpha: float = 3.0
  tied: bool = False
  code_activation: str = "linear"

  def setup(self):
    pixels = int(np.prod(self.image_shape))
    hidden = tuple(self.spec.hidden)
    dtype = nets.compute_dtype(self.spec.dtype)
    # An optional trunk below the code layer; the paper's model has none (hidden = ()).
    self.trunk = nets.MLP(hidden, self.spec.activation, dtype) if hidden else None
    fan_in = hidden[-1] if hidden else pixels
    self.code_kernel = self.param("code_kernel", nn.initializers.lecun_normal(),
                                  (fan_in, self.latent_dim))
    self.code_bias = self.param("code_bias", nn.initializers.zeros, (self.latent_dim,))
    if self.tied:
      # Only the code layer is tied; a trunk below it is mirrored by free layers.
      self.out_bias = self.param("out_bias", nn.initializers.zeros, (fan_in,))
      if hidden:
        self.decoder = nets.MLPDecoder(tuple(reversed(hidden[:-1])), tuple(self.image_shape),
                                       self.spec.activation, dtype)
    else:
      self.decoder = nets.MLPDecoder(tuple(reversed(hidden)), tuple(self.image_shape),
                                     self.spec.activation, dtype)

  def _linear(self, h, kernel, bias):
    """h @ kernel + bias with activations in the spec's dtype (parameters stay float32)."""
    dtype = nets.compute_dtype(self.spec.dtype)
    return h.astype(dtype) @ kernel.astype(dtype) + bias.astype(dtype)

  def dense_code(self, x):
    """The code before the top-k selection."""
    h = x.reshape(x.shape[0], -1)
    if self.trunk is not None:
      h = nets.activation(self.spec.activation)(self.trunk(h))
    code = self._linear(h, self.code_kernel, self.code_bias)
    if self.code_activation != "linear":
      code = nets.activation(self.code_activation)(code)
    return code.astype(jnp.float32)  # the top-k selection and the objective in float32

  def sparse_code(self, x, k, k_max: int):
    return ksparse_losses.sparse_code(self.dense_code(x), k, k_max)

  def encode(self, x):
    """The code at the final k (evaluation, reconstructions)."""
    return self.sparse_code(x, self.k, self.k)

  def features(self, x):
    """The code with alpha*k units kept, for downstream classifiers (paper, section 3.3)."""
    n = int(round(self.alpha * self.k))
    return self.sparse_code(x, n, n)

  def decode(self, code):
    if not self.tied:
      return self.decoder(code)
    out = self._linear(code, self.code_kernel.T, self.out_bias)
    if self.spec.hidden:
      return self.decoder(nets.activation(self.spec.activation)(out))
    return out.astype(jnp.float32).reshape(code.shape[0], *self.image_shape)

  def __call__(self, x, keys=None):
    return self.decode(self.encode(x))

  def reconstruct(self, x):
    return jax.nn.sigmoid(self(x))

  def generate(self, code):
    """Images in [0, 1] of codes (the decoder emits logits)."""
    return jax.nn.sigmoid(self.decode(code))

  def filters(self):
    """(latent_dim, H, W, C): each code unit's weights to the image (decoder columns)."""
    if self.tied and not self.spec.hidden:
      w = self.code_kernel.T
    else:
      # Each unit alone minus the empty code: the column itself for a one-layer decoder, the
      # unit's (nonlinear) effect through a deeper one.
      w = self.decode(jnp.eye(self.latent_dim)) - self.decode(jnp.zeros((1, self.latent_dim)))
    return w.reshape(self.latent_dim, *self.image_shape)


def make_model(config, info):
  m = config.model
  return KSparseAE(nets.NetSpec.from_config(m, config.dtype), int(m.latent_dim), info.image_shape,
                   int(m.k), float(m.alpha), bool(m.tied), m.code_activation)


def make_loss(config, info=None):
  m = config.model
  likelihood, k, k_start = m.likelihood, int(m.k), int(m.k_start)
  num_steps = int(config.num_train_steps)

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    k_now = ksparse_losses.k_at_step(hparams.get("step", num_steps), k, k_start, num_steps)
    variables = {"params": params, **model_state}
    code = model.apply(variables, x, method="dense_code")
    decode = lambda c: model.apply(variables, c, method="decode")
    value, logits = ksparse_losses.ksparse_loss(likelihood, decode, code, x, k_now, k_start)
    sse = reconstruction.sse(jax.nn.sigmoid(logits), x).mean()
    return value, ({"recon_sse": sse, "k": k_now.astype(jnp.float32)}, model_state)

  return loss


def validate(config):
  ae.validate(config)
  m = config.model
  latent, alpha = int(m.latent_dim), float(m.alpha)
  if m.encoder != "mlp":
    raise ConfigError(f"model.encoder={m.encoder!r}: the k-sparse autoencoder is 'mlp' only")
  k = checks.integer(m.k, "model.k", 1, latent, f"[1, model.latent_dim={latent}]")
  checks.integer(m.k_start, "model.k_start", k, latent,
                 f"[model.k={k}, model.latent_dim={latent}]")
  if not alpha >= 1 or round(alpha * k) > latent:
    raise ConfigError(f"model.alpha={alpha}: must be >= 1 with alpha*k = {alpha * k:g} <= "
                      f"model.latent_dim={latent}")


def save_filters(config, model, variables, workdir, source=None, num: int = 100):
  """filters.png: the first `num` units' decoder columns, each scaled to [0, 1] (paper Fig. 5)."""
  w = np.asarray(model.apply(variables, method="filters"))[:num]
  flat = w.reshape(len(w), -1)
  lo, hi = flat.min(1), flat.max(1)
  w = (w - lo[:, None, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None, None]
  return [pictures_lib.save_grid(w, os.path.join(workdir, "filters.png"), ncols=10)]


def pictures(config, model, variables, workdir, source=None, latent_labels=None):
  """The filters, and the code's traversals and interpolations like every autoencoder's."""
  return save_filters(config, model, variables, workdir, source) + \
      latent_pictures.save_code_pictures(config, model, variables, workdir, source,
                                         latent_labels)


FAMILY = Family(
    name="ksparse",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=ae.make_eval_metrics,
    make_final_eval_metrics=ae.make_final_eval_metrics,
    validate=validate,
    final_baselines=ae.final_baselines,
    features=method("features"),
    # Codes and decoder agree on the final k: decode(encode(x)) is the reconstruction. The
    # alpha*k code (`features`) is the probes' representation, not the decoder's input.
    encode=method("encode"),
    decode=ae.FAMILY.decode,
    pictures=pictures,
    mixed_precision=True,
)
