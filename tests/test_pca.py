"""The PCA baseline (vaelab.evaluate.pca): the fast fits against the exact float64 SVD, and the
per-process cache keyed by a source's content."""
import numpy as np
import pytest
import scipy.linalg

from vaelab.data import dsprites
from vaelab.data.base import InMemorySource, SubsetSource
from vaelab.evaluate import pca


def _pooled_dsprites(n, seed):
  """dSprites images averaged over 2x2 blocks: 1,024 pixels, the real data's spectrum (its
  10th and 11th singular values are only 11% apart), and an exact SVD that takes a second."""
  idx = np.random.default_rng(seed).integers(0, dsprites.NUM_IMAGES, n)
  x = dsprites.DSpritesSource().get(idx)["image"][..., 0]
  return x.reshape(n, 32, 2, 32, 2).mean((2, 4)).reshape(n, -1)


@pytest.fixture(scope="module")
def data():
  train, held = _pooled_dsprites(1000, 0), _pooled_dsprites(400, 1)
  return train, held, pca.fit_pca(train, 10)


def _check_fit(fit, exact, held, sse_rtol, max_angle):
  (mean, comps), (mean0, comps0) = fit, exact
  np.testing.assert_allclose(comps @ comps.T, np.eye(len(comps)), atol=1e-10)
  np.testing.assert_allclose(mean, mean0, rtol=1e-6, atol=1e-9)
  sse, sse0 = pca.recon_sse(held, mean, comps).mean(), pca.recon_sse(held, mean0, comps0).mean()
  assert abs(sse - sse0) <= sse_rtol * sse0, (sse, sse0)
  assert scipy.linalg.subspace_angles(comps0.T, comps.T).max() < max_angle


def test_randomized_fit_matches_the_exact_svd(monkeypatch, data):
  train, held, exact = data
  monkeypatch.setattr(pca, "_EXACT_DIM", 0)  # the path of 64x64 images
  # Measured: SSE 7e-7 relative, largest principal angle 2e-4 rad; with 2 power iterations
  # instead of 4: 5e-5 and 1e-2, with none: 0.25 and 0.8.
  _check_fit(pca.fit_pca_fast(train, 10), exact, held, sse_rtol=1e-5, max_angle=1e-2)
  # In place on a float32 copy: the same fit.
  x = train.astype(np.float32)
  _check_fit(pca.fit_pca_fast(x, 10, overwrite=True), exact, held, 1e-5, 1e-2)
  assert abs(x.mean(0)).max() < 1e-5  # centred


def test_covariance_fit_is_the_exact_svd(data):
  train, held, _ = data
  # At least as many images as pixels: the float64 covariance's eigenvectors.
  for cols, k in ((slice(384, 640), 10), (slice(520, 550), 20)):  # middle rows of the images
    x = train[:, cols]
    assert x.shape[0] >= x.shape[1] and x.shape[1] <= pca._EXACT_DIM
    _check_fit(pca.fit_pca_fast(x, k), pca.fit_pca(x, k), held[:, cols], 1e-10, 1e-6)
  # Fewer images than pixels: the exact SVD itself.
  _check_fit(pca.fit_pca_fast(train[:300], 10), pca.fit_pca(train[:300], 10), held, 1e-12, 1e-8)


def test_recon_sse_of_a_known_subspace():
  # A plane in 5-D plus smaller noise along a third axis, the three columns made exactly
  # uncorrelated over the sample: PCA-2 is the plane and leaves each point's noise.
  rng = np.random.default_rng(0)
  cols, _ = np.linalg.qr(rng.standard_normal((500, 3)) - rng.standard_normal((1, 3)))
  cols -= cols.mean(0)
  cols, _ = np.linalg.qr(cols)  # orthonormal and (still) centred
  x = np.zeros((500, 5))
  x[:, 0], x[:, 1], x[:, 3] = 30 * cols[:, 0], 20 * cols[:, 1], cols[:, 2]
  mean, comps = pca.fit_pca_fast(x + 7.0, 2)
  np.testing.assert_allclose(np.abs(comps[:, [0, 1]]), np.eye(2), atol=1e-12)
  np.testing.assert_allclose(pca.recon_sse(x + 7.0, mean, comps), x[:, 3] ** 2, atol=1e-12)


def _source(seed, name="digits", n=300):
  rng = np.random.default_rng(seed)
  return InMemorySource(name, rng.integers(0, 256, (n, 6, 6, 1), dtype=np.uint8))


def test_fits_are_cached_by_content(monkeypatch):
  pca.clear_cache()
  fits = []
  real = pca.fit_pca_fast
  monkeypatch.setattr(pca, "fit_pca_fast", lambda *a, **kw: fits.append(1) or real(*a, **kw))
  train, held = _source(0), _source(1, "held", 50)
  first = pca.pca_recon_sse(train, held, 4)
  # Fresh objects with the same content (a population member, --mode=eval): no refit.
  assert pca.pca_recon_sse(_source(0), _source(1, "held", 50), 4) == first
  assert pca.pca_recon_sse(_source(0), SubsetSource(_source(2, n=100), np.arange(50), "held"),
                           4) != first  # another evaluation set: the same fit
  assert len(fits) == 1
  # Another k, other images under the same name and length, another length: refits.
  pca.pca_recon_sse(train, held, 3)
  pca.pca_recon_sse(_source(5), held, 4)
  pca.pca_recon_sse(_source(0, n=299), held, 4)
  assert len(fits) == 4
  # And the value is the definition's: the exact fit, evaluated on every held-out image.
  x, xe = (s.get(np.arange(len(s)))["image"].reshape(len(s), -1) for s in (train, held))
  assert first == pytest.approx(pca.recon_sse(xe, *pca.fit_pca(x, 4)).mean(), rel=1e-10)
  pca.clear_cache()
