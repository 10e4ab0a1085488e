"""Interventional robustness score (Suter et al. 2019, "Robustly Disentangled Causal
Mechanisms: Validating Deep Representations for Interventional Robustness"), as
disentanglement_lib computes it.

Per code and factor: how little the code moves when every other factor changes while
this one is held fixed, measured by the `diff_quantile` quantile of |z - E[z | factor
value]|, averaged over the factor's values and relative to the code's largest deviation
from its mean. A code's score is its best factor's 1 - that ratio; IRS is the mean over
the codes that vary, weighted by their largest deviation.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vaelab.evaluate.disentanglement import discretize
from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import (Represent, check_codes_factors,
                                                      sample_codes, scored_factors)

# disentanglement_lib's default: the 99th percentile instead of the paper's maximum.
DIFF_QUANTILE = 0.99


@dataclasses.dataclass
class IRSResult:
  """IRS and what it is made of, over the codes that vary (`active_codes`) and the
  factors that vary (`scored_factors`)."""
  irs: float
  per_code: np.ndarray  # (active,) best 1 - normalised deviation
  irs_matrix: np.ndarray  # (active, scored factors)
  max_deviations: np.ndarray  # (active,) largest |z - mean z|: the weights
  active_codes: tuple[int, ...]
  scored_factors: tuple[int, ...]


def _robustness(codes: np.ndarray, factors: np.ndarray, diff_quantile: float) -> np.ndarray:
  """(d, F): per factor, the mean over its values of the `diff_quantile` quantile of
  each code's distance to its mean among the points with that value."""
  out = np.zeros((codes.shape[1], factors.shape[1]))
  for j in range(factors.shape[1]):
    values = np.unique(factors[:, j])
    for v in values:
      group = codes[factors[:, j] == v]
      out[:, j] += np.percentile(np.abs(group - np.mean(group, axis=0)),
                                 q=diff_quantile * 100, axis=0)
    out[:, j] /= len(values)
  return out


def irs_from_codes(codes: np.ndarray, factors: np.ndarray, *,
                   diff_quantile: float = DIFF_QUANTILE, discretizer="histogram",
                   num_bins: int = 20, candidates: Sequence[int] | None = None) -> IRSResult:
  """IRS of precomputed codes (n, d) and factors (n, F), as disentanglement_lib's
  `compute_irs` on them: the factors binned by its discretizer (`discretizer`,
  `num_bins`: the histogram with 20 bins), codes of zero variance dropped, 0 when none
  is left. Factors that do not vary in the sample are left out."""
  codes, factors = check_codes_factors(codes, factors, "irs")
  keep = scored_factors(factors, range(factors.shape[1]) if candidates is None else candidates)
  if not keep:
    raise ValueError("irs: no factor varies in the sample")
  active = np.flatnonzero(np.var(codes, axis=0) > 0.)
  if not len(active):
    empty = np.zeros(0)
    return IRSResult(0.0, empty, np.zeros((0, len(keep))), empty, (), tuple(keep))
  binned = discretize.resolve(discretizer)(factors[:, keep], num_bins)
  z = codes[:, active]
  max_deviations = np.max(np.abs(z - z.mean(axis=0)), axis=0)
  matrix = 1.0 - _robustness(z, binned, diff_quantile) / max_deviations[:, None]
  per_code = matrix.max(axis=1)
  score = (np.average(per_code, weights=max_deviations) if np.sum(max_deviations) > 0.
           else np.mean(per_code))
  return IRSResult(float(score), per_code, matrix, max_deviations, tuple(active.tolist()),
                   tuple(keep))


def irs_score(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
              num_train: int = 10000, diff_quantile: float = DIFF_QUANTILE,
              discretizer="histogram", num_bins: int = 20,
              represent_batch_size: int = 256) -> IRSResult:
  """IRS with disentanglement_lib's protocol (its irs.gin: 10,000 points, factors binned
  into a 20-bin histogram)."""
  factors, codes = sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  return irs_from_codes(codes, factors, diff_quantile=diff_quantile, discretizer=discretizer,
                        num_bins=num_bins, candidates=varying_factors(ground_truth))
