"""The linear baseline every autoencoder is compared with: PCA with as many components as code units.

`pca_recon_sse(train, eval, k)` is the mean per-image sum of squared errors of the k-component
PCA reconstruction of the evaluation images, PCA fitted on (at most 20,000 of) the training
images. Two fits give it, checked against each other in tests/test_pca.py:

  * `fit_pca`: the definition, a float64 SVD of the centred images; on 20,000 64x64 dSprites
    images it was most of a run's time, where the fast fit below gave the same
    eval/pca_recon_sse to 1.4e-7 relative (largest principal angle 7e-5 rad).
  * `fit_pca_fast`, what the evaluation uses. Images of at most _EXACT_DIM pixels (MNIST,
    32x32) get the eigendecomposition of their float64 covariance: exact, and O(n d^2 + d^3)
    is cheap there (fewer images than that: the exact SVD, cheap too). Larger ones get a
    randomized SVD (Halko, Martinsson & Tropp 2011; scikit-learn's `randomized_svd`) of the
    centred float32 images, with power iterations: a few passes over the data instead of an
    O(n d^2) factorization. A float32 covariance
    followed by `eigh` was measured too: its 4096x4096 eigh alone cost more than the whole
    randomized fit.

Every factorization runs on one BLAS thread: on this busy 2-core machine OpenBLAS's threads
spun against each other (a QR and an SVD of the sizes here ran many times slower with two
threads than with one), while the memory-bound passes over the images gain nothing.

A fit depends only on the training images and k, so it is computed once per process and
shared (`_FITS`): a population's members and every evaluation of one run reuse it. A source
is keyed by what identifies its content, not by object identity (each member builds its own
source objects): its name, length, example shape and a hash of a few of its images.
"""
from __future__ import annotations

import collections
import hashlib
import threading

import numpy as np
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

_MAX_FIT = 20000  # enough for a stable covariance of images of a few thousand pixels
_EXACT_DIM = 1024  # up to this many pixels the exact float64 covariance fit is cheap
# Randomized SVD: extra directions and power iterations. With these the reconstruction SSE of
# 64x64 dSprites (k = 10) is the exact fit's to 1.4e-7 relative (2 power iterations: ~5e-5).
_OVERSAMPLES = 20
_POWER_ITERATIONS = 4
_CHUNK = 4096  # images per source.get and per block of the evaluation
_FINGERPRINT_IMAGES = 16

_FITS: collections.OrderedDict = collections.OrderedDict()  # key -> (mean, components)
_SSES: collections.OrderedDict = collections.OrderedDict()  # key -> float
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def _indices(source, limit=None) -> np.ndarray:
  """All indices, or a fixed random subset of `limit` (sources may be ordered by class/factor)."""
  if limit is not None and len(source) > limit:
    return np.sort(np.random.default_rng(0).choice(len(source), limit, replace=False))
  return np.arange(len(source))


def _flat_images(source, limit=None, dtype=np.float32) -> np.ndarray:
  """(n, d) images of `source` (see `_indices`), fetched in bounded chunks."""
  idx = _indices(source, limit)
  out = np.empty((idx.size, int(np.prod(source.info.image_shape))), dtype)
  for i in range(0, idx.size, _CHUNK):
    c = idx[i:i + _CHUNK]
    out[i:i + c.size] = source.get(c)["image"].reshape(c.size, -1)
  return out


def fit_pca(x: np.ndarray, k: int):
  """Mean and the top-k principal directions (k, d) of the rows of x: the exact float64 SVD."""
  x = np.asarray(x, np.float64)
  mean = x.mean(0)
  with threadpool_limits(1):  # see fit_pca_fast
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:k]


def fit_pca_fast(x: np.ndarray, k: int, seed: int = 0, overwrite: bool = False):
  """`fit_pca` at a fraction of its cost: mean (d,) float64 and k orthonormal directions
  (k, d) float64.

  Exact where that is cheap: the eigendecomposition of the float64 covariance for
  d <= _EXACT_DIM <= n, `fit_pca` for n < _EXACT_DIM, and where k is half the rank or more
  (a randomized SVD gains nothing there). Otherwise a randomized SVD of the centred float32
  rows whose random test matrix is drawn from `seed`. overwrite=True lets it centre a float32
  `x` in place (what `fitted` does with the images it fetched: a second 328 MB copy of 20,000
  dSprites images took longer than the SVD).
  """
  n, d = x.shape
  if min(n, d) <= _EXACT_DIM or 2 * k >= min(n, d):
    if n < d:
      return fit_pca(x, k)
    mean = x.mean(0, dtype=np.float64)
    xc = np.asarray(x, np.float64) - mean
    with threadpool_limits(1):
      _, vecs = np.linalg.eigh(xc.T @ xc)  # ascending eigenvalues
    return mean, np.ascontiguousarray(vecs[:, ::-1][:, :k].T)
  mean = x.mean(0, dtype=np.float64)
  if overwrite and x.dtype == np.float32:
    x -= mean.astype(np.float32)
    xc = x
  else:
    xc = np.asarray(x, np.float32) - mean.astype(np.float32)
  with threadpool_limits(1):
    _, _, vt = randomized_svd(xc, k, n_oversamples=_OVERSAMPLES, n_iter=_POWER_ITERATIONS,
                              random_state=seed)
    # Re-orthonormalize in float64: the float32 directions are orthonormal to ~1e-7 only.
    q, _ = np.linalg.qr(vt.astype(np.float64).T)
  return mean, np.ascontiguousarray(q.T)


def pca_reconstruct(x, mean, components):
  return (x - mean) @ components.T @ components + mean


def recon_sse(x: np.ndarray, mean, components) -> np.ndarray:
  """(n,) per-image sums of squared errors of the PCA reconstruction, float64, in blocks."""
  out = np.empty(len(x))
  for i in range(0, len(x), _CHUNK):
    xc = np.asarray(x[i:i + _CHUNK], np.float64) - mean
    r = xc - (xc @ components.T) @ components
    out[i:i + len(xc)] = np.square(r).sum(1)
  return out


def fingerprint(source) -> tuple:
  """What identifies a source's content for the cache: name, length, example shape and a hash
  of _FINGERPRINT_IMAGES images spread over it (first and last included)."""
  n = len(source)
  idx = np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_IMAGES)).astype(np.int64))
  digest = hashlib.sha1(np.ascontiguousarray(source.get(idx)["image"], np.float32).tobytes())
  return (source.name, n, tuple(source.info.image_shape), digest.hexdigest())


def _cached(cache, key, compute):
  with _LOCK:
    if key in cache:
      cache.move_to_end(key)
      return cache[key]
  value = compute()  # outside the lock: a fit is long; a duplicate is harmless
  with _LOCK:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
      cache.popitem(last=False)
  return value


def fitted(train_source, k: int):
  """(mean, components) of `train_source`'s k-component PCA, computed once per process."""
  return _cached(_FITS, (fingerprint(train_source), int(k), _MAX_FIT),
                 lambda: fit_pca_fast(_flat_images(train_source, _MAX_FIT), int(k),
                                              overwrite=True))


def pca_recon_sse(train_source, eval_source, k: int, eval_limit=None) -> float:
  """Mean per-image sum of squared errors of the k-component PCA reconstruction."""
  def compute():
    mean, comps = fitted(train_source, k)
    return float(recon_sse(_flat_images(eval_source, eval_limit), mean, comps).mean())
  key = (fingerprint(train_source), fingerprint(eval_source), int(k), eval_limit)
  return _cached(_SSES, key, compute)


def clear_cache() -> None:
  with _LOCK:
    _FITS.clear()
    _SSES.clear()
