"""Tests for vaelab.evaluate.disentanglement.gbt: the same trees as sklearn's
GradientBoostingClassifier()."""
from __future__ import annotations

import numpy as np
import pytest

from vaelab.evaluate.disentanglement import gbt, gbt_splitter


def _codes_case(name, n, seed):
  """Codes (n, 5) and labels of one synthetic case: the shapes DCI meets in practice."""
  rng = np.random.default_rng(seed)
  sizes = {"noisy": 3, "rotated": 2, "collapsed": 6, "integer": 4}
  y = rng.integers(0, sizes[name], n)
  z = rng.normal(size=(n, 5))
  if name == "noisy":
    z[:, 0] += 0.8 * y
  elif name == "rotated":
    z[:, :2] += np.array([1.0, 0.5]) * y[:, None]
    z = z @ np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))[0]
  elif name == "collapsed":  # a dead code, a near-constant one, one informative
    z[:, 0] += y
    z[:, 2] = 0.0
    z[:, 3] = 1e-9 * z[:, 3]
  else:  # codes that are small integers: ties and constant features in most nodes
    z = np.stack([y, rng.integers(0, 3, n), (y + rng.integers(0, 2, n)) % 4,
                  np.zeros(n), rng.integers(0, 2, n)], axis=1).astype(np.float64)
  return z, y


@pytest.fixture(scope="module", params=["noisy", "rotated", "collapsed", "integer"])
def boosted(request):
  from sklearn.ensemble import GradientBoostingClassifier
  z, y = _codes_case(request.param, 300, 1)
  z_test, _ = _codes_case(request.param, 200, 2)
  ours = gbt.fit(z, y, random_state=7)
  ref = GradientBoostingClassifier(random_state=7).fit(z, y)
  return z, y, z_test, ours, ref


def test_boosted_trees_are_sklearns(boosted):
  # The same trees as sklearn's GradientBoostingClassifier(): importances, raw scores and
  # predictions agree, to the last bit on continuous codes. Codes with tied values
  # ("integer") are sorted by sklearn's unstable introsort, which vaelab does not replay:
  # node sums can round differently, enough to flip the impurity <= eps test of a pure
  # node (importances then differ by ~1e-8).
  z, y, z_test, ours, ref = boosted
  tol = 1e-6 if len(np.unique(z[:, 0])) < len(z) else 1e-12
  np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, rtol=0,
                             atol=tol)
  for x in (z, z_test):
    raw = ours.decision_function(x)
    np.testing.assert_allclose(raw[:, 0] if raw.shape[1] == 1 else raw,
                               ref.decision_function(x), rtol=0, atol=tol)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
  first = ref.estimators_[0, 0].tree_
  assert ours.feature[0, 0, 0] == first.feature[0] and ours.threshold[0, 0, 0] == first.threshold[0]


def test_partition_is_sklearns_in_place_loop():
  def reference(arr, left):
    arr, p, end = list(arr), 0, len(arr)
    while p < end:
      if left[arr[p]]:
        p += 1
      else:
        end -= 1
        arr[p], arr[end] = arr[end], arr[p]
    return arr

  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 40, 60)
  arranged = np.concatenate([rng.permutation(n) for n in lengths])
  goes = rng.random(2000) < rng.random()
  left = np.concatenate([goes[a] for a in np.split(arranged, np.cumsum(lengths)[:-1])])
  out = gbt_splitter.partition(arranged, left, lengths)
  for got, seg in zip(np.split(out, np.cumsum(lengths)[:-1]),
                      np.split(arranged, np.cumsum(lengths)[:-1])):
    assert got.tolist() == reference(seg, goes)
