"""The Frechet distance between Gaussians fitted to two sets of features, and rFID.

  d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

pytorch-fid computes the last trace with scipy's `sqrtm` of the non-symmetric product S1 S2,
retrying with eps * I added to both covariances when that is not finite, and drops the
imaginary part rounding leaves. Here the trace is computed from symmetric matrices only:
S1 S2 is similar to S1^(1/2) S2 S1^(1/2) = A^T A with A = S2^(1/2) S1^(1/2), so
tr((S1 S2)^(1/2)) is the sum of A's singular values; the square roots are symmetric ones
(`eigh`, negative rounding clipped to 0). No offset is needed for rank-deficient covariances
(fewer samples than dimensions, constant features), and the result equals pytorch-fid's up
to the eps it adds. Taking singular values of A rather than square roots of the eigenvalues
of A^T A keeps the rounding of directions of near-zero variance from being amplified by a
square root, which would leave the distance of a set from itself well above 0.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from vaelab.evaluate import inception


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mean (D,), covariance (D, D)) of features (N, D), in float64; the covariance with
  N - 1 in the denominator, as numpy's and pytorch-fid's."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"statistics need features (N >= 2, D), got shape {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s):
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (what FID
  reports), >= 0 up to rounding; NaN where an input is not finite."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f"frechet_distance: means {mu1.shape}, {mu2.shape} and covariances "
                     f"{s1.shape}, {s2.shape} do not match")
  if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, s1, s2)):
    return float("nan")
  tr_sqrt = float(np.sum(np.linalg.svd(_psd_sqrt(s2) @ _psd_sqrt(s1), compute_uv=False)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def distance_of_features(a, b) -> float:
  """The Frechet distance between the Gaussians fitted to two feature sets (N, D)."""
  return frechet_distance(*statistics(a), *statistics(b))


def rfid(params, batches: Iterable[tuple[np.ndarray, np.ndarray]], chunk: int = 50) -> float:
  """Reconstruction FID: the Frechet distance between the FID Inception's pool3 features of
  the evaluation images and of their reconstructions. `batches` yields (images,
  reconstructions), both (B, H, W, C) in [0, 1]; `params` are `inception.load_weights`'s.
  Comparable with other papers' rFID only at their image counts and resolutions (the
  estimate is biased upwards at small N)."""
  real, recon = [], []
  for x, r in batches:
    real.append(inception.features_in_chunks(params, x, chunk))
    recon.append(inception.features_in_chunks(params, r, chunk))
  return distance_of_features(np.concatenate(real), np.concatenate(recon))
