"""The Frechet distance against scipy's sqrtm and closed forms, the FID Inception on random
weights (one compiled program: batches of 2 images of 28x28x1), its converter's mapping and
its weights file's errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.linalg

from vaelab.errors import ConfigError
from vaelab.evaluate import fid, inception

# ------------------------------------------------------------------ Frechet distance


def _scipy_fid(mu1, s1, mu2, s2, eps=1e-6):
  """pytorch-fid's computation: sqrtm of the product, eps * I added where it is not
  finite, the imaginary part dropped."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.isfinite(covmean).all():
    offset = np.eye(len(s1)) * eps
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  covmean = np.real(covmean)
  d = mu1 - mu2
  return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _features(seed, n, d, rank=None):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(rank or d, d))
  return rng.normal(size=(n, rank or d)) @ mix + rng.normal(size=d)


def test_statistics_are_numpys_mean_and_covariance():
  f = _features(0, 40, 5)
  mu, sigma = fid.statistics(f)
  np.testing.assert_allclose(mu, f.mean(0))
  np.testing.assert_allclose(sigma, np.cov(f.T))
  with pytest.raises(ValueError, match="N >= 2"):
    fid.statistics(f[:1])


@pytest.mark.parametrize("n,d", [(500, 4), (300, 16), (2000, 64)])
def test_full_rank_matches_scipy_sqrtm(n, d):
  a, b = _features(1, n, d), 1.3 * _features(2, n, d) + 0.5
  got = fid.distance_of_features(a, b)
  want = _scipy_fid(*fid.statistics(a), *fid.statistics(b))
  np.testing.assert_allclose(got, want, rtol=1e-7)


@pytest.mark.parametrize("n,d,rank", [(10, 32, None), (200, 32, 5), (40, 64, 3)])
def test_rank_deficient_matches_scipy_with_its_offset(n, d, rank):
  """Fewer samples than dimensions, or features in a low-dimensional subspace: singular
  covariances, where scipy's sqrtm of the product needs pytorch-fid's offset (or is inexact
  without it) and the symmetric form needs none."""
  a, b = _features(3, n, d, rank), _features(4, n, d, rank)
  s = fid.statistics(a), fid.statistics(b)
  assert np.linalg.matrix_rank(s[0][1]) < d
  got = fid.frechet_distance(*s[0], *s[1])
  # The offset's own effect on the scipy value, bounded by comparing two offsets.
  want = _scipy_fid(*s[0], *s[1], eps=1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # With explicit offsets both ways the two computations agree closely.
  eps = np.eye(d) * 1e-6
  np.testing.assert_allclose(fid.frechet_distance(s[0][0], s[0][1] + eps, s[1][0], s[1][1] + eps),
                             _scipy_fid(s[0][0], s[0][1] + eps, s[1][0], s[1][1] + eps),
                             rtol=1e-6)


def test_closed_forms():
  rng = np.random.default_rng(5)
  # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  a, b = rng.uniform(0, 2, 6), rng.uniform(0, 2, 6)
  np.testing.assert_allclose(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)),
                             np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2),
                             rtol=1e-10)
  # A set against itself: 0 (to rounding), also when its covariance is singular.
  for f in (_features(6, 100, 8), _features(7, 5, 20)):
    st = fid.statistics(f)
    assert abs(fid.frechet_distance(*st, *st)) < 1e-12 * np.trace(st[1])
  # A constant feature (a dead unit): a zero row and column.
  f, g = _features(8, 50, 4), _features(9, 50, 4)
  f[:, 2] = g[:, 2] = 1.0
  np.testing.assert_allclose(fid.distance_of_features(f, g),
                             fid.distance_of_features(np.delete(f, 2, 1), np.delete(g, 2, 1)),
                             rtol=1e-9)
  assert np.isnan(fid.frechet_distance(mu1, np.diag(a) * np.nan, mu2, np.diag(b)))
  with pytest.raises(ValueError, match="do not match"):
    fid.frechet_distance(mu1, np.diag(a), mu2[:3], np.diag(b[:3]))


# ------------------------------------------------------------------ the Inception network


def _random_weights(seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in inception.shapes().items():
    if name.endswith("/kernel"):
      out[name] = (rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:3]))).astype(np.float32)
    else:
      out[name] = (0.01 * rng.normal(size=shape)).astype(np.float32)
  return out


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("inception") / "w.npz"
  np.savez(path, **_random_weights())
  return str(path)


@functools.lru_cache(maxsize=None)
def _images(seed, n=2):
  return np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype(np.float32)


def test_features_shape(weights_file):
  # Three forward passes of one program (2 images at 299x299), each about a second.
  params = inception.load_weights(weights_file)
  assert sum(v.size for v in params.values()) == 21_768_352  # pytorch-fid's net without fc
  x = _images(0, 3)
  f = inception.features_in_chunks(params, x, chunk=2)
  assert f.shape == (3, inception.DIM) and np.all(np.isfinite(f)) and np.all(f >= 0)
  assert np.std(f, axis=0).max() > 0  # the images differ, so do their features
  # The padded last chunk gives its image's own features.
  np.testing.assert_allclose(f[2:], np.asarray(inception.features(params, x[1:]))[1:],
                             rtol=1e-5, atol=1e-6)


def test_rfid_compares_features_of_images_and_reconstructions(monkeypatch):
  """rFID's bookkeeping, with a stand-in for the network (run above)."""
  calls = []

  def stand_in(params, images, chunk):
    calls.append((params, len(images), chunk))
    return np.asarray(images).reshape(len(images), -1)[:, :6]

  monkeypatch.setattr(inception, "features_in_chunks", stand_in)
  x = np.random.default_rng(1).uniform(size=(9, 4, 4, 1))
  r = np.clip(x + np.random.default_rng(2).normal(0, 0.2, x.shape), 0, 1)
  assert abs(fid.rfid("w", [(x[:5], x[:5]), (x[5:], x[5:])], chunk=3)) < 1e-12
  got = fid.rfid("w", [(x[:5], r[:5]), (x[5:], r[5:])], chunk=3)
  np.testing.assert_allclose(got, fid.distance_of_features(x.reshape(9, -1)[:, :6],
                                                           r.reshape(9, -1)[:, :6]), rtol=1e-12)
  assert got > 0.01 and calls[0] == ("w", 5, 3)


def test_preprocess_is_torch_bilinear_without_antialias():
  """torch's interpolate(mode='bilinear', align_corners=False): source coordinate
  (i + 0.5) * in / out - 0.5, clamped at 0, its two neighbours weighted linearly."""
  def torch_resize_1d(n_in, n_out):
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
      src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
      i0 = min(int(np.floor(src)), n_in - 1)
      i1 = min(i0 + 1, n_in - 1)
      t = src - i0
      m[i, i0] += 1 - t
      m[i, i1] += t
    return m

  x = np.random.default_rng(3).uniform(size=(1, 28, 20, 1)).astype(np.float32)
  mh, mw = torch_resize_1d(28, inception.SIZE), torch_resize_1d(20, inception.SIZE)
  want = 2.0 * mh @ x[0, :, :, 0] @ mw.T - 1.0
  got = np.asarray(inception.preprocess(x))
  assert got.shape == (1, inception.SIZE, inception.SIZE, 3)
  for c in range(3):
    np.testing.assert_allclose(got[0, :, :, c], want, atol=1e-5)
  # Downsampling too, without antialiasing as torch (with it the pixels would differ by
  # ~0.1; float32 interpolation weights leave ~1e-5).
  big = np.random.default_rng(4).uniform(size=(1, 512, 400, 3)).astype(np.float32)
  mh, mw = torch_resize_1d(512, inception.SIZE), torch_resize_1d(400, inception.SIZE)
  want = 2.0 * mh @ big[0, :, :, 1] @ mw.T - 1.0
  np.testing.assert_allclose(np.asarray(inception.preprocess(big))[0, :, :, 1], want, atol=1e-4)


def test_converter_folds_batchnorm_and_maps_names():
  rng = np.random.default_rng(0)
  sd = {"fc.weight": np.zeros((1008, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32)}
  for name, (kh, kw, cin, cout, *_) in inception.convolutions().items():
    sd[f"{name}.conv.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
    sd[f"{name}.bn.weight"] = rng.uniform(0.5, 2, cout).astype(np.float32)
    sd[f"{name}.bn.bias"] = rng.normal(size=cout).astype(np.float32)
    sd[f"{name}.bn.running_mean"] = rng.normal(size=cout).astype(np.float32)
    sd[f"{name}.bn.running_var"] = rng.uniform(0.1, 3, cout).astype(np.float32)
    sd[f"{name}.bn.num_batches_tracked"] = np.array(0)
  out = inception.convert_state_dict(sd)
  assert {k: v.shape for k, v in out.items()} == inception.shapes()
  # The folded convolution is the convolution followed by BatchNorm, at one output pixel.
  name = "Mixed_6b.branch7x7_2"  # a (1, 7) kernel: the transposition matters
  w = sd[f"{name}.conv.weight"].astype(np.float64)
  patch = rng.normal(size=(w.shape[1], w.shape[2], w.shape[3]))  # (in, kh, kw)
  conv = np.einsum("oihw,ihw->o", w, patch)
  g, b, m, v = (sd[f"{name}.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
  want = g * (conv - m) / np.sqrt(v + 1e-3) + b
  got = np.einsum("hwio,ihw->o", out[f"{name}/kernel"], patch) + out[f"{name}/bias"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  with pytest.raises(KeyError):
    inception.convert_state_dict({k: v for k, v in sd.items() if not k.startswith("Mixed_7c")})


def test_weight_file_errors(tmp_path, weights_file):
  def error(path):
    with pytest.raises(ConfigError) as e:
      inception.check_weights(path)
    msg = str(e.value)
    assert "eval.inception_weights" in msg and "convert_inception_weights.py" in msg
    return msg

  assert "no file given" in error("")
  assert "no such file" in error(str(tmp_path / "absent.npz"))
  (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
  assert "unreadable" in error(str(tmp_path / "bad.npz"))
  w = _random_weights()
  del w["Mixed_7c.branch_pool/bias"]
  np.savez(tmp_path / "missing.npz", **w)
  assert "'Mixed_7c.branch_pool/bias' missing" in error(str(tmp_path / "missing.npz"))
  w = _random_weights()
  w["Conv2d_1a_3x3/kernel"] = w["Conv2d_1a_3x3/kernel"].transpose(3, 2, 1, 0)
  np.savez(tmp_path / "shape.npz", **w)
  assert "'Conv2d_1a_3x3/kernel' has shape (32, 3, 3, 3)" in error(str(tmp_path / "shape.npz"))
  inception.check_weights(weights_file)
