"""PixelSNAIL-style autoregressive prior over discrete code maps (Chen et al. 2017).

Not a family (it defines no FAMILY): the VQ-VAE / VQ-VAE-2 prior configs build it over the
codes a frozen VQ model extracts. The model maps an integer code map (B, H, W) with values
in [0, K) to logits (B, H, W, K); the logits at position p (raster order, p = i*W + j)
depend only on the codes at positions q < p, so sum_p log softmax(logits)[p, code_p] is an
exact log-likelihood (losses/vq_prior.py) and a map is drawn one position at a time
(models/pixelsnail_sampler.py).

Causality. Convolutions are masked kernels (PixelCNN, van den Oord et al. 2016a): a k x k
kernel whose taps after the centre, in raster order, are zeroed. A conv whose taps all lie
at raster positions <= the output's keeps "features at q depend only on inputs < q", so
only the first layer needs the strict mask (type A, no centre tap); later layers use
type B. A single masked stack has a blind spot (stacked 3x3 taps never reach (i-1, j+2)
and the other positions above and to the right of a narrowing cone), so, as in Gated
PixelCNN (van den Oord et al. 2016b), a vertical stream that sees only rows strictly above
(its first layer has no own-row taps, later layers do, which cannot leak because every
feature in row i already depends on rows < i only) feeds the horizontal stream through
1x1 links at every layer. Masks cost wasted multiplies
over the shift-and-crop form of PixelCNN++ but make the receptive field explicit and
easy to test. The attention layers read the horizontal stream and a raster-shifted copy
of the input embedding (position q holds the code at q-1), both of which depend only on
positions < q, so a query at p may attend to keys at every q <= p: the mask is lower
triangular including the diagonal, and the first query always has one key (itself).

Conditioning (VQ-VAE-2's bottom prior given the top codes): each conditioning map
(B, Hc, Wc), at the same or a lower resolution, is embedded, resized to (H, W) by
nearest-neighbour, passed through a non-causal 3x3 convolution and added, projected, to
the gate pre-activations of every layer. It is fully known before sampling, so it may
be seen at every position.
"""
from __future__ import annotations

import functools
from typing import Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MASKS = ("above", "vertical", "A", "B")


def kernel_mask(kind: str, size: int) -> np.ndarray:
  """(size, size) 0/1 taps allowed by the mask `kind`, centre = the output position.

  above:    rows strictly above           (first layer of the vertical stream)
  vertical: rows above and the own row    (later vertical layers; inputs see rows < i)
  A:        rows above, own row left of centre   (first horizontal layer)
  B:        A plus the centre                     (later horizontal layers)
  """
  if kind not in MASKS:
    raise ValueError(f"mask {kind!r}: expected one of {MASKS}")
  if size < 1 or size % 2 == 0:
    raise ValueError(f"kernel size {size}: must be odd")
  c = size // 2
  m = np.zeros((size, size), np.float32)
  m[:c, :] = 1
  if kind == "vertical":
    m[c, :] = 1
  elif kind in ("A", "B"):
    m[c, :c] = 1
    m[c, c] = 1 if kind == "B" else 0
  return m


class MaskedConv(nn.Module):
  """'SAME' 2-D convolution whose kernel is multiplied by `kernel_mask(mask, kernel_size)`."""
  features: int
  mask: str
  kernel_size: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    # The full kernel is stored and multiplied by the mask on every call: a masked tap
    # contributes exactly zero whatever its stored value (weight decay, a restored
    # checkpoint), so the dependence on later positions is exactly nil, not just small.
    kernel = kernel * jnp.asarray(kernel_mask(self.mask, k))[:, :, None, None]
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


# gate, background, embed, as_tuple and condition_input are also the cached sampler's
# (pixelsnail_sampler.py), which evaluates this network from its parameters.


def gate(x):
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * nn.sigmoid(b)


def background(batch: int, h: int, w: int, dtype) -> jnp.ndarray:
  """Ones (so zero padding marks the border) and row/column coordinates in [-1, 1]."""
  rows = jnp.linspace(-1.0, 1.0, h) if h > 1 else jnp.zeros((1,))
  cols = jnp.linspace(-1.0, 1.0, w) if w > 1 else jnp.zeros((1,))
  rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
  bg = jnp.stack([jnp.ones((h, w)), rr, cc], axis=-1).astype(dtype)
  return jnp.broadcast_to(bg, (batch, h, w, 3))


def embed(table, codes, dtype):
  """Integer codes (...) -> table rows; float one-hots (..., K) -> one-hot @ table, so tests
  (and soft inputs) can differentiate with respect to the input."""
  if jnp.issubdtype(codes.dtype, jnp.integer):
    return jnp.take(table, codes, axis=0).astype(dtype)
  return jnp.einsum("...k,kc->...c", codes.astype(dtype), table.astype(dtype))


def as_tuple(x) -> tuple:
  if x is None:
    return ()
  if isinstance(x, (list, tuple)):
    return tuple(x)
  return (x,)


class GatedResidual(nn.Module):
  """One gated layer on both streams: x + 1x1(tanh(a) * sigmoid(b)), [a, b] = conv(x) + cond."""
  channels: int
  kernel_size: int = 3
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, v, h, cond, deterministic: bool):
    c2 = 2 * self.channels
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    pre_v = MaskedConv(c2, "vertical", self.kernel_size, self.dtype, name="conv_v")(nn.elu(v))
    # The link reads the vertical pre-activation: it depends on rows < i only, so the
    # horizontal stream may use it at the same position without a shift.
    pre_h = (MaskedConv(c2, "B", self.kernel_size, self.dtype, name="conv_h")(nn.elu(h))
             + dense(c2, name="link")(pre_v))
    if cond is not None:
      pre_v = pre_v + dense(c2, name="cond_v")(cond)
      pre_h = pre_h + dense(c2, name="cond_h")(cond)
    drop = nn.Dropout(self.dropout, deterministic=deterministic)
    v = v + dense(self.channels, name="out_v")(drop(gate(pre_v)))
    h = h + dense(self.channels, name="out_h")(drop(gate(pre_h)))
    return v, h


class CausalAttention(nn.Module):
  """Multi-head self-attention over the H*W raster positions, query p sees keys q <= p.

  Queries read the horizontal stream and the coordinates; keys and values also read the
  raster-shifted input embedding, so the attention can copy any earlier code directly.
  """
  channels: int
  num_heads: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h, shifted_embedding, bg, deterministic: bool):
    b, hh, ww, _ = h.shape
    q_in = jnp.concatenate([h, bg], -1).reshape(b, hh * ww, -1)
    kv_in = jnp.concatenate([h, shifted_embedding, bg], -1).reshape(b, hh * ww, -1)
    q_in = nn.LayerNorm(dtype=self.dtype, name="norm_q")(q_in)
    kv_in = nn.LayerNorm(dtype=self.dtype, name="norm_kv")(kv_in)
    mask = jnp.tril(jnp.ones((hh * ww, hh * ww), bool))[None, None]
    out = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.channels, out_features=self.channels,
        dropout_rate=self.dropout, dtype=self.dtype, name="attention")(
            q_in, kv_in, kv_in, mask=mask, deterministic=deterministic)
    out = out.reshape(b, hh, ww, self.channels)
    # Gated like the conv layers so the block starts close to the identity.
    pre = nn.Dense(2 * self.channels, dtype=self.dtype, name="proj")(
        jnp.concatenate([nn.elu(h), out], -1))
    return h + nn.Dense(self.channels, dtype=self.dtype, name="out")(gate(pre))


class PixelSNAIL(nn.Module):
  """Autoregressive prior p(codes) = prod_p p(code_p | codes_<p [, condition]).

  Fields:
    num_codes:       K, the number of values a code takes.
    channels:        width of both streams.
    num_blocks:      blocks of `res_per_block` gated layers, each followed by attention.
    res_per_block:   gated residual layers per block.
    num_heads:       attention heads (must divide `channels`).
    attention:       False drops the attention layers (a Gated PixelCNN).
    kernel_size:     odd size of the masked convolutions.
    condition_codes: K_c of the conditioning map, or a tuple for several maps; 0 or ()
                     for an unconditional prior.
    dropout:         rate inside gated layers and attention; active only when
                     `deterministic=False` (needs a "dropout" rng).
  """
  num_codes: int
  channels: int = 64
  num_blocks: int = 2
  res_per_block: int = 2
  num_heads: int = 4
  attention: bool = True
  kernel_size: int = 3
  condition_codes: Union[int, tuple[int, ...]] = 0
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def condition_sizes(self) -> tuple[int, ...]:
    """K_c of each conditioning map."""
    return tuple(k for k in as_tuple(self.condition_codes) if k)

  @nn.compact
  def __call__(self, codes, condition=None, *, deterministic: bool = True):
    """codes: int (B, H, W) in [0, K), or float one-hots (B, H, W, K).
    condition: int (B, Hc, Wc) (or one-hots (B, Hc, Wc, K_c)), or a sequence of them, one
    per entry of `condition_codes`; Hc, Wc may be below H, W (resized by nearest).
    Returns logits (B, H, W, K)."""
    if self.attention and self.channels % self.num_heads:
      raise ValueError(f"channels={self.channels} is not divisible by "
                       f"num_heads={self.num_heads}")
    c = self.channels
    table = self.param("embedding", nn.initializers.normal(1.0), (self.num_codes, c))
    x = embed(table, codes, self.dtype)
    b, hh, ww, _ = x.shape
    bg = background(b, hh, ww, self.dtype)
    cond = self._condition(condition, (b, hh, ww))

    x_bg = jnp.concatenate([x, bg], -1)
    v = MaskedConv(c, "above", self.kernel_size, self.dtype, name="in_v")(x_bg)
    h = (MaskedConv(c, "A", self.kernel_size, self.dtype, name="in_h")(x_bg)
         + nn.Dense(c, dtype=self.dtype, name="in_link")(v))
    if self.attention:
      flat = x.reshape(b, hh * ww, c)
      shifted = jnp.pad(flat, ((0, 0), (1, 0), (0, 0)))[:, :-1].reshape(b, hh, ww, c)

    for i in range(self.num_blocks):
      for r in range(self.res_per_block):
        v, h = GatedResidual(c, self.kernel_size, self.dropout, self.dtype,
                             name=f"block_{i}_res_{r}")(v, h, cond, deterministic)
      if self.attention:
        h = CausalAttention(c, self.num_heads, self.dropout, self.dtype,
                            name=f"block_{i}_attn")(h, shifted, bg, deterministic)
    return nn.Dense(self.num_codes, dtype=self.dtype, name="logits")(nn.elu(h))

  def _condition(self, condition, out_shape):
    sizes = self.condition_sizes()
    maps = as_tuple(condition)
    if len(maps) != len(sizes):
      raise ValueError(f"got {len(maps)} conditioning map(s) but condition_codes="
                       f"{self.condition_codes!r} declares {len(sizes)}")
    if not sizes:
      return None
    tables = [self.param(f"cond_embedding_{n}", nn.initializers.normal(1.0), (k, self.channels))
              for n, k in enumerate(sizes)]
    # Non-causal: the condition is known at every position before sampling starts.
    y = nn.Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype, name="cond_conv")(
        condition_input(tables, maps, out_shape, self.dtype))
    return nn.elu(y)


def condition_input(tables, maps, out_shape, dtype):
  """The conditioning maps' embeddings, resized to (H, W) and summed, with the background:
  the input of `cond_conv` (shared by the module and the cached sampler)."""
  b, hh, ww = out_shape
  total = 0.0
  for table, m in zip(tables, maps):
    e = embed(table, m, dtype)
    if e.shape[1:3] != (hh, ww):
      e = jax.image.resize(e, (b, hh, ww, table.shape[-1]), method="nearest")
    total = total + e
  return jnp.concatenate([total, background(b, hh, ww, dtype)], -1)
