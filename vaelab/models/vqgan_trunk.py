"""MaskGIT's VQGAN encoder and decoder (Chang et al. 2022), the `maskgit` trunk of models/vqgan.py.

Encoder: a 3x3 convolution to `filters`, then per level of `channel_multipliers`
`num_res_blocks` residual blocks at filters * multiplier channels, with a 2x2 average pool
between levels (MaskGIT's default downsampling), `num_res_blocks` more at the bottom, then
GroupNorm, swish and a 1x1 convolution to the code dimension. The map is
H / 2**(len(channel_multipliers) - 1) on a side: 16x16 for 256x256 images with five levels.

Decoder, mirrored: a 3x3 convolution to the widest level, its residual blocks, then per level
from the deepest `num_res_blocks` residual blocks and, between levels, x2 nearest-neighbour
upsampling and a 3x3 convolution; it ends in GroupNorm and swish (`Decoder`), and the last
3x3 convolution to the image's channels is a separate module (`head`), because VQGAN's
adaptive weight differentiates the losses with respect to that layer's kernel alone.

A residual block is x + conv3x3(swish(GN(conv3x3(swish(GN(x)))))), the shortcut a 1x1
convolution where the width changes. GroupNorm normalises each example on its own, so the
trunk computes the same thing however the batch is split over devices.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp

GROUPS = 32  # MaskGIT's GroupNorm groups (fewer in narrower layers)


@dataclasses.dataclass(frozen=True)
class MaskGITSpec:
  """The hashable trunk keys of `config.model`."""
  filters: int = 128
  channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2

  @classmethod
  def from_config(cls, m) -> "MaskGITSpec":
    return cls(int(m.filters), tuple(int(v) for v in m.channel_multipliers),
               int(m.num_res_blocks))

  @property
  def downsampling(self) -> int:
    return 2**(len(self.channel_multipliers) - 1)


def _norm(x):
  # At least 4 channels a group: a group of one channel would cancel the bias of the
  # convolution before it exactly, leaving that bias a gradient of rounding noise.
  return nn.GroupNorm(num_groups=math.gcd(GROUPS, max(1, x.shape[-1] // 4)), epsilon=1e-6)(x)


def _conv(features, size, use_bias=True):
  return nn.Conv(features, (size, size), padding="SAME", use_bias=use_bias)


class ResBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    h = _conv(self.features, 3, False)(nn.swish(_norm(x)))
    h = _conv(self.features, 3, False)(nn.swish(_norm(h)))
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, False)(x)
    return x + h


class Encoder(nn.Module):
  spec: MaskGITSpec
  code_dim: int

  @nn.compact
  def __call__(self, x):
    s = self.spec
    h = _conv(s.filters, 3, False)(x)
    for i, mult in enumerate(s.channel_multipliers):
      for _ in range(s.num_res_blocks):
        h = ResBlock(s.filters * mult)(h)
      if i < len(s.channel_multipliers) - 1:
        h = nn.avg_pool(h, (2, 2), (2, 2))
    for _ in range(s.num_res_blocks):
      h = ResBlock(h.shape[-1])(h)
    return _conv(self.code_dim, 1)(nn.swish(_norm(h))).astype(jnp.float32)


class Decoder(nn.Module):
  """Codes (B, H', W', D) -> the features the head reads (B, H, W, filters)."""
  spec: MaskGITSpec

  @nn.compact
  def __call__(self, z):
    s = self.spec
    h = _conv(s.filters * s.channel_multipliers[-1], 3)(z)
    for _ in range(s.num_res_blocks):
      h = ResBlock(h.shape[-1])(h)
    for i in reversed(range(len(s.channel_multipliers))):
      for _ in range(s.num_res_blocks):
        h = ResBlock(s.filters * s.channel_multipliers[i])(h)
      if i > 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest neighbour
        h = _conv(h.shape[-1], 3)(h)
    return nn.swish(_norm(h))


def head(out_channels: int, name: str = "head") -> nn.Module:
  """The decoder's last layer: a 3x3 convolution of the features to the image's logits."""
  return nn.Conv(out_channels, (3, 3), padding="SAME", name=name)
