"""disentanglement_lib's color, noisy and scream dSprites (vaelab/data/dsprites_variants.py):
the pixels against dlib's formulas, the same images on the host, on the device and on 1 or 4
devices, and a short run scored with every metric."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, xla_flags
from vaelab import config_base
from vaelab.data import dsprites, dsprites_variants as dv
from vaelab.errors import ConfigError

INDICES = np.random.default_rng(0).choice(dsprites.NUM_IMAGES, 256, replace=False)


@pytest.fixture(scope="module")
def scream_file(tmp_path_factory):
  """A 400 x 300 RGB image: shrunk to 350 x 263 as dlib shrinks scream.jpg."""
  path = str(tmp_path_factory.mktemp("scream") / "scream.png")
  rng = np.random.default_rng(1)
  Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
  return path


@pytest.fixture(scope="module")
def sources(scream_file):
  scream = dv.load_scream(scream_file)
  return {name: dv.DSpritesVariantSource(name, scream if name == "scream_dsprites" else None)
          for name in dv.NAMES}


def _draws(indices, shape):
  """The uniforms each image's key gives, drawn here from the bits as U[0, 1) floats."""
  keys = dv.image_keys(jnp.asarray(indices, jnp.int32))
  bits = np.asarray(jax.vmap(lambda k: jax.random.bits(k, shape, jnp.uint32))(keys))
  return (bits >> 9).astype(np.float64) / 2.0**23


def _sprites(indices):
  return np.repeat(dsprites.render(dsprites.index_to_factors(indices)), 3, axis=-1)


def test_load_scream_follows_dlib(scream_file):
  x = dv.load_scream(scream_file)
  assert x.shape == (263, 350, 3) and x.dtype == np.float32
  with Image.open(scream_file) as im:
    im.thumbnail((350, 274))
    np.testing.assert_array_equal(x, (np.asarray(im) / 255.0).astype(np.float32))


def test_color_is_the_sprite_times_a_uniform_colour(sources):
  got = sources["color_dsprites"].get(INDICES)
  assert got["image"].shape == (256, 64, 64, 3)
  np.testing.assert_array_equal(got["factors"], dsprites.index_to_factors(INDICES))
  color = 0.5 + 0.5 * _draws(INDICES, (3,))  # dlib: uniform(0.5, 1, [n, 1, 1, 3])
  expected = _sprites(INDICES) * color[:, None, None, :]
  np.testing.assert_array_equal(got["image"], expected.astype(np.float32))
  # The colours themselves: U(0.5, 1) per channel.
  on = got["image"].max(axis=(1, 2))
  assert 0.5 <= on.min() and on.max() < 1.0
  assert abs(on.mean() - 0.75) < 0.02 and abs(on.std() - 0.5 / np.sqrt(12)) < 0.015


def _lowbias32(x):
  x = x.astype(np.uint64)
  x ^= x >> 16
  x = (x * 0x7FEB352D) % 2**32
  x ^= x >> 15
  x = (x * 0x846CA68B) % 2**32
  return x ^ (x >> 16)


def _noise(indices):
  """Each image's U[0, 1) noise, from the hash of its index and of each pixel (numpy)."""
  image = _lowbias32(np.asarray(indices, np.uint64) + 0x632BE5AB)
  pixel = _lowbias32(np.arange(64 * 64 * 3, dtype=np.uint64) + 0x5BD1E995)
  bits = _lowbias32(image[:, None] ^ pixel[None, :]).reshape(-1, 64, 64, 3)
  return ((bits >> 9).astype(np.float64) / 2.0**23).astype(np.float32)


def test_noisy_is_the_sprite_plus_uniform_noise_clipped(sources):
  got = sources["noisy_dsprites"].get(INDICES)["image"]
  sprite = _sprites(INDICES)
  noise = _noise(INDICES)
  np.testing.assert_array_equal(got, np.minimum(sprite + noise, 1.0))
  background = got[sprite == 0]
  assert abs(background.mean() - 0.5) < 0.005 and abs(background.var() - 1 / 12) < 0.002
  assert (got[sprite == 1] == 1.0).all()
  # Independent across pixels and channels: neighbours and channels uncorrelated.
  flat = noise.reshape(len(INDICES), -1)
  assert abs(np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]) < 0.01
  assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.01
  assert abs(np.corrcoef(flat[:-1].ravel(), flat[1:].ravel())[0, 1]) < 0.01


def test_scream_is_a_crop_mixed_with_a_colour_and_inverted_under_the_sprite(sources,
                                                                            scream_file):
  got = sources["scream_dsprites"].get(INDICES)["image"]
  scream = dv.load_scream(scream_file)
  h, w = scream.shape[:2]
  sprite = _sprites(INDICES)
  keys = dv.image_keys(jnp.asarray(INDICES, jnp.int32))
  split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
  x0 = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (), 0, h - 64))(split[:, 0]))
  y0 = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (), 0, w - 64))(split[:, 1]))
  colour = np.asarray(jax.vmap(lambda k: jax.random.bits(k, (3,), jnp.uint32))(split[:, 2]))
  colour = ((colour >> 9).astype(np.float64) / 2.0**23).astype(np.float32)
  for i in range(len(INDICES)):
    background = (scream[x0[i]:x0[i] + 64, y0[i]:y0[i] + 64] + colour[i]) * np.float32(0.5)
    mask = sprite[i] == 1
    background[mask] = 1 - background[mask]
    np.testing.assert_array_equal(got[i], background, err_msg=str(INDICES[i]))
  # dlib's crops start anywhere in [0, h - 64) x [0, w - 64).
  assert x0.min() >= 0 and x0.max() < h - 64 and y0.max() < w - 64
  assert x0.max() > (h - 64) * 0.8 and y0.max() > (w - 64) * 0.8


@pytest.mark.parametrize("name", dv.NAMES)
def test_device_form_equals_the_host_path(sources, name):
  source = sources[name]
  form = source.device_form()
  got = jax.jit(form.get)(jax.device_put(form.arrays), jnp.asarray(INDICES[:64], jnp.int32))
  host = source.get(INDICES[:64])
  np.testing.assert_array_equal(np.asarray(got["image"]), host["image"])
  np.testing.assert_array_equal(np.asarray(got["factors"]), host["factors"])


def test_an_image_does_not_depend_on_its_batch(sources):
  source = sources["noisy_dsprites"]
  a = source.get(INDICES[:5])["image"]
  b = source.get(np.concatenate([INDICES[5:9], INDICES[:5]]))["image"][4:]
  np.testing.assert_array_equal(a, b)


def test_scream_needs_its_image(tmp_path):
  config = config_base.load_config("configs/beta_vae_dsprites.py:runlocal,data=scream_dsprites")
  from vaelab import validation
  with pytest.raises(ConfigError, match="data.scream_path"):
    validation.validate(config)
  config.data.scream_path = str(tmp_path / "scream.jpg")
  with pytest.raises(ConfigError, match="scream.jpg"):
    validation.validate(config)
  (tmp_path / "scream.jpg").write_bytes(b"not an image")
  with pytest.raises(ConfigError, match="not an image"):
    validation.validate(config)


SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
import jax
from test_dsprites_variants import tiny_config
from vaelab.training import loop
config = tiny_config({name!r}, {scream!r}, evaluate={evaluate!r})
_, state, results, history = loop.train(config, None, evaluate={evaluate!r})
flat = {{"/".join(map(str, p)): np.asarray(v) for p, v in
        jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}}
np.savez({out!r}, **flat)
print(json.dumps({{"devices": jax.device_count(),
                   "losses": [h["train/loss"] for h in history if "train/loss" in h],
                   "results": results or {{}}}}))
"""


def tiny_config(name: str, scream: str, evaluate: bool = False):
  """configs/beta_vae_dsprites.py:runlocal,data=NAME at a few seconds' size."""
  c = config_base.load_config(f"configs/beta_vae_dsprites.py:runlocal,data={name}")
  return config_base.set_overrides(c, {
      "data.scream_path": scream, "batch_size": 8, "num_train_steps": 4, "log_every": 1,
      "eval_every": 10**6, "checkpoint_every": 10**6, "eval.batch_size": 8,
      "model.hidden": (16,), "model.latent_dim": 4, "data.num_eval": 16,
      "eval.num_pictures": 4, "eval.probe_train_size": 16, "eval.iwae_ks": (1,),
      "eval.disentanglement_num_train": 100, "eval.disentanglement_num_eval": 50,
      "eval.disentanglement_num_variance_estimate": 200,
      "eval.disentanglement_batch_size": 8})


def _run(name, scream, devices, out, evaluate=False):
  code = SCRIPT.format(tests=os.path.join(ROOT, "tests"), name=name, scream=scream,
                       evaluate=evaluate, out=out)
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices))
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_scream_run_on_one_and_four_devices_and_every_score(scream_file, tmp_path):
  """The run contract on a variant (1 vs 4 devices, to rounding: the gradient is averaged in
  another order), and the final evaluation's every score."""
  one = _run("scream_dsprites", scream_file, 1, str(tmp_path / "one.npz"), evaluate=True)
  four = _run("scream_dsprites", scream_file, 4, str(tmp_path / "four.npz"))
  assert (one["devices"], four["devices"]) == (1, 4)
  np.testing.assert_allclose(one["losses"], four["losses"], rtol=1e-5)
  with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "four.npz") as b:
    assert a.files == b.files
    for k in a.files:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
  results = one["results"]
  for key in ("eval/betavae_score", "eval/factorvae_score", "eval/mig",
              "eval/dci_disentanglement", "eval/sap_score", "eval/modularity_score",
              "eval/irs", "eval/gaussian_total_correlation", "eval/mutual_info_score"):
    assert key in results and np.isfinite(results[key]), key
