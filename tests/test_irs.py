"""Tests for vaelab.evaluate.disentanglement.irs: disentanglement_lib's irs_test."""
from __future__ import annotations

import numpy as np

from disentanglement_cases import identity_observations
from vaelab.evaluate.disentanglement import irs


def _identity_discretizer(target, num_bins):
  del num_bins
  return target


def _score(represent):
  return irs.irs_score(represent, identity_observations(), np.random.default_rng(0),
                       num_train=3000, diff_quantile=0.99,
                       discretizer=_identity_discretizer).irs


def test_metric():
  assert 0.9 <= _score(lambda x: np.array(x, np.float64)) <= 1.0


def test_bad_metric():
  assert 0.0 <= _score(lambda x: np.zeros_like(x, np.float64)) <= 0.1


def test_drop_constant_dims():
  rng = np.random.RandomState(0)
  codes = rng.normal(0.0, 1.0, (100, 100))
  codes[:, 0] = 1.
  codes[:, -1] = 0.
  factors = rng.randint(0, 3, (100, 2))
  r = irs.irs_from_codes(codes, factors)
  assert r.active_codes == tuple(range(1, 99))
  assert r.irs_matrix.shape == (98, 2) and r.per_code.shape == (98,)
