"""The PixelSNAIL prior: shapes, exact causality through gradients, conditioning, sampling
(the cached sampler against the module's logits and the full-pass sampler's codes), the loss
helpers, and that a tiny model learns a structured code distribution."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaelab.models import pixelsnail

K = 4


def _model(**kw):
  base = dict(num_codes=K, channels=16, num_blocks=1, res_per_block=1, num_heads=2,
              condition_codes=K)
  return pixelsnail.PixelSNAIL(**{**base, **kw})


def _codes(b, h, w, k=K, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, k, (b, h, w)), jnp.int32)


def _init(model, *args, seed=0):
  """model.init's parameter tree, traced but filled from numpy (fan-in scaled normals).

  On this CPU every random initializer is a separate slow XLA compilation (the real init
  of this tiny model compiles for 5-15 s); tracing alone still runs the module's init code.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [getattr(k, "key", "") for k in path]
    if names[-1] == "bias":
      return jnp.zeros(leaf.shape, leaf.dtype)
    if names[-1] == "scale":
      return jnp.ones(leaf.shape, leaf.dtype)
    if names[-1] == "kernel":  # attention's q/k/v kernels are (in, heads, head_dim)
      qkv = names[-2] in ("query", "key", "value")
      fan_in = leaf.shape[0] if qkv else math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.normal(0, 1, leaf.shape), leaf.dtype)  # embeddings

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _dependence(model, variables, codes, condition):
  """For one map: (HW, HW) matrix [p, q] = sum |d logits[p] / d onehot(codes)[q]|, and the
  (HW, Hc*Wc) one with respect to the condition's one-hots."""
  _, h, w = codes.shape
  jac = jax.jit(jax.jacrev(lambda x, c: model.apply(variables, x, c), argnums=(0, 1)))
  j_codes, j_cond = jac(jax.nn.one_hot(codes, K), jax.nn.one_hot(condition, K))
  per_position = lambda j: np.abs(np.asarray(j)).sum(axis=(0, 3, 4, 7)).reshape(h * w, -1)
  return per_position(j_codes), per_position(j_cond)


def _assert_causal(dep):
  assert np.all(np.triu(dep) == 0), "logits at p depend on inputs at positions >= p"
  assert np.all(dep[0] == 0), "the first position's logits depend on the input"
  for p in range(1, dep.shape[0]):
    assert dep[p, :p].max() > 0, f"position {p} ignores every earlier position"


@pytest.fixture(scope="module")
def prior():
  """Attention + a lower-resolution conditioning map: the shape of VQ-VAE-2's bottom prior.
  The tests without attention reuse its parameters (theirs are a subset; apply ignores
  the rest)."""
  model = _model()
  codes, cond = _codes(1, 5, 5), _codes(1, 3, 3, seed=1)
  return model, _init(model, codes, cond), codes, cond


def test_shapes_and_onehot_path(prior):
  model, variables, _, _ = prior
  codes, cond = _codes(3, 5, 5, seed=2), _codes(3, 3, 3, seed=3)

  @jax.jit
  def both(codes, cond):
    return (model.apply(variables, codes, cond),
            model.apply(variables, jax.nn.one_hot(codes, K), jax.nn.one_hot(cond, K)))

  logits, from_onehot = both(codes, cond)
  chex.assert_shape(logits, (3, 5, 5, K))
  chex.assert_tree_all_finite(logits)
  np.testing.assert_allclose(from_onehot, logits, atol=1e-5)
  with pytest.raises(ValueError, match="condition"):
    jax.eval_shape(lambda c: model.apply(variables, c), codes)


def test_same_resolution_and_several_conditions():
  model = _model(condition_codes=(3, 5))
  codes = _codes(2, 4, 4)
  conds = (_codes(2, 4, 4, k=3, seed=1), _codes(2, 2, 2, k=5, seed=2))
  variables = jax.eval_shape(model.init, jax.random.key(0), codes, conds)
  assert jax.eval_shape(model.apply, variables, codes, conds).shape == (2, 4, 4, K)
  unconditional = _model(condition_codes=0, dropout=0.1)
  variables = jax.eval_shape(unconditional.init, jax.random.key(0), codes)
  assert not any("cond" in name for name in variables["params"])
  training = jax.eval_shape(lambda v, k: unconditional.apply(
      v, codes, deterministic=False, rngs={"dropout": k}), variables, jax.random.key(1))
  assert training.shape == (2, 4, 4, K)


def test_causal_and_condition_seen_everywhere(prior):
  model, variables, codes, cond = prior
  dep, dep_cond = _dependence(model, variables, codes, cond)
  _assert_causal(dep)
  # Keys carry the raster-shifted input, so attention reaches every earlier code.
  assert all(dep[p, :p].min() > 0 for p in range(1, dep.shape[0]))
  # The condition is not causal: even the first position sees it, and position (1, 1) of
  # the 5x5 map sees condition cell (1, 1), which nearest resizing spreads over (1..3, 1..3),
  # positions mostly after (1, 1) in raster order.
  assert dep_cond[0].max() > 0
  assert dep_cond[1 * 5 + 1, 1 * 3 + 1] > 0


def test_gated_pixelcnn_is_causal_without_blind_spot(prior):
  _, variables, codes, cond = prior
  dep, _ = _dependence(_model(attention=False), variables, codes, cond)
  _assert_causal(dep)
  # (i-1, j+2) is the blind spot of a single stack of 3x3 masked convs; the vertical
  # stream covers it.
  i, j, w = 3, 1, 5
  assert dep[i * w + j, (i - 1) * w + j + 2] > 0


def test_causality_check_catches_a_leaky_mask(prior, monkeypatch):
  """The checks above can fail: with the first layer's centre tap left in, they do."""
  _, variables, codes, cond = prior
  good = pixelsnail.kernel_mask
  monkeypatch.setattr(pixelsnail, "kernel_mask",
                      lambda kind, size: good("B" if kind == "A" else kind, size))
  dep, _ = _dependence(_model(attention=False), variables, codes, cond)
  with pytest.raises(AssertionError, match="positions >= p"):
    _assert_causal(dep)


def test_sampling_valid_deterministic_and_follows_the_head(prior):
  model, variables, _, _ = prior
  cond = _codes(6, 3, 3, seed=4)
  key = jax.random.key(5)
  a = pixelsnail.sample(model, variables, key, (6, 5, 5), cond)
  b = pixelsnail.sample(model, variables, key, (6, 5, 5), cond)
  assert a.dtype == jnp.int32 and a.shape == (6, 5, 5)
  assert int(a.min()) >= 0 and int(a.max()) < K
  np.testing.assert_array_equal(a, b)
  c = pixelsnail.sample(model, variables, jax.random.key(6), (6, 5, 5), cond)
  assert np.any(np.asarray(a) != np.asarray(c))

  params = dict(variables["params"])
  params["logits"] = {**params["logits"], "bias": jnp.array([0.0, 0.0, 100.0, 0.0])}
  biased = pixelsnail.sample(model, {"params": params}, key, (6, 5, 5), cond)
  np.testing.assert_array_equal(biased, 2)


@pytest.mark.parametrize("arch", ["bottom_prior", "deep_gated_k5"])
def test_cached_sampler_matches_the_full_pass(prior, arch):
  """The cached sampler's logits (teacher-forced through its caches) are the module's, and
  from one key it draws the codes of the full-pass sampler: with attention and a
  lower-resolution condition, and (logits only, to save compilations) a deeper
  unconditional Gated PixelCNN with 5x5 kernels, whose caches are padded wider."""
  if arch == "bottom_prior":
    model, variables, _, _ = prior
    cond = _codes(6, 3, 3, seed=4)
  else:
    model = _model(attention=False, kernel_size=5, num_blocks=2, res_per_block=2,
                   condition_codes=0)
    variables, cond = _init(model, _codes(1, 5, 5), seed=3), None
  codes = _codes(6, 5, 5, seed=7)
  full = jax.jit(model.apply)(variables, codes, cond)
  cached = pixelsnail.cached_logits(model, variables, codes, cond)
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=1e-5)
  if arch != "bottom_prior":
    return
  key = jax.random.key(5)  # as in the sampling test below: the cached compilation is shared
  for temperature in (1.0, 0.0):
    maps = {s: np.asarray(pixelsnail.sample(model, variables, key, (6, 5, 5), cond,
                                            temperature, sampler=s))
            for s in pixelsnail.SAMPLERS}
    np.testing.assert_array_equal(maps["cached"], maps["full"])
    assert len(np.unique(maps["cached"])) > 1  # not one constant code everywhere
  with pytest.raises(ValueError, match="sampler 'fast'"):
    pixelsnail.sample(model, variables, key, (6, 5, 5), cond, sampler="fast")


def test_loss_helpers():
  logits = np.random.default_rng(0).normal(size=(2, 3, 4, K)).astype(np.float32)
  codes = np.asarray(_codes(2, 3, 4))
  helpers = jax.jit(lambda l, c: (pixelsnail.nll_per_example(l, c),
                                  pixelsnail.bits_per_code(l, c),
                                  pixelsnail.nats_per_code(jnp.zeros_like(l), c)))
  nll, bits, uniform = helpers(logits, codes)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  manual = -np.take_along_axis(log_p, codes[..., None], -1).reshape(2, -1).sum(-1)
  np.testing.assert_allclose(nll, manual, rtol=1e-5)
  np.testing.assert_allclose(bits, manual / (12 * math.log(2)), rtol=1e-5)
  np.testing.assert_allclose(uniform, math.log(K), rtol=1e-6)


def _diagonals(n, seed):
  """5x5 maps with code(i, j) = (offset + i + j) mod K, a random offset per map, and a 3x3
  condition holding offset // 2: it leaves one bit of the first code open, and the codes
  before a position determine it."""
  off = np.random.default_rng(seed).integers(0, K, (n, 1, 1))
  ii, jj = np.mgrid[:5, :5]
  cond = np.broadcast_to(off // 2, (n, 3, 3))
  return jnp.asarray((off + ii + jj) % K, jnp.int32), jnp.asarray(cond, jnp.int32)


def test_learns_a_structured_map_and_samples_it(prior):
  model, variables, _, _ = prior
  codes, cond = _diagonals(1600, 0)
  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, batch, cond):
    def loss_fn(p):
      return pixelsnail.nats_per_code(model.apply({"params": p}, batch, cond), batch).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = variables["params"]
  opt_state = jax.jit(opt.init)(params)
  losses = []
  for s in range(100):
    batch = slice(16 * s, 16 * s + 16)
    params, opt_state, loss = step(params, opt_state, codes[batch], cond[batch])
    losses.append(float(loss))
  # Each batch is new data, so its loss before the update is a held-out estimate. Ideal:
  # log 2 nats on the first code only, log(2) / 25 = 0.028 nats per code.
  held_out = np.mean(losses[-10:])
  assert held_out < 0.1 * math.log(K), losses[::10]

  # The sampling test's compiled sampler is reused: same model, shapes and tree.
  test_cond = _diagonals(6, 1)[1]
  maps = np.asarray(pixelsnail.sample(model, {"params": params}, jax.random.key(1),
                                      (6, 5, 5), test_cond, temperature=0.1))
  ii, jj = np.mgrid[:5, :5]
  assert np.mean(maps == (maps[:, :1, :1] + ii + jj) % K) > 0.95
  np.testing.assert_array_equal(maps[:, 0, 0] // 2, np.asarray(test_cond)[:, 0, 0])
