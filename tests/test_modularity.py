"""Tests for vaelab.evaluate.disentanglement.modularity: disentanglement_lib's
modularity_explicitness_test, and explicitness on codes that do and do not carry the
factors."""
from __future__ import annotations

import numpy as np

from disentanglement_cases import identity_observations
from vaelab.evaluate.disentanglement import modularity as mod


def _identity_discretizer(target, num_bins):
  del num_bins
  return target


def test_diagonal():
  np.testing.assert_allclose(mod.modularity(np.diag(5. * np.ones(5)))[0], 1.0)


def test_diagonal_empty_codes():
  np.testing.assert_allclose(mod.modularity(np.array([[1., 0.], [0., 1.], [0., 0.]]))[0],
                             2. / 3.)


def test_zero():
  np.testing.assert_allclose(mod.modularity(np.zeros((10, 10)))[0], 0.0)


def test_redundant_codes():
  matrix = np.diag(5. * np.ones(5))
  np.testing.assert_allclose(mod.modularity(np.vstack([matrix, matrix]))[0], 1.0)


def test_missed_factors():
  np.testing.assert_allclose(mod.modularity(np.diag(5. * np.ones(5))[:2, :])[0], 1.0)


def test_one_code_two_factors():
  matrix = np.diag(5. * np.ones(5))
  np.testing.assert_allclose(mod.modularity(np.hstack([matrix, matrix]))[0], 1. - 1. / 9)


def test_one_factor():
  # disentanglement_lib divides 0 by 0 here; a code tied to the only factor is modular.
  score, per_code = mod.modularity(np.array([[0.5], [0.0]]))
  assert score == 0.5 and per_code.tolist() == [1.0, 0.0]


def _scores(represent, n=3000):
  return mod.modularity_explicitness(represent, identity_observations(),
                                     np.random.default_rng(0), num_train=n, num_test=n,
                                     discretizer=_identity_discretizer)


def test_metric():
  s = _scores(lambda x: np.array(x, np.float64))
  assert 0.9 <= s.modularity <= 1.0
  # Each factor is one of the codes: a linear model ranks its classes well.
  assert s.explicitness_train > 0.8 and s.explicitness_test > 0.8


def test_bad_metric():
  permute = np.random.RandomState(0)

  # Each observation's factors in a random order: every code carries every factor a
  # little, equally, which gives a low modularity.
  def represent(x):
    code = np.array(x, np.float64)
    for i in range(code.shape[0]):
      code[i, :] = permute.permutation(code[i, :])
    return code

  assert 0.0 <= _scores(represent, n=20000).modularity <= 0.2


def test_duplicated_latent_space():
  def represent(x):
    x = np.array(x, np.float64)
    return np.hstack([x, x])

  assert 0.9 <= _scores(represent).modularity <= 1.0


def test_noise_is_not_explicit_and_dead_codes_are_harmless():
  rng = np.random.default_rng(0)
  y = np.stack([rng.integers(0, s, 1200) for s in (2, 5)], 1)
  z = np.concatenate([rng.normal(size=(1200, 3)), np.zeros((1200, 1))], 1)  # a dead unit
  r = mod.modularity_from_codes(z[:800], y[:800], z[800:], y[800:])
  assert abs(r.explicitness_test - 0.5) < 0.1 and np.isfinite(r.modularity)
  assert r.per_code_modularity[3] == 0.0  # no information
  assert r.mutual_information.shape == (4, 2)
  # A test set without some classes scores the class columns it can (dlib fails there):
  # factor 0 has one class in it (no ROC), factor 1 two of its five.
  few = mod.modularity_from_codes(z[:800], y[:800], z[800:803],
                                  np.array([[0, 1], [0, 2], [0, 1]]))
  assert np.isnan(few.per_factor_explicitness_test[0])
  assert few.explicitness_test == few.per_factor_explicitness_test[1]
  assert np.isfinite(few.explicitness_test)
