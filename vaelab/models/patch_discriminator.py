"""The patch discriminator of VQGAN (Esser et al. 2021), taming-transformers' NLayerDiscriminator.

A 4x4 convolution of stride 2 to `filters` channels, then `layers - 1` more of stride 2
doubling the width (capped at 8x), one of stride 1 at the next width, and a last 4x4
convolution of stride 1 to one logit per patch; every convolution pads by 1, and between
them LeakyReLU(0.2). With 3 layers and 64 filters a 256x256 image gives 30x30 logits, each
seeing a 70x70 patch (pix2pix's PatchGAN).

Normalisation. taming puts BatchNorm in train mode after every convolution but the first and
the last, so each call normalises by the statistics of the batch it is given (the real batch
and the reconstructed batch in separate calls). Here those statistics are the GLOBAL batch's
(`spmd.global_mean`, which reduces over the train step's devices and is the identity
elsewhere): per-device statistics would make the discriminator's output, and so the run,
depend on how the batch is split over devices. There are no running averages: the
discriminator is only used inside the train step, where taming uses batch statistics too.
Initialisation is taming's: convolution kernels N(0, 0.02), normalisation scales
N(1, 0.02), biases 0.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaelab import spmd

SLOPE = 0.2
EPSILON = 1e-5  # PyTorch BatchNorm2d's


def _scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class GlobalBatchNorm(nn.Module):
  """Batch normalisation by the mean and (biased) variance of every example and position of
  the global batch, per channel, with a learned scale and bias."""

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", _scale_init, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    axes = tuple(range(x.ndim - 1))
    mean = spmd.global_mean(jnp.mean(x, axes))
    # Two passes: E[x^2] - E[x]^2 loses the variance to cancellation where it is small
    # against the mean, and batched kernels' rounding then moves the output.
    var = spmd.global_mean(jnp.mean(jnp.square(x - mean), axes))
    return (x - mean) * jax.lax.rsqrt(var + EPSILON) * scale + bias


def _conv(features, strides, use_bias, name):
  return nn.Conv(features, (4, 4), strides=(strides, strides), padding=((1, 1), (1, 1)),
                 use_bias=use_bias, kernel_init=nn.initializers.normal(0.02), name=name)


class PatchDiscriminator(nn.Module):
  """Images (B, H, W, C) in [0, 1] -> logits (B, H', W', 1), one per patch."""
  filters: int = 64
  layers: int = 3

  @nn.compact
  def __call__(self, x):
    # taming's images are in [-1, 1].
    h = 2.0 * x.astype(jnp.float32) - 1.0
    h = nn.leaky_relu(_conv(self.filters, 2, True, "conv0")(h), SLOPE)
    for n in range(1, self.layers + 1):
      stride = 2 if n < self.layers else 1
      h = _conv(self.filters * min(2**n, 8), stride, False, f"conv{n}")(h)
      h = nn.leaky_relu(GlobalBatchNorm(name=f"norm{n}")(h), SLOPE)
    return _conv(1, 1, True, "logits")(h)


def output_side(side: int, layers: int) -> int:
  """The side of the logit map for an input `side` pixels wide (each stride-2 layer halves
  it, each stride-1 4x4 layer with padding 1 takes one off)."""
  for _ in range(layers):
    side = side // 2
  return side - 2
