"""Tests for vaelab.evaluate.disentanglement.ground_truth: procedural and table ground truths."""
from __future__ import annotations

import numpy as np
import pytest

from disentanglement_cases import synthetic, table_source
from vaelab.data import dsprites
from vaelab.data.base import InMemorySource, SubsetSource
from vaelab.evaluate import disentanglement as dis


def test_dsprites_ground_truth_from_source():
  gt = dis.ground_truth_from_source(dsprites.DSpritesSource())
  assert isinstance(gt, dis.ProceduralGroundTruth)
  assert gt.factor_sizes == dsprites.FACTOR_SIZES
  assert dis.varying_factors(gt) == (1, 2, 3, 4, 5)  # color (size 1) is not scored
  # The held-out split is a SubsetSource of the grid: same procedural ground truth.
  held = SubsetSource(dsprites.DSpritesSource(), np.arange(10), name="procedural_dsprites/eval")
  assert isinstance(dis.ground_truth_from_source(held), dis.ProceduralGroundTruth)


def test_dsprites_sample_with_fixed_fixes_the_factor():
  gt = dis.ground_truth_from_source(dsprites.DSpritesSource())
  rng = np.random.default_rng(0)
  ks = np.array([1, 2, 3, 4, 5, 4])
  factors, images = gt.sample_with_fixed(12, ks, rng)
  assert factors.shape == (6, 12, 6) and images.shape == (6, 12, 64, 64, 1)
  for g, k in enumerate(ks):
    assert (factors[g, :, k] == factors[g, 0, k]).all()
    others = np.delete(factors[g], [0, k], axis=1)  # color is constant anyway
    assert (others != others[0]).any(), "the other factors must vary"
  # The images are those of the returned factors: the grid's own rendering.
  flat = factors.reshape(-1, 6)
  expected = dsprites.DSpritesSource().get(dsprites.factors_to_index(flat))["image"]
  np.testing.assert_array_equal(images.reshape(-1, 64, 64, 1), expected)

  f1, x1 = gt.sample_with_fixed(5, 3, rng)  # scalar factor index: one group
  assert f1.shape == (5, 6) and x1.shape == (5, 64, 64, 1)
  assert (f1[:, 3] == f1[0, 3]).all()
  np.testing.assert_array_equal(x1, dsprites.render(f1))


def _decode(images):
  return images.reshape(images.shape[:-3] + (-1,)).astype(np.int64)


def test_table_ground_truth_samples_real_rows():
  src, grid, rows = table_source()
  gt = dis.ground_truth_from_source(src)
  assert isinstance(gt, dis.TableGroundTruth)
  assert gt.factor_sizes == (3, 4, 5) and len(gt) == len(rows)
  present = {tuple(r) for r in rows}
  rng = np.random.default_rng(1)

  f = gt.sample_factors(200, rng)
  assert all(tuple(v) in present for v in f)
  f, x = gt.sample(50, rng)
  np.testing.assert_array_equal(_decode(x), f)

  ks = np.array([0, 1, 2, 2, 0])
  f, x = gt.sample_with_fixed(30, ks, rng)
  assert f.shape == (5, 30, 3) and x.shape == (5, 30, 1, 1, 3)
  np.testing.assert_array_equal(_decode(x), f)  # each image is the row of its factors
  for g, k in enumerate(ks):
    assert (f[g, :, k] == f[g, 0, k]).all()
    assert len({tuple(v) for v in f[g]}) > 1
  assert all(tuple(v) in present for v in f.reshape(-1, 3))


def test_fixed_values_follow_the_marginal():
  # The shared value of a group is drawn as the reference does (the factor of a
  # random example), so its frequencies are the data's marginal, for both kinds.
  src, _, rows = table_source(keep=0.5, seed=3)
  rng = np.random.default_rng(0)
  table_marginal = np.bincount(rows[:, 2], minlength=5) / len(rows)
  for gt, marginal in ((dis.TableGroundTruth(src), table_marginal),
                       (synthetic((3, 6, 5)), np.full(5, 0.2))):
    f, _ = gt.sample_with_fixed(2, np.full(4000, 2), rng)
    freq = np.bincount(f[:, 0, 2], minlength=5) / 4000
    np.testing.assert_allclose(freq, marginal, atol=0.03)


def test_table_observations_lookup_and_missing_combination():
  src, grid, rows = table_source()
  gt = dis.TableGroundTruth(src)
  present = rows[:20]
  np.testing.assert_array_equal(_decode(gt.observations(present)), present)
  missing = next(v for v in grid if not any((v == rows).all(1)))
  with pytest.raises(ValueError, match=r"\[" + ", ".join(map(str, missing)) + r"\]"):
    gt.observations(np.stack([rows[0], missing]))
  with pytest.raises(ValueError, match="no example"):
    gt.observations(np.array([[0, 0, 7]]))  # outside factor_sizes


def test_no_factors_means_no_ground_truth():
  src = InMemorySource("plain", np.zeros((4, 2, 2, 1), np.float32))
  assert dis.ground_truth_from_source(src) is None
