"""The linear baseline every autoencoder is compared with: PCA with as many components as code units."""
from __future__ import annotations

import numpy as np

_MAX_FIT = 20000  # enough for a stable 784-d covariance; keeps the SVD to seconds


def _flat_images(source, limit=None):
  """All images, or a fixed random subset of `limit` (sources may be ordered by class/factor)."""
  idx = np.arange(len(source))
  if limit is not None and len(source) > limit:
    idx = np.sort(np.random.default_rng(0).choice(len(source), limit, replace=False))
  chunks = [idx[i:i + 4096] for i in range(0, idx.size, 4096)]
  return np.concatenate([source.get(c)["image"].reshape(c.size, -1).astype(np.float64)
                         for c in chunks])


def fit_pca(x: np.ndarray, k: int):
  """Mean and the top-k principal directions (k, d) of the rows of x."""
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:k]


def pca_reconstruct(x, mean, components):
  return (x - mean) @ components.T @ components + mean


def pca_recon_sse(train_source, eval_source, k: int, eval_limit=None) -> float:
  """Mean per-image sum of squared errors of the k-component PCA reconstruction."""
  mean, comps = fit_pca(_flat_images(train_source, _MAX_FIT), k)
  x = _flat_images(eval_source, eval_limit)
  return float(np.square(pca_reconstruct(x, mean, comps) - x).sum(1).mean())
