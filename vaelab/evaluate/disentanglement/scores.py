"""All the scores at once: `scores(...)` (structured results), `disentanglement_metrics`
(the flat `eval/` floats a run writes) and the sample sizes they share."""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from vaelab.errors import ConfigError
from vaelab.evaluate.disentanglement import discretize, downstream, fairness
from vaelab.evaluate.disentanglement.beta_vae import betavae_score
from vaelab.evaluate.disentanglement.dci import DCI_IMPORTANCE, DCIResult, dci_from_codes
from vaelab.evaluate.disentanglement.factor_vae import factorvae_score
from vaelab.evaluate.disentanglement.ground_truth import (GroundTruth, codes_ground_truth,
                                                          varying_factors)
from vaelab.evaluate.disentanglement.irs import IRSResult, irs_from_codes
from vaelab.evaluate.disentanglement.mig import MIGResult, mig_from_codes
from vaelab.evaluate.disentanglement.modularity import ModularityResult, modularity_from_codes
from vaelab.evaluate.disentanglement.sampling import (NonFiniteCodesError, Represent,
                                                      check_codes_factors, sample_codes)
from vaelab.evaluate.disentanglement.sap import SAPResult, sap_from_codes
from vaelab.evaluate.disentanglement.unsupervised import (UnsupervisedResult,
                                                          unsupervised_from_codes)

_log = logging.getLogger(__name__)

# In this order each metric gets its child generator: a metric added at the end leaves
# the others' draws as they were. METRICS is the default set (`eval.disentanglement_metrics`
# and `scores`'s); the downstream task and fairness fit boosted trees on every factor at
# several sizes, so they are named when wanted.
METRICS = ("betavae", "factorvae", "mig", "dci", "sap", "modularity", "irs", "unsupervised")
ALL_METRICS = METRICS + ("downstream", "fairness")
# The names each metric always reports (NaN when the representation is not finite).
HEADLINE = {"betavae": ("betavae_score",), "factorvae": ("factorvae_score",), "mig": ("mig",),
            "dci": ("dci_disentanglement",), "sap": ("sap_score",),
            "modularity": ("modularity_score", "explicitness_score_train",
                           "explicitness_score_test"),
            "irs": ("irs",),
            "unsupervised": ("gaussian_total_correlation", "gaussian_wasserstein_correlation",
                             "mutual_info_score"),
            # Their names depend on the sample sizes and the factors: none is promised.
            "downstream": (), "fairness": ()}


def default_sizes() -> dict[str, int]:
  """Sample sizes of disentanglement_lib's metric configs (unsupervised_study_v1).

  num_train:   points to fit each score's classifier / estimate it (every metric; the
               downstream task's training sizes are dlib's 10, 100, 1,000, 10,000 times
               num_train / 10,000, at least 10)
  num_eval:    points to evaluate it (BetaVAE, FactorVAE; the num_test of DCI, SAP,
               Modularity / Explicitness and the downstream task; fairness's 100 points
               per sensitive value times num_eval / 5,000; IRS and the unsupervised scores
               have none)
  batch_size:  observations behind one BetaVAE / FactorVAE point (pairs for BetaVAE)
  num_variance_estimate: observations for FactorVAE's global code variances
  represent_batch_size:  observations per `represent` call (not a protocol constant)
  """
  return {"num_train": 10000, "num_eval": 5000, "batch_size": 64,
          "num_variance_estimate": 10000, "represent_batch_size": 256}


def _checked_sizes(sizes):
  s = default_sizes()
  unknown = set(sizes or {}) - set(s)
  if unknown:
    raise ValueError(f"unknown disentanglement sizes {sorted(unknown)}; expected keys of "
                     f"{sorted(s)}")
  s.update({k: int(v) for k, v in (sizes or {}).items()})
  return s


def _check_metrics(metrics: Sequence[str]) -> None:
  unknown = set(metrics) - set(ALL_METRICS)
  if unknown:
    raise ValueError(f"metrics={tuple(metrics)}: unknown {sorted(unknown)}; expected some of "
                     f"{ALL_METRICS}")


def configured_metrics(config) -> tuple[str, ...]:
  """The metrics `config.eval.disentanglement_metrics` names, each once, in its order; a
  ConfigError naming the key and the allowed names for any other name."""
  names = config.eval.disentanglement_metrics
  names = (names,) if isinstance(names, str) else tuple(names)
  unknown = sorted(set(names) - set(ALL_METRICS))
  if unknown:
    raise ConfigError(f"eval.disentanglement_metrics={names!r}: unknown {unknown}; expected "
                      f"names among {ALL_METRICS}")
  return tuple(dict.fromkeys(names))


def _metric_calls(represent, ground_truth, s, discretizer, num_bins, dci_importance,
                  predictors=downstream.PREDICTORS):
  """Per metric, a function of its generator giving its structured result."""
  rb = s["represent_batch_size"]
  bins = {"discretizer": discretizer, "num_bins": num_bins}

  def train_test(r):
    f_train, z_train = sample_codes(represent, ground_truth, s["num_train"], r, rb)
    f_test, z_test = sample_codes(represent, ground_truth, s["num_eval"], r, rb)
    return z_train, f_train, z_test, f_test

  def mig_call(r):
    factors, codes = sample_codes(represent, ground_truth, s["num_train"], r, rb)
    return mig_from_codes(codes, factors, candidates=varying_factors(ground_truth), **bins)

  def dci_call(r):
    split = train_test(r)
    return dci_from_codes(*split, importance=dci_importance,
                          random_state=int(r.integers(2**31 - 1)),
                          candidates=varying_factors(ground_truth))

  def irs_call(r):
    factors, codes = sample_codes(represent, ground_truth, s["num_train"], r, rb)
    return irs_from_codes(codes, factors, candidates=varying_factors(ground_truth), **bins)

  def unsupervised_call(r):
    _, codes = sample_codes(represent, ground_truth, s["num_train"], r, rb)
    return unsupervised_from_codes(codes, **bins)

  def downstream_call(r):
    return downstream.downstream_task(
        represent, ground_truth, r, train_sizes=downstream.scaled_train_sizes(s["num_train"]),
        num_test=s["num_eval"], predictors=predictors, represent_batch_size=rb)

  def fairness_call(r):
    return fairness.fairness(
        represent, ground_truth, r, num_train=s["num_train"],
        num_test_points_per_class=fairness.scaled_points_per_class(s["num_eval"]),
        represent_batch_size=rb)

  return {
      "betavae": lambda r: betavae_score(
          represent, ground_truth, r, num_train=s["num_train"], num_eval=s["num_eval"],
          batch_size=s["batch_size"], represent_batch_size=rb),
      "factorvae": lambda r: factorvae_score(
          represent, ground_truth, r, num_train=s["num_train"], num_eval=s["num_eval"],
          batch_size=s["batch_size"], num_variance_estimate=s["num_variance_estimate"],
          represent_batch_size=rb),
      "mig": mig_call,
      "dci": dci_call,
      "sap": lambda r: sap_from_codes(*train_test(r), candidates=varying_factors(ground_truth)),
      "modularity": lambda r: modularity_from_codes(
          *train_test(r), candidates=varying_factors(ground_truth), **bins),
      "irs": irs_call,
      "unsupervised": unsupervised_call,
      "downstream": downstream_call,
      "fairness": fairness_call,
  }


@dataclasses.dataclass
class Scores:
  """The scores with their parts: `betavae` / `factorvae` are the dicts of
  `betavae_score` / `factorvae_score`; the others are each metric's result (`MIGResult`,
  `DCIResult`, `SAPResult`, `ModularityResult`, `IRSResult`, `UnsupervisedResult`) with
  its per-factor or per-code values and matrices; `downstream` is {predictor: {dlib key:
  accuracy}} and `fairness` {dlib key: unfairness}. A metric not asked for (or whose
  codes were not finite) is None."""
  betavae: dict | None = None
  factorvae: dict | None = None
  mig: MIGResult | None = None
  dci: DCIResult | None = None
  sap: SAPResult | None = None
  modularity: ModularityResult | None = None
  irs: IRSResult | None = None
  unsupervised: UnsupervisedResult | None = None
  downstream: dict | None = None
  fairness: dict | None = None
  factor_names: tuple[str, ...] | None = None

  def as_dict(self) -> dict[str, float]:
    """The flat floats `disentanglement_metrics` reports (without the eval/ prefix)."""
    out = dict(self.betavae or {})
    out.update(self.factorvae or {})
    if self.mig is not None:
      out["mig"] = self.mig.mig
    if self.dci is not None:
      out.update({"dci_disentanglement": self.dci.disentanglement,
                  "dci_completeness": self.dci.completeness,
                  "dci_informativeness_train": self.dci.informativeness_train,
                  "dci_informativeness_test": self.dci.informativeness_test})
    if self.sap is not None:
      out["sap_score"] = self.sap.sap
    if self.modularity is not None:
      out.update({"modularity_score": self.modularity.modularity,
                  "explicitness_score_train": self.modularity.explicitness_train,
                  "explicitness_score_test": self.modularity.explicitness_test})
    if self.irs is not None:
      out["irs"] = self.irs.irs
    if self.unsupervised is not None:
      u = self.unsupervised
      out.update({"gaussian_total_correlation": u.gaussian_total_correlation,
                  "gaussian_wasserstein_correlation": u.gaussian_wasserstein_correlation,
                  "mutual_info_score": u.mutual_info_score})
    if self.downstream is not None:
      out.update(downstream.flat_names(self.downstream))
    if self.fairness is not None:
      out.update(fairness.flat_names(self.fairness))
    return {k: float(v) for k, v in out.items()}


def _identity(x):
  return x


def scores(*, codes: np.ndarray | None = None, factors: np.ndarray | None = None,
           codes_test: np.ndarray | None = None, factors_test: np.ndarray | None = None,
           represent: Represent | None = None, ground_truth: GroundTruth | None = None,
           rng: np.random.Generator | int | None = None, metrics: Sequence[str] = METRICS,
           discretizer="histogram", num_bins: int = 20, dci_importance: str = "gbt",
           train_fraction: float = 2 / 3, sizes: dict | None = None,
           factor_names: Sequence[str] | None = None,
           dci_random_state: int | None = None,
           downstream_predictors: Sequence[str] = downstream.PREDICTORS) -> Scores:
  """Disentanglement scores of any representation, with their parts.

  Either precomputed `codes` (n, d) and `factors` (n, F) (disentanglement_lib's
  `compute_*_on_fixed_data`), or a `represent` function (a batch of observations ->
  (batch, d) codes) and a `ground_truth` (`ProceduralGroundTruth`, `TableGroundTruth`,
  `ground_truth_from_source(source)`) to sample from with disentanglement_lib's
  protocols and sample sizes (`sizes` overrides `default_sizes()`).

  `metrics` picks among ALL_METRICS: "betavae", "factorvae", "mig", "dci", "sap",
  "modularity" (Modularity and Explicitness), "irs" and "unsupervised" (Gaussian total
  and Wasserstein correlation, mutual-information score), the default METRICS, and
  "downstream" (dlib's downstream_task with `downstream_predictors`, logistic regression
  and boosted trees) and "fairness" (dlib's unfairness scores). On fixed data, MIG, IRS
  and the unsupervised scores use the rows of `codes`; DCI, SAP, Modularity and the
  downstream task (one training size: all of the training rows) train on the rows given
  as `codes` and test on `codes_test`, or, without them, train on the first
  `train_fraction` of the rows and test on the rest (dlib's split_train_test); BetaVAE,
  FactorVAE and fairness draw among the rows (`codes_ground_truth`; fairness needs every
  factor vector it intervenes to, a full grid of factors).
  `discretizer` ("histogram", dlib's equal widths; "quantile", equal mass; or a function
  (codes, num_bins) -> bins) and `num_bins` are those of every metric that bins (MIG,
  Modularity, IRS's factors, the unsupervised mutual information), as dlib's one
  `discretizer` setting is; `dci_importance` is "gbt" (dlib's boosted trees, exact) or
  "forest". `rng` (a Generator or a seed) drives all sampling and, unless
  `dci_random_state` fixes it, the boosted trees' seed (sklearn's `random_state`;
  disentanglement_lib leaves it unseeded); each metric gets its own child generator.

  Example, scoring codes computed elsewhere::

    from vaelab.evaluate import disentanglement
    s = disentanglement.scores(codes=z, factors=y)       # z (n, d) float, y (n, F) int
    s.mig.mig, s.mig.per_factor, s.mig.mutual_information  # float, (F,), (d, F)
    s.dci.disentanglement, s.dci.importance                # float, (d, F)
    s.dci.per_code_disentanglement, s.dci.per_factor_completeness
    s.betavae["betavae_score"], s.factorvae["factorvae_score"]
    s.sap.sap, s.modularity.modularity, s.irs.irs, s.unsupervised.mutual_info_score
    s.as_dict()                                            # every score by its eval/ name
    disentanglement.scores(codes=z, factors=y, metrics=("mig",), discretizer="quantile")

  and a model's encoder on procedural dSprites::

    gt = disentanglement.ground_truth_from_source(vaelab.data.dsprites.DSpritesSource())
    s = disentanglement.scores(represent=lambda x: np.asarray(encode(x)), ground_truth=gt,
                               sizes={"num_train": 2000, "num_eval": 1000})
  """
  _check_metrics(metrics)
  if dci_importance not in DCI_IMPORTANCE:  # refused before any metric runs
    raise ValueError(f"dci_importance={dci_importance!r}: expected one of {DCI_IMPORTANCE}")
  discretize.resolve(discretizer)
  fixed = codes is not None or factors is not None
  if fixed == (represent is not None or ground_truth is not None):
    raise ValueError("scores: give either codes= and factors= (fixed data) or represent= "
                     "and ground_truth= (sampled), not both or neither")
  rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
      0 if rng is None else rng)
  s = _checked_sizes(sizes)
  children = dict(zip(ALL_METRICS, rng.spawn(len(ALL_METRICS))))
  out = Scores(factor_names=tuple(factor_names) if factor_names is not None else
               getattr(ground_truth, "factor_names", None))
  if not fixed:
    if represent is None or ground_truth is None:
      raise ValueError("scores: represent= and ground_truth= go together")
    calls = _metric_calls(represent, ground_truth, s, discretizer, num_bins, dci_importance,
                          downstream_predictors)
    for name in metrics:
      setattr(out, name, calls[name](children[name]))
    return out

  if codes is None or factors is None:
    raise ValueError("scores: codes= and factors= go together")
  codes, factors = check_codes_factors(codes, factors, "scores")
  bins = {"discretizer": discretizer, "num_bins": num_bins}
  if "mig" in metrics:
    out.mig = mig_from_codes(codes, factors, **bins)
  if {"dci", "sap", "modularity", "downstream"} & set(metrics):
    if (codes_test is None) != (factors_test is None):
      raise ValueError("scores: codes_test= and factors_test= go together")
    if codes_test is None:
      if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction}: expected a number in (0, 1)")
      pivot = int(len(codes) * train_fraction)
      split = codes[:pivot], factors[:pivot], codes[pivot:], factors[pivot:]
    else:
      split = (codes, factors) + check_codes_factors(codes_test, factors_test, "scores")
  if "dci" in metrics:
    seed = (int(children["dci"].integers(2**31 - 1)) if dci_random_state is None
            else dci_random_state)
    out.dci = dci_from_codes(*split, importance=dci_importance, random_state=seed)
  if "sap" in metrics:
    out.sap = sap_from_codes(*split)
  if "modularity" in metrics:
    out.modularity = modularity_from_codes(*split, **bins)
  if "irs" in metrics:
    out.irs = irs_from_codes(codes, factors, **bins)
  if "unsupervised" in metrics:
    out.unsupervised = unsupervised_from_codes(codes, **bins)
  if "downstream" in metrics:
    keep = [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1]
    out.downstream = downstream.downstream_from_codes(
        split[0], split[1][:, keep], split[2], split[3][:, keep],
        predictors=downstream_predictors,
        random_state=int(children["downstream"].integers(2**31 - 1)))
  table = [m for m in ("betavae", "factorvae", "fairness") if m in metrics]
  if table:
    gt = codes_ground_truth(codes, factors, factor_names)
    calls = _metric_calls(_identity, gt, s, discretizer, num_bins, dci_importance,
                          downstream_predictors)
    for name in table:
      setattr(out, name, calls[name](children[name]))
  return out


def disentanglement_metrics(represent: Represent, ground_truth: GroundTruth,
                            rng: np.random.Generator, sizes: dict | None = None, *,
                            metrics: Sequence[str] = METRICS, dci_importance: str = "gbt",
                            discretizer="histogram", num_bins: int = 20) -> dict[str, float]:
  """The `metrics` (default: all) and their by-products as a flat dict of `eval/` floats.

  `sizes` overrides entries of `default_sizes()` (an unknown key is an error, as
  a misspelled config key is). Each metric draws from its own child generator,
  so shrinking one metric's sample, or leaving a metric out, does not change the
  others' draws. A model whose codes are not finite gets NaN scores (the HEADLINE
  names) instead of an exception. `dci_importance` ("gbt": disentanglement_lib's
  boosted trees, the default; "forest") and `discretizer` / `num_bins` are as in
  `scores`, which also returns the per-factor values and matrices behind these numbers.
  """
  _check_metrics(metrics)
  if dci_importance not in DCI_IMPORTANCE:
    raise ValueError(f"dci_importance={dci_importance!r}: expected one of {DCI_IMPORTANCE}")
  discretize.resolve(discretizer)
  s = _checked_sizes(sizes)
  calls = _metric_calls(represent, ground_truth, s, discretizer, num_bins, dci_importance)
  children = dict(zip(ALL_METRICS, rng.spawn(len(ALL_METRICS))))
  out = {}
  for name in ALL_METRICS:
    if name not in metrics:
      continue
    try:
      result = Scores(**{name: calls[name](children[name])}).as_dict()
    except NonFiniteCodesError:
      _log.warning("%s: the representation is not finite; reporting NaN", HEADLINE[name][0])
      result = dict.fromkeys(HEADLINE[name], float("nan"))
    out.update({f"eval/{k}": float(v) for k, v in result.items()})
  return out
