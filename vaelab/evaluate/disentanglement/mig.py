"""Mutual information gap (Chen et al. 2018), discretised as disentanglement_lib."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from sklearn import metrics as sk_metrics

from vaelab.evaluate.disentanglement import discretize
from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import (Represent, check_codes_factors,
                                                      sample_codes, scored_factors)


@dataclasses.dataclass
class MIGResult:
  """MIG and what it is made of. Per-factor arrays have one entry per factor column
  (NaN for a factor that does not vary, which no score includes)."""
  mig: float
  per_factor: np.ndarray  # (F,) (largest - second largest MI) / H(factor)
  mutual_information: np.ndarray  # (d, F) MI in nats between binned code i and factor j
  factor_entropy: np.ndarray  # (F,) in nats
  scored_factors: tuple[int, ...]


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, *, discretizer="histogram",
                   num_bins: int = 20, candidates: Sequence[int] | None = None) -> MIGResult:
  """MIG of precomputed codes (n, d) and their integer factors (n, F), as
  disentanglement_lib's `_compute_mig(mus.T, ys.T)` (its histogram discretizer with 20
  bins by default; `discretizer="quantile"` or a function for another binning)."""
  codes, factors = check_codes_factors(codes, factors, "mig")
  num_f = factors.shape[1]
  keep = scored_factors(factors, range(num_f) if candidates is None else candidates)
  if not keep:
    raise ValueError("mig: no factor varies in the sample")
  binned = discretize.resolve(discretizer)(codes, num_bins)
  mi = discretize.mutual_information(binned, factors, keep)
  entropy = np.full(num_f, np.nan)
  for k in keep:
    entropy[k] = sk_metrics.mutual_info_score(factors[:, k], factors[:, k])
  top = -np.sort(-mi[:, keep], axis=0)
  second = top[1] if len(top) > 1 else np.zeros_like(top[0])
  per_factor = np.full(num_f, np.nan)
  per_factor[keep] = (top[0] - second) / entropy[keep]
  return MIGResult(float(np.mean(per_factor[keep])), per_factor, mi, entropy, tuple(keep))


def mig(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
        num_train: int = 10000, num_bins: int = 20, represent_batch_size: int = 256,
        discretizer="histogram") -> dict[str, float]:
  """Mutual information gap (Chen et al. 2018), discretised as disentanglement_lib.

  Per factor: (largest - second largest) mutual information between a code
  dimension (histogram-discretised into `num_bins`) and the factor, divided by
  the factor's entropy; the mean over factors. Returns {"mig"}.
  """
  factors, codes = sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  result = mig_from_codes(codes, factors, discretizer=discretizer, num_bins=num_bins,
                          candidates=varying_factors(ground_truth))
  return {"mig": result.mig}
