"""Tests for vaelab.evaluate.disentanglement.sap: disentanglement_lib's sap_score_test, and
the cases vaelab adds (discrete factors, constant factors, one code)."""
from __future__ import annotations

import numpy as np
import pytest

from disentanglement_cases import identity_observations
from vaelab.evaluate.disentanglement import sap


def _score(represent, continuous=True):
  return sap.sap_score(represent, identity_observations(), np.random.default_rng(0),
                       num_train=3000, num_test=3000, continuous_factors=continuous).sap


def test_metric():
  assert 0.9 <= _score(lambda x: np.array(x, np.float64)) <= 1.0


def test_bad_metric():
  assert 0.0 <= _score(lambda x: np.zeros_like(x, np.float64)) <= 0.2


def test_duplicated_latent_space():
  def represent(x):
    x = np.array(x, np.float64)
    return np.hstack([x, x])

  assert 0.0 <= _score(represent) <= 0.2


def test_discrete_factors_constant_factor_and_one_code():
  rng = np.random.default_rng(0)
  y = np.stack([rng.integers(0, 2, 900), rng.integers(0, 3, 900), np.full(900, 4)], 1)
  z = np.stack([y[:, 0] + 0.1 * rng.normal(size=900), rng.normal(size=900)], 1)
  r = sap.sap_from_codes(z[:600], y[:600], z[600:], y[600:])
  assert r.scored_factors == (0, 1) and np.isnan(r.per_factor[2])
  assert r.score_matrix.shape == (2, 3) and np.isnan(r.score_matrix[:, 2]).all()
  # The binary factor is read off its code by a threshold; the other is not linear in
  # any single code.
  assert r.score_matrix[0, 0] > 0.95 and r.per_factor[0] > 0.4
  assert r.sap == pytest.approx(np.mean(r.per_factor[:2]))
  one = sap.sap_from_codes(z[:600, :1], y[:600], z[600:, :1], y[600:])
  np.testing.assert_array_equal(one.per_factor[:2], one.score_matrix[0, :2])
  with pytest.raises(ValueError, match="sap: no factor varies"):
    sap.sap_from_codes(z, y[:, 2:], z, y[:, 2:])
