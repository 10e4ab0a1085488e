"""PixelSNAIL-style autoregressive prior over discrete code maps (Chen et al. 2017).

Not a family (it defines no FAMILY): the VQ-VAE / VQ-VAE-2 prior configs build it over the
codes a frozen VQ model extracts. The model maps an integer code map (B, H, W) with values
in [0, K) to logits (B, H, W, K); the logits at position p (raster order, p = i*W + j)
depend only on the codes at positions q < p, so sum_p log softmax(logits)[p, code_p] is an
exact log-likelihood and `sample` draws the map one position at a time: `sample_full` with
a full network pass per position (the reference), `sample_cached` with only what each new
position's logits need, from cached activations (the same codes from the same key).

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
import math
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def _gate(x):
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * nn.sigmoid(b)


def _background(batch: int, h: int, w: int, dtype) -> jnp.ndarray:
  """Ones (so zero padding marks the border) and row/column coordinates in [-1, 1]."""
  rows = jnp.linspace(-1.0, 1.0, h) if h > 1 else jnp.zeros((1,))
  cols = jnp.linspace(-1.0, 1.0, w) if w > 1 else jnp.zeros((1,))
  rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
  bg = jnp.stack([jnp.ones((h, w)), rr, cc], axis=-1).astype(dtype)
  return jnp.broadcast_to(bg, (batch, h, w, 3))


def _embed(table, codes, dtype):
  """Integer codes (...) -> table rows; float one-hots (..., K) -> one-hot @ table, so tests
  (and soft inputs) can differentiate with respect to the input."""
  if jnp.issubdtype(codes.dtype, jnp.integer):
    return jnp.take(table, codes, axis=0).astype(dtype)
  return jnp.einsum("...k,kc->...c", codes.astype(dtype), table.astype(dtype))


def _as_tuple(x) -> tuple:
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
    v = v + dense(self.channels, name="out_v")(drop(_gate(pre_v)))
    h = h + dense(self.channels, name="out_h")(drop(_gate(pre_h)))
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
  def __call__(self, h, shifted_embedding, background, deterministic: bool):
    b, hh, ww, _ = h.shape
    q_in = jnp.concatenate([h, background], -1).reshape(b, hh * ww, -1)
    kv_in = jnp.concatenate([h, shifted_embedding, background], -1).reshape(b, hh * ww, -1)
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
    return h + nn.Dense(self.channels, dtype=self.dtype, name="out")(_gate(pre))


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

  def _condition_sizes(self) -> tuple[int, ...]:
    return tuple(k for k in _as_tuple(self.condition_codes) if k)

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
    x = _embed(table, codes, self.dtype)
    b, hh, ww, _ = x.shape
    bg = _background(b, hh, ww, self.dtype)
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
    sizes = self._condition_sizes()
    maps = _as_tuple(condition)
    if len(maps) != len(sizes):
      raise ValueError(f"got {len(maps)} conditioning map(s) but condition_codes="
                       f"{self.condition_codes!r} declares {len(sizes)}")
    if not sizes:
      return None
    tables = [self.param(f"cond_embedding_{n}", nn.initializers.normal(1.0), (k, self.channels))
              for n, k in enumerate(sizes)]
    # Non-causal: the condition is known at every position before sampling starts.
    y = nn.Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype, name="cond_conv")(
        _condition_input(tables, maps, out_shape, self.dtype))
    return nn.elu(y)


def _condition_input(tables, maps, out_shape, dtype):
  """The conditioning maps' embeddings, resized to (H, W) and summed, with the background:
  the input of `cond_conv` (shared by the module and the cached sampler)."""
  b, hh, ww = out_shape
  total = 0.0
  for table, m in zip(tables, maps):
    e = _embed(table, m, dtype)
    if e.shape[1:3] != (hh, ww):
      e = jax.image.resize(e, (b, hh, ww, table.shape[-1]), method="nearest")
    total = total + e
  return jnp.concatenate([total, _background(b, hh, ww, dtype)], -1)


def nll_per_example(logits, codes):
  """Cross-entropy of the codes under the logits, summed over positions: (B,) nats."""
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), codes.astype(jnp.int32))
  return ce.reshape(ce.shape[0], -1).sum(-1)


def nats_per_code(logits, codes):
  """(B,) mean nats per code; compare with the uniform log K."""
  return nll_per_example(logits, codes) / math.prod(codes.shape[1:])


def bits_per_code(logits, codes):
  """(B,) nats / (H * W * ln 2)."""
  return nats_per_code(logits, codes) / math.log(2)


# --- Sampling ---------------------------------------------------------------------------
#
# Both samplers draw position p from jax.random.categorical(fold_in(key, p), logits_p / T)
# (the argmax at T = 0), so from the same key they give the same codes whenever their
# logits agree, which they do up to float rounding: `full` runs the module itself once per
# position (the reference), `cached` computes only what position p's logits need.

SAMPLERS = ("cached", "full")


def sample(model: PixelSNAIL, variables, key, shape: Sequence[int],
           condition=None, temperature=1.0, sampler: str = "cached"):
  """Ancestral sample of `shape` = (B, H, W) code maps: int32 in [0, K).

  `sampler`: "cached" (`sample_cached`) or "full" (`sample_full`); both give the same maps
  from the same key. `temperature` divides the logits (may be a traced array); 0 takes the
  argmax. `condition` as in `PixelSNAIL.__call__`. Compiled once per (model, shape,
  sampler); callable inside an outer `jax.jit` too.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"sampler {sampler!r}: expected one of {SAMPLERS}")
  fn = sample_cached if sampler == "cached" else sample_full
  return fn(model, variables, key, shape, condition, temperature)


def sample_full(model: PixelSNAIL, variables, key, shape: Sequence[int],
                condition=None, temperature=1.0):
  """The reference sampler: one full network pass per position inside a `lax.fori_loop`.

  H*W passes of the whole map, so (H*W)^2 convolution work and H*W attention matrices of
  (H*W)^2 entries: fine for 7x7 maps, slow for VQ-VAE-2's 14x14 bottom prior. Position p
  is drawn from the logits at p given the map so far; later positions are still zeros,
  which causality makes irrelevant.
  """
  return _sample_full(model, variables, key, tuple(int(s) for s in shape), condition,
                      temperature)


def _draw(key, p, logits, temperature):
  logits = logits.astype(jnp.float32)
  drawn = jax.random.categorical(jax.random.fold_in(key, p),
                                 logits / jnp.maximum(temperature, 1e-6))
  return jnp.where(temperature > 0, drawn, jnp.argmax(logits, -1)).astype(jnp.int32)


def _gumbel_draw(noise, logits, temperature):
  """`_draw` with its Gumbel noise given: jax.random.categorical(k, l) is
  argmax(jax.random.gumbel(k, l.shape) + l), so drawing all positions' noise at once before
  the loop (one vectorised generator call) gives the same codes."""
  logits = logits.astype(jnp.float32)
  drawn = jnp.argmax(noise + logits / jnp.maximum(temperature, 1e-6), -1)
  return jnp.where(temperature > 0, drawn, jnp.argmax(logits, -1)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "shape"))
def _sample_full(model, variables, key, shape, condition, temperature):
  b, hh, ww = shape
  n = hh * ww
  temperature = jnp.asarray(temperature, jnp.float32)

  def body(p, codes):
    logits = model.apply(variables, codes.reshape(b, hh, ww), condition)
    logits = jax.lax.dynamic_index_in_dim(logits.reshape(b, n, -1), p, axis=1, keepdims=False)
    return codes.at[:, p].set(_draw(key, p, logits, temperature))

  codes = jax.lax.fori_loop(0, n, body, jnp.zeros((b, n), jnp.int32))
  return codes.reshape(b, hh, ww)


def sample_cached(model: PixelSNAIL, variables, key, shape: Sequence[int],
                  condition=None, temperature=1.0):
  """Ancestral sampling that computes, for each new position, only what its logits need.

  The same network as `PixelSNAIL.__call__`, evaluated incrementally from its parameters
  (the two must change together; tests/test_pixelsnail.py holds them equal):
  - The vertical stream of row i depends on rows < i only, and its later layers read the
    whole own row, so it is computed a row at a time, when row i starts: one row of every
    vertical layer, from caches of the earlier rows.
  - The horizontal stream at (i, j) reads, per layer, a k x k patch of the layer below
    (masked to positions before (i, j), and (i, j) itself) from a cache of that layer's
    activations at every position, padded like the 'SAME' convolution.
  - Attention keeps each layer's keys and values at every position: the query at p attends
    to the cached keys q <= p (those after p are still zero and masked).
  Per position this is O(layers * k^2 * C^2 + H*W * C) work instead of the full pass's
  O(H*W * layers * k^2 * C^2 + (H*W)^2 * C). All caches have fixed shapes, so the whole
  sampler is one compiled pair of nested `lax.fori_loop`s (rows, then columns).
  """
  codes, _ = _cached_loop(model, variables, key, tuple(int(s) for s in shape), condition,
                          temperature, None)
  return codes


def cached_logits(model: PixelSNAIL, variables, codes, condition=None):
  """The cached sampler's logits (B, H, W, K) with `codes` fed in instead of drawn (teacher
  forcing): what `model.apply(variables, codes, condition)` gives, up to float rounding."""
  codes = jnp.asarray(codes, jnp.int32)
  _, logits = _cached_loop(model, variables, jax.random.key(0), tuple(codes.shape),
                           condition, 1.0, codes.reshape(codes.shape[0], -1))
  return logits.reshape(*codes.shape, -1)


def _linear(p, x, dtype):
  """nn.Dense / DenseGeneral over x's last axis from its parameters (kernel (in, ...out))."""
  kernel = p["kernel"].astype(dtype)
  y = jnp.tensordot(x.astype(dtype), kernel, axes=1)
  return y + p["bias"].astype(dtype)


def _causal_kernel(p, mask: str, k: int, dtype):
  """A MaskedConv's masked kernel without its rows below the centre (all masked out)."""
  kernel = p["kernel"] * jnp.asarray(kernel_mask(mask, k))[:, :, None, None]
  return kernel[: k // 2 + 1].astype(dtype), p["bias"].astype(dtype)


def _patch_conv(cache, i, j, kernel_bias):
  """The masked conv's output at (i, j) from a padded cache (B, H+c, W+2c, C): (B, F)."""
  kernel, bias = kernel_bias
  rows, cols = kernel.shape[:2]
  patch = jax.lax.dynamic_slice_in_dim(
      jax.lax.dynamic_slice_in_dim(cache, i, rows, axis=1), j, cols, axis=2)
  return jnp.einsum("bhwc,hwcf->bf", patch, kernel) + bias


def _row_conv(cache, i, kernel_bias):
  """The masked conv's outputs along row i from a padded cache: (B, W, F)."""
  kernel, bias = kernel_bias
  slab = jax.lax.dynamic_slice_in_dim(cache, i, kernel.shape[0], axis=1)
  y = jax.lax.conv_general_dilated(slab, kernel, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y[:, 0] + bias


def _put(cache, value, i, j):
  """Writes value (B, C) at padded position (i, j) of cache (B, H', W', C)."""
  return jax.lax.dynamic_update_slice(cache, value[:, None, None].astype(cache.dtype),
                                      (0, i, j, 0))


@functools.partial(jax.jit, static_argnames=("model", "shape"))
def _cached_loop(model, variables, key, shape, condition, temperature, forced):
  """(codes (B, H, W), logits (B, H*W, K) if `forced` (B, H*W) codes are given, else None)."""
  params = variables["params"]
  dt = model.dtype
  b, hh, ww = shape
  n = hh * ww
  k, ch = model.kernel_size, model.channels
  c = k // 2
  temperature = jnp.asarray(temperature, jnp.float32)
  table = params["embedding"]
  # The horizontal stream's layers in order: ("res", gated layer l) or ("attn", block a).
  ops, gated, attn = [], [], []
  for blk in range(model.num_blocks):
    for r in range(model.res_per_block):
      ops.append(("res", len(gated)))
      gated.append(params[f"block_{blk}_res_{r}"])
    if model.attention:
      ops.append(("attn", len(attn)))
      attn.append(params[f"block_{blk}_attn"])
  heads = model.num_heads
  bg = _background(1, hh, ww, dt)[0]

  conv_in_v = _causal_kernel(params["in_v"], "above", k, dt)
  conv_in_h = _causal_kernel(params["in_h"], "A", k, dt)
  conv_v = [_causal_kernel(g["conv_v"], "vertical", k, dt) for g in gated]
  conv_h = [_causal_kernel(g["conv_h"], "B", k, dt) for g in gated]
  # The condition is known in full: its per-layer projections are computed once, as the
  # full pass computes them.
  sizes = model._condition_sizes()
  maps = _as_tuple(condition)
  if len(maps) != len(sizes):
    raise ValueError(f"got {len(maps)} conditioning map(s) but condition_codes="
                     f"{model.condition_codes!r} declares {len(sizes)}")
  if sizes:
    tables = [params[f"cond_embedding_{m}"] for m in range(len(sizes))]
    cond = nn.elu(nn.Conv(ch, (3, 3), padding="SAME", dtype=dt).apply(
        {"params": params["cond_conv"]}, _condition_input(tables, maps, shape, dt)))
    cond_v = [_linear(g["cond_v"], cond, dt) for g in gated]
    cond_h = [_linear(g["cond_h"], cond, dt) for g in gated]

  if forced is None:
    noise = jax.vmap(lambda p: jax.random.gumbel(jax.random.fold_in(key, p),
                                                 (b, model.num_codes)))(jnp.arange(n))
  padded = lambda channels: jnp.zeros((b, hh + c, ww + 2 * c, channels), dt)
  carry = dict(
      codes=jnp.zeros((b, n), jnp.int32),
      x=padded(ch + 3),  # the embedded codes drawn so far and the background
      ev=[padded(ch) for _ in gated],  # elu(v) entering each gated layer
      eh=[padded(ch) for _ in gated],  # elu(h) entering each gated layer
      keys=[jnp.zeros((b, n, heads, ch // heads), dt) for _ in attn],
      values=[jnp.zeros((b, n, heads, ch // heads), dt) for _ in attn],
      previous=jnp.zeros((b, ch), dt),  # embedding of the code at p - 1 (shifted input)
      logits=None if forced is None else jnp.zeros((b, n, model.num_codes), jnp.float32))

  def row(i, carry):
    # The vertical stream of row i: every vertical layer's row, bottom-up.
    v = _row_conv(carry["x"], i, conv_in_v)
    v_in = v
    ev, pre_vs = list(carry["ev"]), []
    for l, g in enumerate(gated):
      ev[l] = jax.lax.dynamic_update_slice(ev[l], nn.elu(v)[:, None], (0, i + c, c, 0))
      pre_v = _row_conv(ev[l], i, conv_v[l])
      pre_vs.append(pre_v)
      if l + 1 < len(gated):  # the last layer's v feeds nothing
        if sizes:
          pre_v = pre_v + cond_v[l][:, i]
        v = v + _linear(g["out_v"], _gate(pre_v), dt)
    carry = {**carry, "ev": ev}

    def position(j, carry):
      p = i * ww + j
      bg_p = jnp.broadcast_to(bg[i, j], (b, 3))
      h = (_patch_conv(carry["x"], i, j, conv_in_h)
           + _linear(params["in_link"], v_in[:, j], dt))
      eh, keys, values = list(carry["eh"]), list(carry["keys"]), list(carry["values"])
      for kind, l in ops:
        if kind == "attn":
          h, keys[l], values[l] = _attention_step(
              attn[l], h, carry["previous"], bg_p, keys[l], values[l], p, dt)
          continue
        eh[l] = _put(eh[l], nn.elu(h), i + c, j + c)
        pre_h = (_patch_conv(eh[l], i, j, conv_h[l])
                 + _linear(gated[l]["link"], pre_vs[l][:, j], dt))
        if sizes:
          pre_h = pre_h + cond_h[l][:, i, j]
        h = h + _linear(gated[l]["out_h"], _gate(pre_h), dt)
      logits = _linear(params["logits"], nn.elu(h), dt).astype(jnp.float32)
      if forced is None:
        chosen = _gumbel_draw(noise[p], logits, temperature)
        out_logits = None
      else:
        chosen = forced[:, p]
        out_logits = jax.lax.dynamic_update_slice(carry["logits"], logits[:, None], (0, p, 0))
      e = _embed(table, chosen, dt)
      return dict(codes=carry["codes"].at[:, p].set(chosen),
                  x=_put(carry["x"], jnp.concatenate([e, bg_p], -1), i + c, j + c),
                  ev=carry["ev"], eh=eh, keys=keys, values=values, previous=e,
                  logits=out_logits)

    return jax.lax.fori_loop(0, ww, position, carry)

  carry = jax.lax.fori_loop(0, hh, row, carry)
  return carry["codes"].reshape(b, hh, ww), carry["logits"]


def _attention_step(p, h, previous, bg_p, keys, values, pos, dt):
  """CausalAttention at one position: its key and value join the caches, its query attends
  to the cached positions <= pos. Returns (h, keys, values)."""
  ln = lambda name, x: nn.LayerNorm(dtype=dt).apply({"params": p[name]}, x)
  q_in = ln("norm_q", jnp.concatenate([h, bg_p], -1))
  kv_in = ln("norm_kv", jnp.concatenate([h, previous, bg_p], -1))
  mha = p["attention"]
  q = _linear(mha["query"], q_in, dt)  # (B, heads, head_dim)
  keys = jax.lax.dynamic_update_slice(
      keys, _linear(mha["key"], kv_in, dt)[:, None].astype(keys.dtype), (0, pos, 0, 0))
  values = jax.lax.dynamic_update_slice(
      values, _linear(mha["value"], kv_in, dt)[:, None].astype(values.dtype), (0, pos, 0, 0))
  mask = (jnp.arange(keys.shape[1]) <= pos)[None, None, None, :]
  out = nn.dot_product_attention(q[:, None], keys, values, mask=mask, dtype=dt)[:, 0]
  out = (jnp.einsum("bhd,hdc->bc", out.astype(dt), mha["out"]["kernel"].astype(dt))
         + mha["out"]["bias"].astype(dt))
  pre = _linear(p["proj"], jnp.concatenate([nn.elu(h), out], -1), dt)
  return h + _linear(p["out"], _gate(pre), dt), keys, values
