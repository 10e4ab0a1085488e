"""LPIPS-VGG16 against a direct numpy computation on the same (random) weights, its
invariances, its gradient, the converter's name mapping and the weights file's errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab.errors import ConfigError
from vaelab.losses import lpips

# torchvision's vgg16.features: the positions of its 13 convolutions.
TORCH_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _random_weights(seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in lpips.shapes().items():
    if name.endswith("_kernel"):
      fan_in = shape[0] * shape[1] * shape[2]
      out[name] = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    elif name.endswith("_bias"):
      out[name] = (0.05 * rng.normal(size=shape)).astype(np.float32)
    else:
      out[name] = np.abs(rng.normal(size=shape)).astype(np.float32) / shape[0]
  return out


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("lpips") / "w.npz"
  np.savez(path, **_random_weights())
  return str(path)


@pytest.fixture(scope="module")
def params(weights_file):
  return lpips.load_weights(weights_file)


@functools.lru_cache(maxsize=None)
def _jitted():
  return jax.jit(lpips.distance), jax.jit(jax.grad(lambda p, x, y: lpips.distance(p, x, y).sum(),
                                                   argnums=(1, 2)))


def _images(seed, shape=(2, 32, 32, 3)):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


# ------------------------------------------------------------------ the numpy reference


def _conv3x3(x, k, b):
  """'same' 3x3 cross-correlation of (B, H, W, I) with (3, 3, I, O), written out as the sum
  over the nine taps of shifted images."""
  B, H, W, _ = x.shape
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((B, H, W, k.shape[-1]), np.float64)
  for dy in range(3):
    for dx in range(3):
      out += p[:, dy:dy + H, dx:dx + W, :] @ k[dy, dx].astype(np.float64)
  return out + b


def _maxpool(x):
  B, H, W, C = x.shape
  x = x[:, :H // 2 * 2, :W // 2 * 2]
  return x.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def _reference(w, x, y):
  def taps(img):
    if img.shape[-1] == 1:
      img = np.repeat(img, 3, -1)
    h = ((2.0 * img.astype(np.float64) - 1.0) - lpips.SHIFT) / lpips.SCALE
    out, i = [], 0
    for c in lpips.VGG16:
      if c == "M":
        h = _maxpool(h)
        continue
      h = np.maximum(_conv3x3(h, w[f"conv{i}_kernel"], w[f"conv{i}_bias"]), 0.0)
      if i in lpips.TAPS:
        out.append(h)
      i += 1
    return out

  total = 0.0
  for k, (a, b) in enumerate(zip(taps(x), taps(y))):
    a = a / (np.sqrt((a ** 2).sum(-1, keepdims=True)) + 1e-10)
    b = b / (np.sqrt((b ** 2).sum(-1, keepdims=True)) + 1e-10)
    total = total + (((a - b) ** 2) * w[f"lin{k}"]).sum(-1).mean(axis=(1, 2))
  return total


# ------------------------------------------------------------------ tests


def test_distance_matches_a_direct_numpy_computation(params):
  w = _random_weights()
  x, y = _images(1), _images(2)
  got = np.asarray(_jitted()[0](params, x, y))
  want = _reference(w, x, y)
  assert got.shape == (2,)
  assert np.all(want > 0)
  np.testing.assert_allclose(got, want, rtol=2e-4)


def test_grey_images_are_repeated_to_three_channels(params):
  x, y = _images(3, (2, 32, 32, 1)), _images(4, (2, 32, 32, 1))
  dist = _jitted()[0]
  np.testing.assert_allclose(np.asarray(dist(params, x, y)),
                             np.asarray(dist(params, np.repeat(x, 3, -1), np.repeat(y, 3, -1))),
                             rtol=1e-6)


def test_zero_on_equal_images_and_symmetric(params):
  dist = _jitted()[0]
  x, y = _images(5), _images(6)
  assert np.all(np.asarray(dist(params, x, x)) == 0.0)
  np.testing.assert_allclose(np.asarray(dist(params, x, y)), np.asarray(dist(params, y, x)),
                             rtol=1e-6)


def test_gradient_is_finite_and_agrees_with_finite_differences(params):
  dist, grad = _jitted()
  x, y = _images(7), _images(8)
  gx, gy = grad(params, x, y)
  assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
  assert np.abs(gx).max() > 0 and np.abs(gy).max() > 0
  # The directional derivative along the gradient (|g|), by central differences: ReLU kinks
  # make the function only piecewise smooth, hence the loose tolerance.
  v = np.asarray(gx) / np.linalg.norm(gx)
  h = 1e-2
  fd = (float(dist(params, x + h * v, y).sum()) - float(dist(params, x - h * v, y).sum())) / (2 * h)
  slope = float(np.sum(np.asarray(gx) * v))
  np.testing.assert_allclose(slope, fd, rtol=0.02)
  # At x = y the gradient exists (a minimum): the unit normalisation stays finite.
  g0, _ = grad(params, x, x)
  assert np.all(np.isfinite(g0))


def test_converter_maps_torch_names():
  rng = np.random.default_rng(0)
  vgg, expected = {}, {}
  for i, (j, (name, shape)) in enumerate(zip(TORCH_CONVS, [
      (n, s) for n, s in lpips.shapes().items() if n.endswith("_kernel")])):
    w = rng.normal(size=(shape[3], shape[2], 3, 3)).astype(np.float32)  # OIHW
    b = rng.normal(size=(shape[3],)).astype(np.float32)
    vgg[f"features.{j}.weight"], vgg[f"features.{j}.bias"] = w, b
    expected[f"conv{i}_kernel"], expected[f"conv{i}_bias"] = w.transpose(2, 3, 1, 0), b
  vgg["classifier.0.weight"] = np.zeros((4096, 25088), np.float32)  # ignored
  lin = {}
  for k in range(5):
    c = lpips.shapes()[f"lin{k}"][0]
    lin[f"lin{k}.model.1.weight"] = rng.uniform(size=(1, c, 1, 1)).astype(np.float32)
    expected[f"lin{k}"] = lin[f"lin{k}.model.1.weight"].reshape(-1)
  out = lpips.convert_state_dicts(vgg, lin)
  assert sorted(out) == sorted(lpips.shapes())
  # A NetLinLayer built without dropout names its convolution model.0.
  no_dropout = {k.replace("model.1", "model.0"): v for k, v in lin.items()}
  np.testing.assert_array_equal(lpips.convert_state_dicts(vgg, no_dropout)["lin2"],
                                expected["lin2"])
  with pytest.raises(KeyError):
    lpips.convert_state_dicts(vgg, {k: v for k, v in lin.items() if "lin4" not in k})
  for k, v in expected.items():
    assert out[k].shape == lpips.shapes()[k]
    np.testing.assert_array_equal(out[k], v)
  # A pixel's kernel entry: torch's weight[o, i, dy, dx] is the npz's kernel[dy, dx, i, o].
  assert out["conv3_kernel"][0, 2, 5, 7] == vgg["features.7.weight"][7, 5, 0, 2]


def test_weight_file_errors(tmp_path, weights_file):
  def error(path):
    with pytest.raises(ConfigError) as e:
      lpips.check_weights(path)
    msg = str(e.value)
    assert "loss.lpips_weights" in msg and "convert_lpips_weights.py" in msg
    return msg

  assert "no file given" in error("")
  assert "no such file" in error(str(tmp_path / "absent.npz"))
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz")
  assert "unreadable" in error(str(bad))
  w = _random_weights()
  del w["lin3"]
  np.savez(tmp_path / "missing.npz", **w)
  assert "'lin3' missing" in error(str(tmp_path / "missing.npz"))
  w = _random_weights()
  w["conv4_kernel"] = w["conv4_kernel"][..., :-1]
  np.savez(tmp_path / "shape.npz", **w)
  assert "'conv4_kernel' has shape" in error(str(tmp_path / "shape.npz"))
  lpips.check_weights(weights_file)  # a complete file passes
  with pytest.raises(ValueError, match="at least 16x16"):
    lpips.distance(lpips.load_weights(weights_file), jnp.zeros((1, 8, 8, 1)),
                   jnp.zeros((1, 8, 8, 1)))
