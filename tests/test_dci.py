"""Tests for vaelab.evaluate.disentanglement.dci: disentanglement_lib's DCI, its boosted
trees included."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from disentanglement_cases import fixed_data, identity, mixed_first_two, synthetic
from vaelab.evaluate import disentanglement as dis


def test_dci_with_the_reference_boosted_trees():
  gt = synthetic((3, 4, 5))
  rng = np.random.default_rng(0)
  ident = dis.dci_disentanglement(identity, gt, rng, num_train=150, num_test=50,
                                  importance="gbt")
  mixed = dis.dci_disentanglement(mixed_first_two, gt, rng, num_train=150, num_test=50,
                                  importance="gbt")
  assert ident["dci_disentanglement"] > 0.95
  # Two of three codes split their importance evenly between two factors:
  # 1/3 * 1 + 2/3 * (1 - log 2 / log 3) = 0.58.
  assert abs(mixed["dci_disentanglement"] - 0.58) < 0.06
  with pytest.raises(ValueError, match="importance"):
    dis.dci_disentanglement(identity, gt, rng, num_train=50, num_test=10, importance="svm")


def _dlib_dci(x_train, y_train, x_test, y_test, seed):
  """disentanglement_lib's _compute_dci on (d, n) codes and (F, n) factors, its
  GradientBoostingClassifier() seeded (it leaves it unseeded)."""
  from sklearn.ensemble import GradientBoostingClassifier
  imp = np.zeros((len(x_train), len(y_train)))
  train, test = [], []
  for i in range(len(y_train)):
    model = GradientBoostingClassifier(random_state=seed).fit(x_train.T, y_train[i, :])
    imp[:, i] = np.abs(model.feature_importances_)
    train.append(np.mean(model.predict(x_train.T) == y_train[i, :]))
    test.append(np.mean(model.predict(x_test.T) == y_test[i, :]))
  per_code = 1. - scipy.stats.entropy(imp.T + 1e-11, base=imp.shape[1])
  per_factor = 1. - scipy.stats.entropy(imp + 1e-11, base=imp.shape[0])
  return {"disentanglement": np.sum(per_code * imp.sum(1) / imp.sum()),
          "completeness": np.sum(per_factor * imp.sum(0) / imp.sum()),
          "informativeness_train": np.mean(train), "informativeness_test": np.mean(test),
          "importance": imp, "per_code": per_code}


def test_fixed_data_dci_is_disentanglement_libs():
  z, y = fixed_data(600)
  s = dis.scores(codes=z, factors=y, metrics=("dci",), dci_random_state=3)
  ref = _dlib_dci(z[:400].T, y[:400].T, z[400:].T, y[400:].T, seed=3)  # 2/3 train, as given
  for key in ("disentanglement", "completeness", "informativeness_train",
              "informativeness_test"):
    assert getattr(s.dci, key) == pytest.approx(ref[key], abs=1e-10), key
  np.testing.assert_allclose(s.dci.importance, ref["importance"], rtol=0, atol=1e-12)
  np.testing.assert_allclose(s.dci.per_code_disentanglement, ref["per_code"], atol=1e-10)
