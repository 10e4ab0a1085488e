"""Tests for vaelab.evaluate.disentanglement: calibration of the four scores and the ground truths.

The calibration uses a ground truth whose observations are the factor values
themselves, so the representation is chosen exactly: the true factors (each score
at its maximum), noise (chance), or two factors mixed (a value the protocol fixes:
0.75 for BetaVAE / FactorVAE / DCI, 0.5 for MIG; see `test_mixed_codes_score_in_between`).
"""
from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as sk_metrics

from vaelab.data import dsprites
from vaelab.data.base import InMemorySource, SubsetSource
from vaelab.evaluate import disentanglement as dis
from vaelab.evaluate import gbt

SIZES = (3, 6, 10, 10)
SMALL = {"num_train": 600, "num_eval": 300, "batch_size": 16, "num_variance_estimate": 600,
         "represent_batch_size": 128}
MAIN = ("eval/betavae_score", "eval/factorvae_score", "eval/mig", "eval/dci_disentanglement")


def _synthetic(sizes=SIZES):
  return dis.ProceduralGroundTruth(lambda f: np.asarray(f, np.float32), sizes)


def _identity(x):
  # Different units per code: no score may depend on the codes sharing a scale.
  return x * np.array([1.0, 0.5, 2.0, 1.5])[:x.shape[1]]


def _mixed(x):
  z = np.array(x, np.float64)
  z[:, 2], z[:, 3] = x[:, 2] + x[:, 3], x[:, 2] - x[:, 3]
  return z


def _mixed_first_two(x):
  z = np.array(x, np.float64)
  z[:, 0], z[:, 1] = x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]
  return z


def _noise_fn(seed):
  rng = np.random.default_rng(seed)
  return lambda x: rng.normal(size=(len(x), 4))


@pytest.fixture(scope="module")
def scores():
  gt = _synthetic()
  start = time.time()
  # The 20-tree forest keeps this fixture fast; the default boosted trees (exact
  # disentanglement_lib) are checked against sklearn below.
  out = {name: dis.disentanglement_metrics(fn, gt, np.random.default_rng(0), SMALL,
                                           dci_importance="forest")
         for name, fn in (("identity", _identity), ("noise", _noise_fn(1)), ("mixed", _mixed))}
  out["seconds"] = time.time() - start
  return out


# ---------------------------------------------------------------- calibration


def test_keys_and_floats(scores):
  for name in ("identity", "noise", "mixed"):
    for key in MAIN:
      assert isinstance(scores[name][key], float) and np.isfinite(scores[name][key]), (name, key)
    assert all(k.startswith("eval/") for k in scores[name])


def test_true_factors_score_near_maximum(scores):
  s = scores["identity"]
  assert s["eval/betavae_score"] >= 0.97
  assert s["eval/factorvae_score"] >= 0.97
  assert s["eval/mig"] > 0.9
  assert s["eval/dci_disentanglement"] > 0.95
  assert s["eval/dci_completeness"] > 0.95
  assert s["eval/factorvae_num_active_dims"] == 4


def test_noise_scores_near_chance(scores):
  s = scores["noise"]
  chance = 1 / len(SIZES)
  assert abs(s["eval/betavae_score"] - chance) < 0.1
  assert abs(s["eval/factorvae_score"] - chance) < 0.1
  assert s["eval/mig"] < 0.05
  assert s["eval/dci_disentanglement"] < 0.1
  # Noise predicts nothing on held-out points.
  assert s["eval/dci_informativeness_test"] < 0.3


def test_mixed_codes_score_in_between(scores):
  # z2 = f2 + f3 and z3 = f2 - f3 respond alike to f2 and to f3: BetaVAE's |dz| and
  # FactorVAE's variances cannot tell the two apart (half right on 2 of 4
  # factors -> 0.75), each of z2, z3 carries f2 and f3 equally (DCI: 2 codes at
  # 1 - log 2 / log 4 = 0.5, 2 at 1 -> 0.75), and the MI gap of f2 and f3 is ~0
  # (MIG ~0.5). The forest gives z2, z3 a slightly uneven split (DCI ~0.71).
  s = scores["mixed"]
  for key, expected, tol in (("eval/betavae_score", 0.75, 0.08),
                             ("eval/factorvae_score", 0.75, 0.08),
                             ("eval/dci_disentanglement", 0.75, 0.1), ("eval/mig", 0.5, 0.08)):
    assert abs(s[key] - expected) < tol, (key, s[key])
    assert scores["noise"][key] + 0.1 < s[key] < scores["identity"][key] - 0.1, key


def test_small_sizes_are_fast(scores):
  assert scores["seconds"] < 20  # three representations, all four metrics


# ---------------------------------------------------------------- procedural dSprites


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


def test_dsprites_metrics_run_fast():
  gt = dis.ground_truth_from_source(dsprites.DSpritesSource())
  # A fixed linear map of the pixels: enough to exercise rendering and batching.
  w = np.random.default_rng(0).normal(size=(64 * 64, 6)).astype(np.float32) / 64
  shapes = set()

  def represent(x):
    shapes.add(x.shape)
    return x.reshape(len(x), -1) @ w

  sizes = {"num_train": 200, "num_eval": 100, "batch_size": 8, "num_variance_estimate": 200,
           "represent_batch_size": 256}
  start = time.time()
  out = dis.disentanglement_metrics(represent, gt, np.random.default_rng(0), sizes,
                                    dci_importance="forest")
  assert time.time() - start < 20
  assert set(MAIN) <= set(out) and all(np.isfinite(out[k]) for k in MAIN)
  assert shapes == {(256, 64, 64, 1)}  # one shape: a jitted encoder compiles once


# ---------------------------------------------------------------- table ground truth


def _table_source(keep=0.7, seed=0, sizes=(3, 4, 5), duplicates=True):
  """Images that spell out their factors; a random part of the grid, some rows twice."""
  rng = np.random.default_rng(seed)
  grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
  rows = grid[rng.random(len(grid)) < keep]
  if duplicates:
    rows = np.concatenate([rows, rows[:5]])
  rows = rows[rng.permutation(len(rows))]
  image = rows.astype(np.float32).reshape(len(rows), 1, 1, len(sizes))
  src = InMemorySource("table", image, factors=rows, factor_sizes=sizes)
  return src, grid, rows


def _decode(images):
  return images.reshape(images.shape[:-3] + (-1,)).astype(np.int64)


def test_table_ground_truth_samples_real_rows():
  src, grid, rows = _table_source()
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
  src, _, rows = _table_source(keep=0.5, seed=3)
  rng = np.random.default_rng(0)
  table_marginal = np.bincount(rows[:, 2], minlength=5) / len(rows)
  for gt, marginal in ((dis.TableGroundTruth(src), table_marginal),
                       (_synthetic((3, 6, 5)), np.full(5, 0.2))):
    f, _ = gt.sample_with_fixed(2, np.full(4000, 2), rng)
    freq = np.bincount(f[:, 0, 2], minlength=5) / 4000
    np.testing.assert_allclose(freq, marginal, atol=0.03)


def test_table_observations_lookup_and_missing_combination():
  src, grid, rows = _table_source()
  gt = dis.TableGroundTruth(src)
  present = rows[:20]
  np.testing.assert_array_equal(_decode(gt.observations(present)), present)
  missing = next(v for v in grid if not any((v == rows).all(1)))
  with pytest.raises(ValueError, match=r"\[" + ", ".join(map(str, missing)) + r"\]"):
    gt.observations(np.stack([rows[0], missing]))
  with pytest.raises(ValueError, match="no example"):
    gt.observations(np.array([[0, 0, 7]]))  # outside factor_sizes


def test_table_metrics_run():
  src, _, _ = _table_source(keep=0.6, sizes=(4, 5, 6))
  gt = dis.ground_truth_from_source(src)
  ident = dis.disentanglement_metrics(lambda x: x.reshape(len(x), -1), gt,
                                      np.random.default_rng(0), SMALL, dci_importance="forest")
  noise = dis.disentanglement_metrics(_noise_fn(2), gt, np.random.default_rng(0), SMALL,
                                      dci_importance="forest")
  assert ident["eval/betavae_score"] > 0.9 and ident["eval/factorvae_score"] > 0.9
  assert ident["eval/mig"] > 0.7 and ident["eval/dci_disentanglement"] > 0.9
  for key in MAIN:
    assert noise[key] < ident[key] - 0.3, key


def test_no_factors_means_no_ground_truth():
  src = InMemorySource("plain", np.zeros((4, 2, 2, 1), np.float32))
  assert dis.ground_truth_from_source(src) is None


# ---------------------------------------------------------------- constant factors


def test_constant_factors_are_left_out():
  gt = _synthetic((1, 3, 6, 10))  # factor 0 never varies, as dSprites' color
  assert dis.varying_factors(gt) == (1, 2, 3)
  rng = np.random.default_rng(0)
  sizes = dict(SMALL)
  out = dis.disentanglement_metrics(lambda x: np.array(x, np.float64), gt, rng, sizes,
                                    dci_importance="forest")
  assert all(np.isfinite(out[k]) for k in MAIN), out
  assert out["eval/betavae_score"] >= 0.97 and out["eval/factorvae_score"] >= 0.97
  assert out["eval/mig"] > 0.9 and out["eval/dci_disentanglement"] > 0.95
  # The constant code (the constant factor's value) is pruned as collapsed.
  assert out["eval/factorvae_num_active_dims"] == 3
  # Noise: chance among the 3 scored factors, not the 4 nominal ones.
  noise = dis.betavae_score(lambda x: rng.normal(size=(len(x), 4)), gt, rng, num_train=900,
                            num_eval=900, batch_size=8)
  assert abs(noise["betavae_score"] - 1 / 3) < 0.07


def test_table_factor_constant_in_the_data_is_left_out():
  rows = np.array([[r, 2, c] for r in range(3) for c in range(4)])  # factor 1 always 2
  src = InMemorySource("t", rows.astype(np.float32).reshape(-1, 1, 1, 3), factors=rows,
                       factor_sizes=(3, 5, 4))
  gt = dis.TableGroundTruth(src)
  assert gt.varying_factors == (0, 2)
  out = dis.disentanglement_metrics(lambda x: x.reshape(len(x), -1), gt,
                                    np.random.default_rng(0), SMALL, dci_importance="forest")
  assert all(np.isfinite(out[k]) for k in MAIN)
  assert out["eval/mig"] > 0.9 and out["eval/betavae_score"] > 0.95


def test_dci_with_the_reference_boosted_trees():
  gt = _synthetic((3, 4, 5))
  rng = np.random.default_rng(0)
  ident = dis.dci_disentanglement(_identity, gt, rng, num_train=150, num_test=50,
                                  importance="gbt")
  mixed = dis.dci_disentanglement(_mixed_first_two, gt, rng, num_train=150, num_test=50,
                                  importance="gbt")
  assert ident["dci_disentanglement"] > 0.95
  # Two of three codes split their importance evenly between two factors:
  # 1/3 * 1 + 2/3 * (1 - log 2 / log 3) = 0.58.
  assert abs(mixed["dci_disentanglement"] - 0.58) < 0.06
  with pytest.raises(ValueError, match="importance"):
    dis.dci_disentanglement(_identity, gt, rng, num_train=50, num_test=10, importance="svm")


# ---------------------------------------------------------------- edge cases


def test_collapsed_codes_give_zero_factorvae():
  gt = _synthetic()
  out = dis.factorvae_score(lambda x: np.full((len(x), 3), 0.5) + 0.01 * x[:, :3], gt,
                            np.random.default_rng(0), num_train=50, num_eval=50,
                            batch_size=8, num_variance_estimate=200)
  # std of 0.01 * f over f uniform in {0, 1, 2} is ~0.008 < 0.05: every dim collapsed.
  assert out == {"factorvae_score": 0.0, "factorvae_train_accuracy": 0.0,
                 "factorvae_num_active_dims": 0.0}


def test_nonfinite_codes_give_nan_and_sizes_are_checked():
  gt = _synthetic()
  out = dis.disentanglement_metrics(lambda x: np.full((len(x), 4), np.nan), gt,
                                    np.random.default_rng(0), SMALL)
  assert all(np.isnan(out[k]) for k in MAIN)
  with pytest.raises(ValueError, match="num_trian"):
    dis.disentanglement_metrics(_identity, gt, np.random.default_rng(0), {"num_trian": 10})
  assert set(dis.default_sizes()) == {"num_train", "num_eval", "batch_size",
                                      "num_variance_estimate", "represent_batch_size"}
  assert dis.default_sizes()["num_train"] == 10000 and dis.default_sizes()["batch_size"] == 64


def test_same_seed_same_scores():
  gt = _synthetic()
  small = dict(SMALL, num_train=150, num_eval=60)
  a = dis.disentanglement_metrics(_mixed, gt, np.random.default_rng(3), small)  # boosted trees
  b = dis.disentanglement_metrics(_mixed, gt, np.random.default_rng(3), small)
  assert a == b


# ---------------------------------------------------------------- in a training run


def test_a_vae_run_on_procedural_dsprites_reports_the_metrics(tmp_path):
  from conftest import set_overrides
  from vaelab import config_base
  from vaelab.training import loop
  c = config_base.base_config()
  config_base.vae_keys(c)
  set_overrides(c, {
      "data.name": "procedural_dsprites", "data.num_eval": 64, "batch_size": 16,
      "num_train_steps": 4, "log_every": 2, "eval_every": 4, "checkpoint_every": 4,
      "model.hidden": (16,), "model.latent_dim": 3, "eval.batch_size": 32,
      "eval.num_pictures": 4, "eval.iwae_ks": (1, 2),
      "eval.disentanglement_num_train": 40, "eval.disentanglement_num_eval": 20,
      "eval.disentanglement_batch_size": 4,
      "eval.disentanglement_num_variance_estimate": 100})
  results = loop.train_and_evaluate(c, str(tmp_path))
  for k in MAIN:
    assert 0.0 <= results[k] <= 1.0, (k, results[k])
  assert results["eval/factorvae_num_active_dims"] <= 3
  c.eval.disentanglement = False
  assert not any(k in loop.evaluate_checkpoint(c, str(tmp_path)) for k in MAIN)


# ---------------------------------------------------------------- the exact boosted trees


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
  out = gbt._partition(arranged, left, lengths)
  for got, seg in zip(np.split(out, np.cumsum(lengths)[:-1]),
                      np.split(arranged, np.cumsum(lengths)[:-1])):
    assert got.tolist() == reference(seg, goes)


# ---------------------------------------------------------------- fixed data vs dlib


def _dlib_mig(mus, ys):
  """disentanglement_lib's _compute_mig(mus (d, n), ys (F, n)), histogram 20 bins."""
  disc = np.zeros_like(mus)
  for i in range(mus.shape[0]):
    disc[i, :] = np.digitize(mus[i, :], np.histogram(mus[i, :], 20)[1][:-1])
  m = np.array([[sk_metrics.mutual_info_score(ys[j, :], disc[i, :]) for j in range(len(ys))]
                for i in range(len(mus))])
  h = np.array([sk_metrics.mutual_info_score(ys[j, :], ys[j, :]) for j in range(len(ys))])
  sorted_m = np.sort(m, axis=0)[::-1]
  return np.mean(np.divide(sorted_m[0, :] - sorted_m[1, :], h)), m


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


def _fixed_data(n, seed=0):
  rng = np.random.default_rng(seed)
  y = np.stack([rng.integers(0, s, n) for s in (2, 3, 5)], axis=1)
  z = np.concatenate([y + 0.4 * rng.normal(size=(n, 3)), rng.normal(size=(n, 2))], axis=1)
  z[:, :3] = z[:, :3] @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0]])
  return z, y


def test_fixed_data_mig_and_dci_are_disentanglement_libs():
  z, y = _fixed_data(600)
  s = dis.scores(codes=z, factors=y, metrics=("mig", "dci"), dci_random_state=3)
  mig, m = _dlib_mig(z.T, y.T)
  assert s.mig.mig == pytest.approx(mig, abs=1e-12)
  np.testing.assert_allclose(s.mig.mutual_information, m, rtol=0, atol=1e-12)
  ref = _dlib_dci(z[:400].T, y[:400].T, z[400:].T, y[400:].T, seed=3)  # 2/3 train, as given
  for key in ("disentanglement", "completeness", "informativeness_train",
              "informativeness_test"):
    assert getattr(s.dci, key) == pytest.approx(ref[key], abs=1e-10), key
  np.testing.assert_allclose(s.dci.importance, ref["importance"], rtol=0, atol=1e-12)
  np.testing.assert_allclose(s.dci.per_code_disentanglement, ref["per_code"], atol=1e-10)


def test_scores_shapes_constant_factor_and_discretizers():
  z, y = _fixed_data(450, seed=1)
  y = np.concatenate([y, np.full((len(y), 1), 7)], axis=1)  # a factor that never varies
  s = dis.scores(codes=z, factors=y, metrics=("mig", "dci"), dci_importance="forest",
                 factor_names=("a", "b", "c", "const"))
  assert s.mig.mutual_information.shape == (5, 4) and s.dci.importance.shape == (5, 4)
  assert s.mig.per_factor.shape == (4,) and s.dci.per_factor_completeness.shape == (4,)
  assert s.dci.per_code_disentanglement.shape == (5,)
  assert s.mig.scored_factors == (0, 1, 2) == s.dci.scored_factors
  assert np.isnan(s.mig.per_factor[3]) and np.isnan(s.dci.importance[:, 3]).all()
  assert s.mig.mig == pytest.approx(np.mean(s.mig.per_factor[:3]))
  # The mutual information is largest on each factor's own code (z_i ~ y_i).
  assert (np.argmax(s.mig.mutual_information[:, :3], axis=0) == [0, 1, 2]).all()
  assert s.factor_names == ("a", "b", "c", "const")
  assert set(s.as_dict()) == {"mig", "dci_disentanglement", "dci_completeness",
                              "dci_informativeness_train", "dci_informativeness_test"}

  bins = dis.quantile_discretize(z, 10)
  counts = np.stack([np.bincount(b, minlength=10) for b in bins.T])
  assert counts.min() >= 44 and counts.max() <= 46  # equal mass: 450 / 10 each
  heavy = z.copy()
  heavy[0, 0] = 1e3  # one outlier: equal widths put nearly everything in one bin
  assert np.bincount(dis.histogram_discretize(heavy, 20)[:, 0]).max() == len(z) - 1
  quantile = dis.scores(codes=heavy, factors=y, metrics=("mig",), discretizer="quantile")
  histogram = dis.scores(codes=heavy, factors=y, metrics=("mig",))
  assert quantile.mig.per_factor[0] > histogram.mig.per_factor[0] + 0.2
  with pytest.raises(ValueError, match="discretizer='kmeans'"):
    dis.scores(codes=z, factors=y, metrics=("mig",), discretizer="kmeans")


def test_fixed_data_betavae_factorvae_and_argument_errors():
  rng = np.random.default_rng(0)
  y = np.stack([rng.integers(0, s, 800) for s in (3, 4, 5)], axis=1)
  sizes = {"num_train": 300, "num_eval": 200, "batch_size": 16, "num_variance_estimate": 500}
  ident = dis.scores(codes=y + 0.01 * rng.normal(size=y.shape), factors=y,
                     metrics=("betavae", "factorvae"), sizes=sizes)
  noise = dis.scores(codes=rng.normal(size=y.shape), factors=y,
                     metrics=("betavae", "factorvae"), sizes=sizes)
  assert ident.betavae["betavae_score"] > 0.95 and ident.factorvae["factorvae_score"] > 0.95
  assert noise.betavae["betavae_score"] < 0.55 and noise.factorvae["factorvae_score"] < 0.55
  assert ident.mig is None and ident.dci is None
  with pytest.raises(ValueError, match="either codes= and factors="):
    dis.scores(codes=y, factors=y, represent=_identity, ground_truth=_synthetic())
  with pytest.raises(ValueError, match="either codes= and factors="):
    dis.scores()
  with pytest.raises(ValueError, match="unknown \\['sap'\\]"):
    dis.scores(codes=y, factors=y, metrics=("mig", "sap"))
  with pytest.raises(ValueError, match="dci_importance='svm'"):
    dis.disentanglement_metrics(_identity, _synthetic(), np.random.default_rng(0),
                                dci_importance="svm")


def test_scores_of_a_representation_match_the_flat_metrics():
  gt = _synthetic()
  flat = dis.disentanglement_metrics(_mixed, gt, np.random.default_rng(4), SMALL,
                                     dci_importance="forest")
  s = dis.scores(represent=_mixed, ground_truth=gt, rng=np.random.default_rng(4), sizes=SMALL,
                 dci_importance="forest")
  assert {f"eval/{k}": v for k, v in s.as_dict().items()} == flat
  # z2 = f2 + f3 and z3 = f2 - f3 carry two factors each: their MI rows are split.
  assert s.mig.per_factor[2] < 0.2 and s.mig.per_factor[0] > 0.8
  assert s.dci.per_code_disentanglement[:2].min() > 0.9 > s.dci.per_code_disentanglement[2:].max()


# ---------------------------------------------------------------- factor pictures


def test_factor_of_latent_names_each_latents_factor():
  from vaelab.evaluate import factor_pictures as fp
  mi = np.array([[0.05, 1.2, np.nan], [0.9, 0.1, np.nan], [0.01, 0.02, np.nan],
                 [0.4, 0.5, np.nan]])
  entropy = np.array([1.0, 2.0, np.nan])  # the third factor never varies
  got = fp.factor_of_latent(mi, ("shape", "scale", "color"), entropy, min_value=0.05)
  assert [name for name, _ in got] == ["scale", "shape", None, "shape"]
  # Normalised by the factor's entropy: z3's 0.5 nats of scale (H = 2) is less than its
  # 0.4 of shape (H = 1).
  assert got[0][1] == pytest.approx(0.6) and got[3][1] == pytest.approx(0.4)
  assert fp.factor_of_latent(mi)[0] == ("factor 1", 1.2)  # raw nats without entropies
  assert fp.latent_labels(mi, ("shape", "scale", "color"), entropy, kl=[3.1, 2.0, 0.0, 1.0])[
      0] == "z0: scale (0.60, KL 3.10)"
  with pytest.raises(ValueError, match="2 names for 3"):
    fp.factor_of_latent(mi, ("shape", "scale"))


def test_factor_pictures_write_pngs(tmp_path):
  from vaelab.evaluate import factor_pictures as fp
  rng = np.random.default_rng(0)
  mi = rng.random((6, 5))
  paths = [
      fp.save_mutual_information(mi, str(tmp_path / "mi.png"), dsprites.FACTOR_NAMES[1:],
                                 kl=rng.random(6) * 3, entropy=np.full(5, 1.5)),
      fp.save_metric_curves(
          [{"label": f"beta={b}", "curves": {"eval/mig": [(s, 0.1 * b + 0.01 * s + seed)
                                                          for s in (0, 100, 200)],
                                             "dci_disentanglement": [(100, 0.2), (200, 0.3)]}}
           for b in (1, 4) for seed in (0, 0.02)], str(tmp_path / "curves.png")),
      fp.save_kl_curves([(s, np.minimum(s / 100.0 * np.arange(1, 7), 4.0)) for s in range(0, 500,
                                                                                     50)],
                        str(tmp_path / "kl.png"), labels=fp.latent_labels(mi),
                        capacity=[(s, s / 20.0) for s in range(0, 500, 50)]),
  ]
  # The dict forms a sweep script collects: runs by name grouped into lines, and per-latent
  # KL curves with the factor each latent captures.
  paths.append(fp.save_metric_curves(
      {f"beta={b} seed={s}": {"mig": [(0, 0.1 * b), (100, 0.2 * b + s)]} for b in (1, 4)
       for s in (0, 1)}, str(tmp_path / "curves_dict.png"),
      group=lambda name: name.split(" ")[0]))
  paths.append(fp.save_latent_kl_curves(
      {d: [(s, min(4.0, s * (d + 1) / 100)) for s in range(0, 300, 50)] for d in range(4)},
      str(tmp_path / "kl_dict.png"), {0: "scale", 2: "pos_x"}))
  for p in paths:
    assert os.path.getsize(p) > 5000, p


def test_scores_refuses_a_bad_option_before_sampling():
  calls = []

  def represent(x):
    calls.append(len(x))
    return x

  for kwargs, match in (({"dci_importance": "svm"}, "dci_importance='svm'"),
                        ({"discretizer": "kmeans"}, "discretizer='kmeans'")):
    with pytest.raises(ValueError, match=match):
      dis.scores(represent=represent, ground_truth=_synthetic(), **kwargs)
  assert not calls
