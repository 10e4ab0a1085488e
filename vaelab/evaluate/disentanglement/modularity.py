"""Modularity and explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings
With the F-Statistic Loss", Section 3), as disentanglement_lib computes them.

Modularity: a code is modular when its mutual information is concentrated on one factor;
per code 1 - (sum of its squared MI but the largest) / (largest squared MI x (F - 1)),
averaged over codes. Explicitness: per factor, the ROC-AUC (one column per class,
macro-averaged) of a logistic regression from all the standardised codes to the factor,
averaged over factors, on the training and on the test points.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
from sklearn import metrics as sk_metrics
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from vaelab.evaluate.disentanglement import discretize
from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import (Represent, check_codes_factors,
                                                      sample_codes, scored_factors)


@dataclasses.dataclass
class ModularityResult:
  """Modularity, explicitness and their parts (per-factor entries: NaN for a factor that
  does not vary, or, for explicitness, where no class can be told from the others)."""
  modularity: float
  explicitness_train: float
  explicitness_test: float
  per_code_modularity: np.ndarray  # (d,)
  mutual_information: np.ndarray  # (d, F) nats between binned code i and factor j
  per_factor_explicitness_train: np.ndarray  # (F,) ROC-AUC
  per_factor_explicitness_test: np.ndarray  # (F,)
  scored_factors: tuple[int, ...]


def modularity(mutual_information: np.ndarray) -> tuple[float, np.ndarray]:
  """(mean, per-code modularity) of a (d, F) mutual-information matrix, as
  disentanglement_lib's `modularity`. A code with no information scores 0; with one
  factor, every informative code is modular (dlib divides 0 by 0 there)."""
  squared = np.square(mutual_information)
  largest = np.max(squared, axis=1)
  rest = np.sum(squared, axis=1) - largest
  scale = largest * (squared.shape[1] - 1.)
  deviation = np.divide(rest, scale, out=np.zeros_like(rest), where=scale > 0)
  per_code = np.where(largest == 0., 0., 1. - deviation)
  return float(np.mean(per_code)), per_code


def _standardize(codes, mean, std):
  # A constant code (a dead unit) would divide by 0; centred, it is 0 whatever the scale.
  return (codes - mean) / np.where(std > 0, std, 1.0)


def _macro_roc_auc(labels: np.ndarray, classes: np.ndarray, proba: np.ndarray) -> float:
  """ROC-AUC of `proba` (n, classes) against one-hot `labels`, averaged over the class
  columns that hold both a positive and a negative (NaN if none does). With every column
  valid this is dlib's `roc_auc_score(MultiLabelBinarizer().fit_transform(y), proba)`."""
  onehot = (labels[:, None] == classes[None, :]).astype(np.int64)
  counts = onehot.sum(0)
  valid = np.flatnonzero((counts > 0) & (counts < len(labels)))
  if not len(valid):
    return float("nan")
  if len(valid) == 1:
    return float(sk_metrics.roc_auc_score(onehot[:, valid[0]], proba[:, valid[0]]))
  return float(sk_metrics.roc_auc_score(onehot[:, valid], proba[:, valid]))


def _explicitness(x_train, y_train, x_test, y_test) -> tuple[float, float]:
  # dlib's default LogisticRegression (lbfgs, max_iter=100) is kept for its numbers; where
  # it stops short, each factor would warn again.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    model = LogisticRegression().fit(x_train, y_train)
  return (_macro_roc_auc(y_train, model.classes_, model.predict_proba(x_train)),
          _macro_roc_auc(y_test, model.classes_, model.predict_proba(x_test)))


def _nanmean(values: np.ndarray) -> float:
  values = values[np.isfinite(values)]
  return float(np.mean(values)) if len(values) else float("nan")


def modularity_from_codes(codes_train: np.ndarray, factors_train: np.ndarray,
                          codes_test: np.ndarray, factors_test: np.ndarray, *,
                          discretizer="histogram", num_bins: int = 20,
                          candidates: Sequence[int] | None = None) -> ModularityResult:
  """Modularity and explicitness of precomputed codes, as disentanglement_lib's
  `compute_modularity_explicitness` on those codes: the mutual information of the binned
  training codes (`discretizer`, `num_bins`: dlib's histogram with 20 bins) and, per
  factor, a logistic regression on the training codes standardised by their own mean and
  std, scored on both sets. Factors that do not vary in the training points are left out.
  """
  codes_train, factors_train = check_codes_factors(codes_train, factors_train, "modularity")
  codes_test, factors_test = check_codes_factors(codes_test, factors_test, "modularity")
  num_f = factors_train.shape[1]
  keep = scored_factors(factors_train, range(num_f) if candidates is None else candidates)
  if not keep:
    raise ValueError("modularity: no factor varies in the sample")
  binned = discretize.resolve(discretizer)(codes_train, num_bins)
  mi = discretize.mutual_information(binned, factors_train, keep)
  score, per_code = modularity(mi[:, keep])
  mean, std = codes_train.mean(0), codes_train.std(0)
  x_train = _standardize(codes_train, mean, std)
  x_test = _standardize(codes_test, mean, std)
  train, test = np.full(num_f, np.nan), np.full(num_f, np.nan)
  with threadpool_limits(1):  # two BLAS threads spin against each other under load
    for k in keep:
      train[k], test[k] = _explicitness(x_train, factors_train[:, k], x_test, factors_test[:, k])
  return ModularityResult(score, _nanmean(train[keep]), _nanmean(test[keep]), per_code, mi,
                          train, test, tuple(keep))


def modularity_explicitness(represent: Represent, ground_truth: GroundTruth,
                            rng: np.random.Generator, *, num_train: int = 10000,
                            num_test: int = 5000, discretizer="histogram",
                            num_bins: int = 20,
                            represent_batch_size: int = 256) -> ModularityResult:
  """Modularity and explicitness with disentanglement_lib's protocol
  (modularity_explicitness.gin: 10,000 training and 5,000 test points, 20 histogram bins)."""
  f_train, z_train = sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  f_test, z_test = sample_codes(represent, ground_truth, num_test, rng, represent_batch_size)
  return modularity_from_codes(z_train, f_train, z_test, f_test, discretizer=discretizer,
                               num_bins=num_bins, candidates=varying_factors(ground_truth))
