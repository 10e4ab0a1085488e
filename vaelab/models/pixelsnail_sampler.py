"""Sampling from a PixelSNAIL prior (models/pixelsnail.py): ancestral sampling of code maps.

Both samplers draw position p from jax.random.categorical(fold_in(key, p), logits_p / T)
(the argmax at T = 0), so from the same key they give the same codes whenever their
logits agree, which they do up to float rounding: `full` runs the module itself once per
position (the reference), `cached` computes only what position p's logits need, from
the network's parameters and cached activations (`sample_cached`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaelab.models.pixelsnail import (PixelSNAIL, as_tuple, background, condition_input, embed,
                                      gate, kernel_mask)

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
  bg = background(1, hh, ww, dt)[0]

  conv_in_v = _causal_kernel(params["in_v"], "above", k, dt)
  conv_in_h = _causal_kernel(params["in_h"], "A", k, dt)
  conv_v = [_causal_kernel(g["conv_v"], "vertical", k, dt) for g in gated]
  conv_h = [_causal_kernel(g["conv_h"], "B", k, dt) for g in gated]
  # The condition is known in full: its per-layer projections are computed once, as the
  # full pass computes them.
  sizes = model.condition_sizes()
  maps = as_tuple(condition)
  if len(maps) != len(sizes):
    raise ValueError(f"got {len(maps)} conditioning map(s) but condition_codes="
                     f"{model.condition_codes!r} declares {len(sizes)}")
  if sizes:
    tables = [params[f"cond_embedding_{m}"] for m in range(len(sizes))]
    cond = nn.elu(nn.Conv(ch, (3, 3), padding="SAME", dtype=dt).apply(
        {"params": params["cond_conv"]}, condition_input(tables, maps, shape, dt)))
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
        v = v + _linear(g["out_v"], gate(pre_v), dt)
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
        h = h + _linear(gated[l]["out_h"], gate(pre_h), dt)
      logits = _linear(params["logits"], nn.elu(h), dt).astype(jnp.float32)
      if forced is None:
        chosen = _gumbel_draw(noise[p], logits, temperature)
        out_logits = None
      else:
        chosen = forced[:, p]
        out_logits = jax.lax.dynamic_update_slice(carry["logits"], logits[:, None], (0, p, 0))
      e = embed(table, chosen, dt)
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
  return h + _linear(p["out"], gate(pre), dt), keys, values
