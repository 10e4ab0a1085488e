"""image_quality's final analyses with a stand-in model (identity or blur), its validation,
and probe-FID's classifier, cache and distance on tiny separable data (16x16 images, three
classes: a bright square in one of three places)."""
from __future__ import annotations

import functools

import dm_pix as pix
import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.ndimage

from vaelab import config_base
from vaelab.data.base import InMemorySource
from vaelab.errors import ConfigError
from vaelab.evaluate import fid, image_quality, inception, probe_fid

STEPS = 80


def _data(n, seed, size=16):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 3, n)
  image = rng.uniform(0, 0.3, (n, size, size, 1))
  corners = np.array([[2, 2], [5, 5], [8, 8]])
  for i, c in enumerate(label):
    y, x = corners[c] + rng.integers(-1, 2, 2)
    image[i, y:y + 6, x:x + 6] = rng.uniform(0.7, 1.0)
  return image.astype(np.float32), label


@functools.lru_cache(maxsize=None)
def _sources():
  train, eval_ = _data(400, 0), _data(120, 1)
  return (InMemorySource("squares", train[0], train[1], num_classes=3),
          InMemorySource("squares", eval_[0], eval_[1], num_classes=3))


class StandIn(nn.Module):
  """`reconstruct` returns its input, or its 3x3 box blur (edges repeated)."""
  blur: bool = False

  def __call__(self, x):
    return self.reconstruct(x)

  def reconstruct(self, x):
    if not self.blur:
      return x
    return _box_blur(x)


def _box_blur(x):
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = x.shape[1:3]
  return sum(p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _config(tmp_path, **eval_settings):
  c = config_base.base_config()
  image_quality.config_keys(c)
  c.eval.batch_size = 50  # 120 images: the last batch is padded
  c.eval.probe_fid_steps = STEPS
  c.eval.probe_fid_cache = str(tmp_path / "cache")
  c.eval.update(eval_settings)
  return c


def _blur_np(x, sigma):
  return scipy.ndimage.gaussian_filter(x, (0, sigma, sigma, 0), mode="nearest")


# ------------------------------------------------------------------ final analyses


def test_identity_and_blur_against_dm_pix(tmp_path):
  train, eval_ = _sources()
  config = _config(tmp_path)
  same = image_quality.final_analyses(config, StandIn(), {}, train, eval_)
  assert same["eval/psnr"] == image_quality.PSNR_CAP  # every image's MSE is 0: capped
  np.testing.assert_allclose(same["eval/ssim"], 1.0, atol=1e-6)
  assert abs(same["eval/probe_fid"]) < 1e-6
  assert "eval/rfid" not in same  # no Inception weights given

  blurred = image_quality.final_analyses(config, StandIn(blur=True), {}, train, eval_)
  x = eval_.get(np.arange(len(eval_)))["image"]
  r = np.asarray(_box_blur(jnp.asarray(x)))
  np.testing.assert_allclose(blurred["eval/psnr"], float(jnp.mean(pix.psnr(x, r))), rtol=1e-5)
  np.testing.assert_allclose(blurred["eval/ssim"],
                             float(jnp.mean(pix.ssim(x, r, max_val=1.0))), rtol=1e-5)
  assert blurred["eval/psnr"] < same["eval/psnr"] and blurred["eval/ssim"] < 0.99
  assert blurred["eval/probe_fid"] > 1e-3

  # eval.quality_images scores the first images only; no labels, no probe-FID.
  some = image_quality.final_analyses(_config(tmp_path, quality_images=30),
                                      StandIn(blur=True), {}, train, eval_)
  np.testing.assert_allclose(some["eval/psnr"], float(jnp.mean(pix.psnr(x[:30], r[:30]))),
                             rtol=1e-5)
  unlabelled = InMemorySource("squares", x)
  out = image_quality.final_analyses(_config(tmp_path, probe_fid=True), StandIn(), {},
                                     unlabelled, unlabelled)
  assert set(out) == {"eval/psnr", "eval/ssim"}
  out = image_quality.final_analyses(_config(tmp_path, probe_fid=False), StandIn(), {},
                                     train, eval_)
  assert set(out) == {"eval/psnr", "eval/ssim"}


def test_rfid_with_inception_weights(tmp_path, monkeypatch):
  """The rFID path of the analyses, with a stand-in for the Inception's features (its own
  tests run the network: tests/test_fid.py); the weights file is checked for real."""
  path = tmp_path / "inception.npz"
  np.savez(path, **{k: np.zeros(s, np.float32) for k, s in inception.shapes().items()})
  seen = []

  def stand_in(params, images, chunk):
    seen.append((len(params), chunk))
    return np.asarray(images).reshape(len(images), -1)[:, ::16]

  monkeypatch.setattr(inception, "features_in_chunks", stand_in)
  config = _config(tmp_path, inception_weights=str(path), quality_images=60, probe_fid=False)
  image_quality.validate(config)
  train, eval_ = _sources()
  assert abs(image_quality.final_analyses(config, StandIn(), {}, train, eval_)["eval/rfid"]) < 1e-9
  blurred = image_quality.final_analyses(config, StandIn(blur=True), {}, train, eval_)
  x = eval_.get(np.arange(60))["image"]
  want = fid.distance_of_features(stand_in({}, x, 0), stand_in({}, _box_blur(x), 0))
  np.testing.assert_allclose(blurred["eval/rfid"], want, rtol=1e-6)
  assert seen[0] == (len(inception.shapes()), image_quality.INCEPTION_CHUNK)


def test_validate_names_the_key(tmp_path):
  image_quality.validate(_config(tmp_path))
  cases = [({"inception_weights": str(tmp_path / "absent.npz")}, "eval.inception_weights"),
           ({"probe_fid_steps": 0}, "eval.probe_fid_steps"),
           ({"probe_fid_steps": -3}, "eval.probe_fid_steps"),
           ({"quality_images": -1}, "eval.quality_images")]
  for settings, key in cases:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
      image_quality.validate(_config(tmp_path, **settings))
  # A config without type safety (as one rebuilt from JSON may be) can hold other types.
  for key, value in (("probe_fid", 1), ("probe_fid_cache", None), ("inception_weights", 0)):
    c = ml_collections.ConfigDict(_config(tmp_path).to_dict(), type_safe=False)
    c.eval[key] = value
    with pytest.raises(ConfigError, match=rf"eval\.{key}="):
      image_quality.validate(c)


# ------------------------------------------------------------------ probe-FID


def test_classifier_learns():
  train, _ = _sources()
  params = probe_fid.train_classifier(train, STEPS)
  model = probe_fid.Classifier(3)
  b = train.get(np.arange(len(train)))
  pred = np.argmax(np.asarray(model.apply({"params": params}, b["image"])), -1)
  error = np.mean(pred != b["label"])
  assert error < 0.2  # chance: 2/3


def test_cache_hit_miss_and_key(tmp_path, monkeypatch):
  train, eval_ = _sources()
  identity = {"name": "npz", "train_path": "/a.npz"}
  p1, hit1 = probe_fid.classifier(train, STEPS, str(tmp_path), identity)
  assert not hit1 and len(list(tmp_path.glob("*.msgpack"))) == 1
  assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed

  def no_training(*args, **kwargs):
    raise AssertionError("trained although cached")

  monkeypatch.setattr(probe_fid, "train_classifier", no_training)
  p2, hit2 = probe_fid.classifier(train, STEPS, str(tmp_path), identity)
  assert hit2
  x = eval_.get(np.arange(20))["image"]
  np.testing.assert_array_equal(p1.features(x), p2.features(x))

  # A changed data set, path or step count is another key: it would train again.
  key = probe_fid.cache_key(train, STEPS, identity)
  img, lab = _data(400, 0)
  assert probe_fid.cache_key(InMemorySource("squares", img, lab, num_classes=3), STEPS,
                             identity) == key  # the same contents
  img[0, 0, 0, 0] += 0.5  # the first image is among the hashed ones
  changed = [InMemorySource("squares", img, lab, num_classes=3),
             InMemorySource("squares", img[:-1], lab[:-1], num_classes=3)]
  assert all(probe_fid.cache_key(s, STEPS, identity) != key for s in changed)
  assert probe_fid.cache_key(train, STEPS, {**identity, "train_path": "/b.npz"}) != key
  assert probe_fid.cache_key(train, STEPS + 1, identity) != key
  with pytest.raises(AssertionError, match="trained although cached"):
    probe_fid.classifier(changed[0], STEPS, str(tmp_path), identity)


def test_distance_zero_to_itself_and_grows_with_corruption(tmp_path):
  train, eval_ = _sources()
  probe, _ = probe_fid.classifier(train, STEPS, str(tmp_path))
  x = eval_.get(np.arange(len(eval_)))["image"]
  assert abs(probe_fid.probe_fid(probe, x, x)) < 1e-6
  rng = np.random.default_rng(0)
  noise = rng.normal(size=x.shape).astype(np.float32)
  by_noise = [probe_fid.probe_fid(probe, x, np.clip(x + s * noise, 0, 1))
              for s in (0.05, 0.1, 0.2, 0.4)]
  by_blur = [probe_fid.probe_fid(probe, x, _blur_np(x, s)) for s in (0.5, 1.0, 2.0, 4.0)]
  for d in (by_noise, by_blur):
    assert d[0] > 0 and np.all(np.diff(d) > 0), d
