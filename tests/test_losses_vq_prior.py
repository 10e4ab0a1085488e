"""The prior's objective (vaelab/losses/vq_prior.py): nats and bits per code against a
hand-computed cross-entropy, and the levels' terms weighted by their numbers of codes."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vaelab.losses import vq_prior as prior_losses

K = 4


def _log_softmax_nll(logits, codes):
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.take_along_axis(log_p, codes[..., None], -1).reshape(len(codes), -1).sum(-1)


def test_loss_helpers():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, K)).astype(np.float32)
  codes = rng.integers(0, K, (2, 3, 4)).astype(np.int32)
  helpers = jax.jit(lambda l, c: (prior_losses.nll_per_example(l, c),
                                  prior_losses.bits_per_code(l, c),
                                  prior_losses.nats_per_code(jnp.zeros_like(l), c)))
  nll, bits, uniform = helpers(logits, codes)
  manual = _log_softmax_nll(logits, codes)
  np.testing.assert_allclose(nll, manual, rtol=1e-5)
  np.testing.assert_allclose(bits, manual / (12 * math.log(2)), rtol=1e-5)
  np.testing.assert_allclose(uniform, math.log(K), rtol=1e-6)


def test_levels_weigh_by_their_number_of_codes():
  rng = np.random.default_rng(1)
  maps = [rng.integers(0, K, (3, 2, 2)).astype(np.int32),
          rng.integers(0, K, (3, 4, 4)).astype(np.int32)]
  logits = [rng.normal(size=(*m.shape, K)).astype(np.float32) for m in maps]
  terms = prior_losses.nll_terms(("top", "bottom"), logits, maps)
  top, bottom = (_log_softmax_nll(l, m) for l, m in zip(logits, maps))
  np.testing.assert_allclose(terms["nll"], (top + bottom) / 20, rtol=1e-5)
  np.testing.assert_allclose(terms["nll_top"], top / 4, rtol=1e-5)
  np.testing.assert_allclose(terms["nll_bottom"], bottom / 16, rtol=1e-5)
  one = prior_losses.nll_terms(("",), logits[1:], maps[1:])
  assert set(one) == {"nll"}
  np.testing.assert_allclose(one["nll"], bottom / 16, rtol=1e-5)
