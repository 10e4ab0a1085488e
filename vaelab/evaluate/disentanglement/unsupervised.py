"""Unsupervised scores of the codes alone (disentanglement_lib's `unsupervised_metrics`):
Gaussian total correlation, Gaussian Wasserstein correlation and the mean pairwise mutual
information of the binned codes. All three are 0 for independent codes and grow with the
dependence between them; no factor is used.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from sklearn import metrics as sk_metrics

from vaelab.evaluate.disentanglement import discretize
from vaelab.evaluate.disentanglement.ground_truth import GroundTruth
from vaelab.evaluate.disentanglement.sampling import Represent, NonFiniteCodesError, sample_codes


@dataclasses.dataclass
class UnsupervisedResult:
  """The three scores and what they are made of."""
  gaussian_total_correlation: float
  gaussian_wasserstein_correlation: float
  gaussian_wasserstein_correlation_norm: float  # divided by the total variance
  mutual_info_score: float
  covariance: np.ndarray  # (d, d) of the codes
  mutual_information: np.ndarray  # (d, d) nats between binned codes, 0 on the diagonal


def gaussian_total_correlation(cov: np.ndarray) -> float:
  """KL divergence between N(0, cov) and the product of its marginals, N(0, diag(cov)):
  (sum_i log cov_ii - log det cov) / 2. A code of zero variance (a dead unit) is
  independent of the others and contributes nothing; it is left out rather than taking
  log 0."""
  live = np.flatnonzero(np.diag(cov) > 0)
  cov = cov[np.ix_(live, live)]
  return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
  """Squared 2-Wasserstein distance between N(0, cov) and N(0, diag(cov)):
  2 tr cov - 2 tr (D^1/2 cov D^1/2)^1/2 with D = diag(cov), the trace of the root taken
  as the sum of the square roots of that symmetric matrix's eigenvalues (dlib takes
  `scipy.linalg.sqrtm` of D cov, which has the same eigenvalues but is not symmetric)."""
  root_d = np.sqrt(np.diag(cov))
  eig = np.linalg.eigvalsh(root_d[:, None] * cov * root_d[None, :])
  return float(2 * np.trace(cov) - 2 * np.sum(np.sqrt(np.maximum(eig, 0.0))))


def unsupervised_from_codes(codes: np.ndarray, *, discretizer="histogram",
                            num_bins: int = 20) -> UnsupervisedResult:
  """The unsupervised scores of codes (n, d), as disentanglement_lib's
  `unsupervised_metrics` on them: the Gaussian scores of the codes' covariance, and the
  mean over ordered pairs of distinct codes of their binned (`discretizer`, `num_bins`:
  dlib's 20-bin histogram) mutual information (0 for a single code: no pair)."""
  codes = np.asarray(codes, np.float64)
  if codes.ndim != 2 or len(codes) < 2:
    raise ValueError(f"unsupervised: codes must be (n >= 2, d), got shape {codes.shape}")
  if not np.isfinite(codes).all():
    raise NonFiniteCodesError("unsupervised: the codes are not finite")
  d = codes.shape[1]
  cov = np.cov(codes, rowvar=False).reshape(d, d)
  wasserstein = gaussian_wasserstein_correlation(cov)
  binned = discretize.resolve(discretizer)(codes, num_bins)
  mi = np.zeros((d, d))
  # Mutual information is symmetric: each pair once.
  for i in range(d):
    for j in range(i + 1, d):
      mi[i, j] = mi[j, i] = sk_metrics.mutual_info_score(binned[:, j], binned[:, i])
  total = np.trace(cov)
  return UnsupervisedResult(
      gaussian_total_correlation(cov), wasserstein,
      wasserstein / total if total > 0 else 0.0,
      float(np.sum(mi) / (d * d - d)) if d > 1 else 0.0, cov, mi)


def unsupervised_scores(represent: Represent, ground_truth: GroundTruth,
                        rng: np.random.Generator, *, num_train: int = 10000,
                        discretizer="histogram", num_bins: int = 20,
                        represent_batch_size: int = 256) -> UnsupervisedResult:
  """The unsupervised scores with disentanglement_lib's protocol (unsupervised.gin:
  10,000 points, 20 histogram bins)."""
  _, codes = sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  return unsupervised_from_codes(codes, discretizer=discretizer, num_bins=num_bins)
