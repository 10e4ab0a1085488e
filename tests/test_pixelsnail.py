"""The PixelSNAIL network: shapes, exact causality through gradients, conditioning, and that
a tiny model learns a structured code distribution (and its samples follow it). Its
samplers: tests/test_pixelsnail_sampler.py; its loss: tests/test_losses_vq_prior.py."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pixelsnail_cases import K, bottom_prior, codes as _codes
from pixelsnail_cases import model as _model
from vaelab.losses import vq_prior as prior_losses
from vaelab.models import pixelsnail, pixelsnail_sampler


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
  """pixelsnail_cases.bottom_prior. The tests without attention reuse its parameters
  (theirs are a subset; apply ignores the rest)."""
  return bottom_prior()


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
      return prior_losses.nats_per_code(model.apply({"params": p}, batch, cond), batch).mean()
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

  # The sampler tests' compiled sampler is reused: same model, shapes and tree.
  test_cond = _diagonals(6, 1)[1]
  maps = np.asarray(pixelsnail_sampler.sample(model, {"params": params}, jax.random.key(1),
                                              (6, 5, 5), test_cond, temperature=0.1))
  ii, jj = np.mgrid[:5, :5]
  assert np.mean(maps == (maps[:, :1, :1] + ii + jj) % K) > 0.95
  np.testing.assert_array_equal(maps[:, 0, 0] // 2, np.asarray(test_cond)[:, 0, 0])
