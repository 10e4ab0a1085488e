"""SAP score (Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from
Unlabeled Observations", Section 3), as disentanglement_lib computes it.

Per (code i, factor j) a score of how well code i alone predicts factor j: for discrete
factors (disentanglement_lib's setting) the test accuracy of a linear SVM on that one
code; for continuous ones the squared correlation on the training points. Per factor,
the gap between its two best codes; SAP is the mean gap.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import (Represent, check_codes_factors,
                                                      sample_codes, scored_factors)

# disentanglement_lib's classifier: `LinearSVC(C=0.01, class_weight="balanced")`.
SVM_C = 0.01
# A code whose variance is at most this predicts no continuous factor (dlib's guard).
_MIN_VARIANCE = 1e-12


@dataclasses.dataclass
class SAPResult:
  """SAP and what it is made of (per-factor entries: NaN for a factor that does not vary)."""
  sap: float
  per_factor: np.ndarray  # (F,) best minus second-best code's score
  score_matrix: np.ndarray  # (d, F) how well code i alone predicts factor j
  scored_factors: tuple[int, ...]


def _svm_accuracy(code_train, y_train, code_test, y_test) -> float:
  # The seed only matters to liblinear's dual solver; one feature and more points than
  # features select the primal one, so results do not depend on it, and a fixed seed
  # keeps numpy's global generator untouched.
  model = LinearSVC(C=SVM_C, class_weight="balanced", random_state=0)
  model.fit(code_train[:, None], y_train)
  return float(np.mean(model.predict(code_test[:, None]) == y_test))


def _squared_correlation(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """(d, F) cov(z_i, y_j)^2 / (var z_i var y_j), 0 for codes of variance <= 1e-12."""
  n = len(codes)
  zc = codes - codes.mean(0)
  yc = factors - factors.mean(0)
  cov = zc.T @ yc / (n - 1)
  var_z = np.sum(zc * zc, 0) / (n - 1)
  var_y = np.sum(yc * yc, 0) / (n - 1)
  out = np.zeros(cov.shape)
  live = var_z > _MIN_VARIANCE
  out[live] = cov[live] ** 2 / (var_z[live, None] * var_y[None, :])
  return out


def sap_from_codes(codes_train: np.ndarray, factors_train: np.ndarray,
                   codes_test: np.ndarray, factors_test: np.ndarray, *,
                   continuous_factors: bool = False,
                   candidates: Sequence[int] | None = None) -> SAPResult:
  """SAP of precomputed codes, as disentanglement_lib's `_compute_sap(mus_train.T,
  ys_train.T, mus_test.T, ys_test.T, continuous_factors)`.

  With `continuous_factors=False` (dlib's configuration) each score is a linear SVM's
  test accuracy; with True the squared correlation on the training points (the test
  points are then unused). Factors that do not vary in the training points are left out.
  """
  codes_train, factors_train = check_codes_factors(codes_train, factors_train, "sap")
  codes_test, factors_test = check_codes_factors(codes_test, factors_test, "sap")
  num_f = factors_train.shape[1]
  keep = scored_factors(factors_train, range(num_f) if candidates is None else candidates)
  if not keep:
    raise ValueError("sap: no factor varies in the sample")
  d = codes_train.shape[1]
  matrix = np.full((d, num_f), np.nan)
  if continuous_factors:
    matrix[:, keep] = _squared_correlation(codes_train,
                                           factors_train[:, keep].astype(np.float64))
  else:
    with threadpool_limits(1):  # two BLAS threads spin against each other under load
      for k in keep:
        matrix[:, k] = [_svm_accuracy(codes_train[:, i], factors_train[:, k],
                                      codes_test[:, i], factors_test[:, k])
                        for i in range(d)]
  top = np.sort(matrix[:, keep], axis=0)
  # One code: nothing to compete with, its whole score is the gap.
  second = top[-2] if d > 1 else np.zeros(len(keep))
  per_factor = np.full(num_f, np.nan)
  per_factor[keep] = top[-1] - second
  return SAPResult(float(np.mean(per_factor[keep])), per_factor, matrix, tuple(keep))


def sap_score(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
              num_train: int = 10000, num_test: int = 5000, continuous_factors: bool = False,
              represent_batch_size: int = 256) -> SAPResult:
  """SAP with disentanglement_lib's protocol: `num_train` points to fit each code's
  classifier, `num_test` to score it (dlib's sap_score.gin: 10,000 and 5,000, discrete
  factors)."""
  f_train, z_train = sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  f_test, z_test = sample_codes(represent, ground_truth, num_test, rng, represent_batch_size)
  return sap_from_codes(z_train, f_train, z_test, f_test,
                        continuous_factors=continuous_factors,
                        candidates=varying_factors(ground_truth))
