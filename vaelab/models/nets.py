"""Encoder and decoder networks shared by every family.

Families pick a trunk by `model.encoder` (`mlp` | `conv` | `dlib_conv`); the decoder mirrors
it. `conv` is vaelab's: 4x4 stride-2 convolutions and a decoder of 3x3 convolutions with
pixel shuffles (as expressive as 4x4 stride-2 transposed convolutions). `dlib_conv` is
disentanglement_lib's conv_encoder / deconv_decoder (methods/shared/architectures.py)
exactly: the encoder's last two convolutions are 2x2, and the decoder's layers are 4x4
stride-2 transposed convolutions with their own kernels (`DlibDeconv` computes each by
phases).
Outputs are unconstrained (logits or means): the objective decides what they mean.

Mixed precision (`config.dtype`): a trunk computes its activations in its `dtype`
(bfloat16 or float16 halve activation memory and run on the matrix units of TPUs and
GPUs) while its parameters stay float32 (Flax's `param_dtype`), so the optimizer updates
them at full precision. Every trunk returns float32: the objectives (log-likelihoods,
KL terms, the quantizer's distances) are computed in float32 whatever the dtype.
"""
from __future__ import annotations

import dataclasses

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaelab import checks
from vaelab.errors import ConfigError

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "leaky_relu": nn.leaky_relu,
}


def activation(name: str) -> Callable:
  return ACTIVATIONS[name]


# `config.dtype`: the dtype of activations; parameters are float32 in every case.
DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(name: str) -> jnp.dtype:
  return jnp.dtype(name)


class MLP(nn.Module):
  """Dense layers with an activation between them and none after the last."""
  features: Sequence[int]
  act: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for i, f in enumerate(self.features):
      x = nn.Dense(f, dtype=self.dtype, name=f"dense_{i}")(x)
      if i < len(self.features) - 1:
        x = activation(self.act)(x)
    return x.astype(jnp.float32)


class MLPDecoder(nn.Module):
  """Dense trunk whose last layer is reshaped to the image shape."""
  hidden: Sequence[int]
  image_shape: tuple[int, int, int]
  act: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    out = MLP((*self.hidden, int(np.prod(self.image_shape))), self.act, self.dtype)(z)
    return out.reshape(z.shape[0], *self.image_shape)


class ConvEncoder(nn.Module):
  """Stride-2 convolutions (4x4 unless `kernels` says otherwise), then a dense layer
  (Higgins et al. 2017 shape for 64x64)."""
  channels: Sequence[int]
  dense: int
  out_features: int
  act: str = "relu"
  dtype: jnp.dtype = jnp.float32
  kernels: Sequence[int] = ()  # per layer; () is 4 for every layer

  @nn.compact
  def __call__(self, x):
    act = activation(self.act)
    kernels = tuple(self.kernels) or (4,) * len(self.channels)
    for i, (c, k) in enumerate(zip(self.channels, kernels)):
      x = act(nn.Conv(c, (k, k), strides=(2, 2), padding="SAME", dtype=self.dtype,
                      name=f"conv_{i}")(x))
    x = x.reshape(x.shape[0], -1)
    if self.dense:
      x = act(nn.Dense(self.dense, dtype=self.dtype, name="dense")(x))
    return nn.Dense(self.out_features, dtype=self.dtype, name="out")(x).astype(jnp.float32)


def depth_to_space(x, features: int):
  """(B, H, W, 4F) -> (B, 2H, 2W, F): the four channel groups become the 2x2 output phases."""
  b, h, w, _ = x.shape
  x = x.reshape(b, h, w, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, features)


class Upsample(nn.Module):
  """x2 upsampling as a 3x3 convolution to 4 phases and a pixel shuffle (Shi et al. 2016).

  Every output phase of a stride-2 4x4 transposed convolution reads a 2x2 input
  neighbourhood, which the 3x3 window contains, so this layer can represent it exactly; it
  also skips the zero-dilated input XLA's ConvTranspose multiplies through, which made the
  decoder about twice as slow on CPU.
  """
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(4 * self.features, (3, 3), padding="SAME", dtype=self.dtype, name="conv")(x)
    return depth_to_space(y, self.features)


class ConvDecoder(nn.Module):
  """Mirror of ConvEncoder: a dense layer to a small map, then x2 upsampling layers
  (`deconv`: disentanglement_lib's 4x4 stride-2 transposed convolutions, DeconvDecoder)."""
  channels: Sequence[int]  # encoder order; reversed here
  dense: int
  image_shape: tuple[int, int, int]
  act: str = "relu"
  dtype: jnp.dtype = jnp.float32
  deconv: bool = False

  @nn.compact
  def __call__(self, z):
    act = activation(self.act)
    h, w, c_out = self.image_shape
    n = len(self.channels)
    if h % (2**n) or w % (2**n):
      raise ValueError(f"image size {h}x{w} is not divisible by 2**{n} (model.conv_channels)")
    bh, bw = h // 2**n, w // 2**n
    chans = list(reversed(self.channels))
    x = z
    if self.dense:
      x = act(nn.Dense(self.dense, dtype=self.dtype, name="dense")(x))
    x = act(nn.Dense(bh * bw * chans[0], dtype=self.dtype, name="to_map")(x))
    x = x.reshape(z.shape[0], bh, bw, chans[0])
    for i, c in enumerate(chans[1:] + [c_out]):
      x = (DlibDeconv(c, self.dtype, name=f"deconv_{i}") if self.deconv else
           Upsample(c, self.dtype, name=f"up_{i}"))(x)
      if i < n - 1:
        x = act(x)
    return x.astype(jnp.float32)


# Which tap of a 4-tap transposed-convolution kernel each output phase (0: even, 1: odd
# rows or columns) reads at input offsets -1, 0, +1: y[2m] = K[0] u[m-1] + K[2] u[m],
# y[2m+1] = K[1] u[m] + K[3] u[m+1] (flax's / lax's "SAME" conv_transpose, stride 2).
_PHASE_TAPS = ((0, 2, None), (None, 1, 3))


def _phase_kernel(kernel):
  """(4, 4, in, out) transposed-convolution kernel -> the (3, 3, in, 4 out) kernel of the
  same map as a 3x3 convolution to the four output phases (`depth_to_space`'s order)."""
  c_in, c_out = kernel.shape[2], kernel.shape[3]
  zero = jnp.zeros((c_in, c_out), kernel.dtype)
  rows = []
  for i in range(3):
    cols = []
    for j in range(3):
      phases = [zero if _PHASE_TAPS[a][i] is None or _PHASE_TAPS[b][j] is None
                else kernel[_PHASE_TAPS[a][i], _PHASE_TAPS[b][j]]
                for a in range(2) for b in range(2)]
      cols.append(jnp.concatenate(phases, axis=-1))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows)


class DlibDeconv(nn.Module):
  """A 4x4 stride-2 "SAME" transposed convolution (TF's conv2d_transpose, flax's
  ConvTranspose) with its own (4, 4, in, out) kernel and bias, computed as a 3x3
  convolution to the four output phases and a pixel shuffle: the same map (equal to
  rounding), without the zero-dilated input XLA's ConvTranspose multiplies through."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    w = _phase_kernel(kernel).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return depth_to_space(y, self.features) + bias.astype(self.dtype)


def dlib_kernels(num_layers: int) -> tuple[int, ...]:
  """disentanglement_lib's conv_encoder kernels: 4x4, the last two 2x2 (4, 4, 2, 2)."""
  return tuple(2 if i >= num_layers - 2 else 4 for i in range(num_layers))


class DeconvDecoder(ConvDecoder):
  """disentanglement_lib's deconv_decoder: dense layers to a small map, then 4x4 stride-2
  transposed convolutions (for 64x64 and the default widths: dense 256, dense 1024 as a
  4x4x64 map, transposed convolutions to 64, 32, 32 and the image's channels)."""
  deconv: bool = True


@dataclasses.dataclass(frozen=True)
class NetSpec:
  """The hashable subset of `config.model` that shapes the trunks (Flax fields must be hashable)."""
  encoder: str = "mlp"
  hidden: tuple[int, ...] = (512, 512)
  conv_channels: tuple[int, ...] = (32, 32, 64, 64)
  dense: int = 256
  activation: str = "relu"
  dtype: str = "float32"  # of the activations (config.dtype)

  @classmethod
  def from_config(cls, model_cfg, dtype: str = "float32") -> "NetSpec":
    return cls(encoder=model_cfg.encoder, hidden=tuple(model_cfg.hidden),
               conv_channels=tuple(model_cfg.conv_channels), dense=int(model_cfg.dense),
               activation=model_cfg.activation, dtype=dtype)


def make_encoder(spec: NetSpec, out_features: int, dtype=None) -> nn.Module:
  """The encoder trunk selected by `model.encoder`, ending in `out_features` linear units;
  activations in `dtype` (default: the spec's), output float32."""
  dtype = compute_dtype(spec.dtype if dtype is None else dtype)
  if spec.encoder == "mlp":
    return MLP((*spec.hidden, out_features), spec.activation, dtype)
  kernels = dlib_kernels(len(spec.conv_channels)) if spec.encoder == "dlib_conv" else ()
  return ConvEncoder(spec.conv_channels, spec.dense, out_features, spec.activation, dtype,
                     kernels)


def make_decoder(spec: NetSpec, image_shape, dtype=None) -> nn.Module:
  dtype = compute_dtype(spec.dtype if dtype is None else dtype)
  if spec.encoder == "mlp":
    return MLPDecoder(tuple(reversed(spec.hidden)), tuple(image_shape), spec.activation, dtype)
  if spec.encoder == "dlib_conv":
    return DeconvDecoder(spec.conv_channels, spec.dense, tuple(image_shape), spec.activation,
                         dtype)
  return ConvDecoder(spec.conv_channels, spec.dense, tuple(image_shape), spec.activation, dtype)


ENCODERS = ("mlp", "conv", "dlib_conv")


def validate(model_cfg) -> None:
  """Checks the trunk keys of `config.model`; raises ConfigError naming the key."""
  if model_cfg.encoder not in ENCODERS:
    raise ConfigError(f"model.encoder={model_cfg.encoder!r}: expected one of {ENCODERS}")
  if model_cfg.activation not in ACTIVATIONS:
    raise ConfigError(f"model.activation={model_cfg.activation!r}: expected one of "
                      f"{sorted(ACTIVATIONS)}")
  checks.integer(model_cfg.latent_dim, "model.latent_dim", 1)
  for key in ("hidden", "conv_channels"):
    widths = tuple(model_cfg[key])
    if not all(checks.is_integer(w) and w >= 1 for w in widths):
      raise ConfigError(f"model.{key}={widths}: every width must be an integer >= 1")
  checks.integer(model_cfg.dense, "model.dense", 0)
