"""Tests for vaelab.evaluate.disentanglement's scores: calibration of the scores, all of them
at once (`scores`, `disentanglement_metrics`) and in a training run.

The calibration uses a ground truth whose observations are the factor values
themselves, so the representation is chosen exactly: the true factors (each score
at its maximum), noise (chance), or two factors mixed (a value the protocol fixes:
0.75 for BetaVAE / FactorVAE / DCI, 0.5 for MIG; see `test_mixed_codes_score_in_between`).
"""
from __future__ import annotations

import numpy as np
import pytest

from disentanglement_cases import (MAIN, SIZES, SMALL, fixed_data, identity, mixed, noise_fn,
                                   synthetic, table_source)
from vaelab.data import dsprites
from vaelab.data.base import InMemorySource
from vaelab.errors import ConfigError
from vaelab.evaluate import disentanglement as dis

# The names of the scores added beside MAIN: those in [0, 1], and the unsupervised ones (>= 0).
NEW = ("eval/sap_score", "eval/modularity_score", "eval/explicitness_score_train",
       "eval/explicitness_score_test", "eval/irs")
UNSUPERVISED = ("eval/gaussian_total_correlation", "eval/gaussian_wasserstein_correlation",
                "eval/mutual_info_score")


@pytest.fixture(scope="module")
def scores():
  gt = synthetic()
  # The 20-tree forest keeps this fixture fast; the default boosted trees (exact
  # disentanglement_lib) are checked against sklearn in test_gbt.py.
  return {name: dis.disentanglement_metrics(fn, gt, np.random.default_rng(0), SMALL,
                                            dci_importance="forest")
          for name, fn in (("identity", identity), ("noise", noise_fn(1)), ("mixed", mixed))}


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


# ---------------------------------------------------------------- ground truths


def test_dsprites_metrics_run():
  gt = dis.ground_truth_from_source(dsprites.DSpritesSource())
  # A fixed linear map of the pixels: enough to exercise rendering and batching.
  w = np.random.default_rng(0).normal(size=(64 * 64, 6)).astype(np.float32) / 64
  shapes = set()

  def represent(x):
    shapes.add(x.shape)
    return x.reshape(len(x), -1) @ w

  sizes = {"num_train": 200, "num_eval": 100, "batch_size": 8, "num_variance_estimate": 200,
           "represent_batch_size": 256}
  out = dis.disentanglement_metrics(represent, gt, np.random.default_rng(0), sizes,
                                    dci_importance="forest")
  assert set(MAIN) <= set(out) and all(np.isfinite(out[k]) for k in MAIN)
  assert shapes == {(256, 64, 64, 1)}  # one shape: a jitted encoder compiles once


def test_table_metrics_run():
  src, _, _ = table_source(keep=0.6, sizes=(4, 5, 6))
  gt = dis.ground_truth_from_source(src)
  ident = dis.disentanglement_metrics(lambda x: x.reshape(len(x), -1), gt,
                                      np.random.default_rng(0), SMALL, dci_importance="forest")
  noise = dis.disentanglement_metrics(noise_fn(2), gt, np.random.default_rng(0), SMALL,
                                      dci_importance="forest")
  assert ident["eval/betavae_score"] > 0.9 and ident["eval/factorvae_score"] > 0.9
  assert ident["eval/mig"] > 0.7 and ident["eval/dci_disentanglement"] > 0.9
  for key in MAIN:
    assert noise[key] < ident[key] - 0.3, key


# ---------------------------------------------------------------- constant factors


def test_constant_factors_are_left_out():
  gt = synthetic((1, 3, 6, 10))  # factor 0 never varies, as dSprites' color
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


# ---------------------------------------------------------------- edge cases


def test_nonfinite_codes_give_nan_and_sizes_are_checked():
  gt = synthetic()
  out = dis.disentanglement_metrics(lambda x: np.full((len(x), 4), np.nan), gt,
                                    np.random.default_rng(0), SMALL)
  assert all(np.isnan(out[k]) for k in MAIN)
  assert set(out) == {f"eval/{k}" for names in dis.HEADLINE.values() for k in names}
  assert all(np.isnan(v) for v in out.values())
  with pytest.raises(ValueError, match="num_trian"):
    dis.disentanglement_metrics(identity, gt, np.random.default_rng(0), {"num_trian": 10})
  assert set(dis.default_sizes()) == {"num_train", "num_eval", "batch_size",
                                      "num_variance_estimate", "represent_batch_size"}
  assert dis.default_sizes()["num_train"] == 10000 and dis.default_sizes()["batch_size"] == 64


def test_same_seed_same_scores():
  gt = synthetic()
  small = dict(SMALL, num_train=150, num_eval=60)
  a = dis.disentanglement_metrics(mixed, gt, np.random.default_rng(3), small)  # boosted trees
  b = dis.disentanglement_metrics(mixed, gt, np.random.default_rng(3), small)
  assert a == b


# ---------------------------------------------------------------- in a training run


def test_a_vae_run_on_procedural_dsprites_reports_the_metrics(tmp_path):
  from conftest import set_overrides
  from vaelab import config_base
  from vaelab.models import vae
  from vaelab.training import loop
  from vaelab.training import evaluation
  c = config_base.base_config()
  vae.config_keys(c)
  set_overrides(c, {
      "data.name": "procedural_dsprites", "data.num_eval": 64, "batch_size": 16,
      "num_train_steps": 4, "log_every": 2, "eval_every": 4, "checkpoint_every": 4,
      "model.hidden": (16,), "model.latent_dim": 3, "eval.batch_size": 32,
      "eval.num_pictures": 4, "eval.iwae_ks": (1, 2),
      "eval.disentanglement_num_train": 40, "eval.disentanglement_num_eval": 20,
      "eval.disentanglement_batch_size": 4,
      "eval.disentanglement_num_variance_estimate": 100})
  results = loop.train_and_evaluate(c, str(tmp_path))
  for k in MAIN + NEW:
    assert 0.0 <= results[k] <= 1.0, (k, results[k])
  for k in UNSUPERVISED:
    assert results[k] >= -1e-9, (k, results[k])
  assert results["eval/factorvae_num_active_dims"] <= 3
  c.eval.disentanglement = False
  assert not any(k in evaluation.evaluate_checkpoint(c, str(tmp_path)) for k in MAIN)


# ---------------------------------------------------------------- fixed data


def test_scores_shapes_constant_factor_and_discretizers():
  z, y = fixed_data(450, seed=1)
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
    dis.scores(codes=y, factors=y, represent=identity, ground_truth=synthetic())
  with pytest.raises(ValueError, match="either codes= and factors="):
    dis.scores()
  with pytest.raises(ValueError, match="unknown \\['tcvae'\\]"):
    dis.scores(codes=y, factors=y, metrics=("mig", "tcvae"))
  with pytest.raises(ValueError, match="dci_importance='svm'"):
    dis.disentanglement_metrics(identity, synthetic(), np.random.default_rng(0),
                                dci_importance="svm")


def test_scores_of_a_representation_match_the_flat_metrics():
  gt = synthetic()
  flat = dis.disentanglement_metrics(mixed, gt, np.random.default_rng(4), SMALL,
                                     dci_importance="forest")
  s = dis.scores(represent=mixed, ground_truth=gt, rng=np.random.default_rng(4), sizes=SMALL,
                 dci_importance="forest")
  assert {f"eval/{k}": v for k, v in s.as_dict().items()} == flat
  # z2 = f2 + f3 and z3 = f2 - f3 carry two factors each: their MI rows are split.
  assert s.mig.per_factor[2] < 0.2 and s.mig.per_factor[0] > 0.8
  assert s.dci.per_code_disentanglement[:2].min() > 0.9 > s.dci.per_code_disentanglement[2:].max()


def test_scores_refuses_a_bad_option_before_sampling():
  calls = []

  def represent(x):
    calls.append(len(x))
    return x

  for kwargs, match in (({"dci_importance": "svm"}, "dci_importance='svm'"),
                        ({"discretizer": "kmeans"}, "discretizer='kmeans'")):
    with pytest.raises(ValueError, match=match):
      dis.scores(represent=represent, ground_truth=synthetic(), **kwargs)
  assert not calls


# ---------------------------------------------------------------- every metric, and the config


def test_every_metric_on_fixed_data_by_its_eval_name():
  import vaelab
  z, y = fixed_data(900, seed=2)
  names = ("sap", "modularity", "irs", "unsupervised")
  s = vaelab.disentanglement_scores(codes=z[:600], factors=y[:600], codes_test=z[600:],
                                    factors_test=y[600:], metrics=names)
  assert set(s.as_dict()) == {k[len("eval/"):] for k in NEW + UNSUPERVISED}
  assert s.mig is None and s.sap.score_matrix.shape == (5, 3)
  # The codes carry their factors (z_i ~ y_i): SAP and IRS well above noise's.
  noise = dis.scores(codes=np.random.default_rng(0).normal(size=z.shape), factors=y,
                     metrics=names)
  for key in ("sap_score", "modularity_score", "explicitness_score_test", "irs"):
    assert s.as_dict()[key] > noise.as_dict()[key] + 0.1, key
  # Without codes_test, the first 2/3 of the rows train, as for DCI.
  split = dis.scores(codes=z, factors=y, metrics=("sap",))
  assert split.sap.sap == dis.sap_from_codes(z[:600], y[:600], z[600:], y[600:]).sap


def test_the_configs_metrics_and_the_evaluators_nan_defaults(monkeypatch):
  from conftest import set_overrides
  from vaelab import config_base
  from vaelab.models import vae
  from vaelab.training import experiment as experiment_lib
  c = config_base.base_config()
  vae.config_keys(c)
  assert c.eval.disentanglement_metrics == dis.METRICS
  set_overrides(c, {"data.name": "procedural_dsprites", "data.num_eval": 32, "batch_size": 16,
                    "model.hidden": (16,), "model.latent_dim": 3, "eval.batch_size": 32,
                    "eval.disentanglement_num_train": 40, "eval.disentanglement_num_eval": 20,
                    "eval.disentanglement_metrics": ("sap", "mig", "unsupervised", "sap")})
  exp = experiment_lib.build(c)
  evaluator = exp.evaluator()
  assert evaluator.disentanglement_metrics == ("sap", "mig", "unsupervised")
  # A diverged model: every selected metric's names are reported, as NaN.
  monkeypatch.setattr(evaluator, "_features",
                      lambda state: lambda x: np.full((len(x), 3), np.nan))
  out = evaluator.disentanglement(exp.init_state())
  assert set(out) == {"eval/sap_score", "eval/mig", *UNSUPERVISED}
  assert all(np.isnan(v) for v in out.values())
  c.eval.disentanglement_metrics = ("mig", "hsic")
  with pytest.raises(ConfigError, match="eval.disentanglement_metrics") as e:
    exp.evaluator()
  assert "['hsic']" in str(e.value) and "'unsupervised'" in str(e.value)
