"""The convolutional trunk of the VQ families (van den Oord et al. 2017): encoder and decoder.

Encoder: stride-2 4x4 convolutions (`model.conv_channels`, each followed by the
activation), a 3x3 convolution and `model.num_res_blocks` residual blocks (act, 3x3 conv
to `model.res_channels`, act, 1x1 conv back). The map is H / 2**len(conv_channels) on a
side (CIFAR-10 with the paper's two convolutions: 8x8). The decoder mirrors it with
pixel-shuffle upsampling (nets.Upsample) and emits logits. VQ-VAE uses one of each,
VQ-VAE-2 one more encoder and decoder for its top level (models/vqvae2.py).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from vaelab.models import nets


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


def dtype_of(config) -> str:
  """config.dtype; a prior rebuilds a frozen run from its config.json, which lacks the key
  if it was written before the key existed (its activations were float32)."""
  return config.get("dtype", "float32")


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
