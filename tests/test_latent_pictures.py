"""The VAE latent-space pictures: helpers against hand-computed cases, files on disk."""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.image as mpimg
import numpy as np
import pytest

from tests.conftest import tiny_config
from vaelab.data.base import InMemorySource, SourceInfo
from vaelab.evaluate import latent_pictures as lp
from vaelab.models import vae as vae_lib


@functools.lru_cache(maxsize=None)
def _init(latent_dim, image_shape):
  config = tiny_config("vae", "unused", "unused", **{"model.latent_dim": latent_dim})
  model = vae_lib.make_model(config, SourceInfo(image_shape=image_shape))
  # Random weights drawn on the host into the shapes init would give: compiling init costs
  # seconds per model on a busy two-core machine, and these tests need no trained weights.
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, method=lambda m, x: (
      m.generate(m.encode(x)[0]))), jnp.zeros((1, *image_shape)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda s: (rng.normal(size=s.shape) / np.sqrt(s.shape[0] if s.ndim > 1 else 10)).astype(
          s.dtype), shapes)
  return config, model, variables


def _model(latent_dim, image_shape=(8, 8, 1), encoder_bias=None):
  """A tiny MLP VAE and host variables; `encoder_bias` (2D,) with a zero last-layer kernel
  fixes every image's posterior mean and log-variance to known values."""
  config, model, variables = _init(latent_dim, image_shape)
  variables = jax.tree.map(np.copy, variables)
  if encoder_bias is not None:
    last = variables["params"]["encoder"][f"dense_{len(config.model.hidden)}"]
    last["kernel"] = np.zeros_like(last["kernel"])
    last["bias"] = np.asarray(encoder_bias, np.float32)
  return config, model, variables


def _generate(model, variables, z):
  return np.asarray(jax.jit(lambda v, z: model.apply(v, z, method="generate"))(variables, z))


def _source(n, image_shape=(8, 8, 1), labels=True, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.random((n, *image_shape), dtype=np.float32)
  label = rng.integers(0, 3, n) if labels else None
  return InMemorySource("random", image, label, num_classes=3 if labels else None)


def _png_shape(path):
  assert os.path.getsize(path) > 100
  return mpimg.imread(path).shape


def test_kl_per_dim_matches_hand_computation():
  mean = np.array([[1.0, 0.0], [0.0, 0.0]])
  logvar = np.array([[0.0, np.log(2.0)], [0.0, 0.0]])
  # dim 0: (0.5 * (1 + 1 - 0 - 1) + 0) / 2; dim 1: (0.5 * (0 + 2 - log 2 - 1) + 0) / 2
  expected = [0.25, 0.25 * (1 - np.log(2.0))]
  np.testing.assert_allclose(lp.kl_per_dim(mean, logvar), expected, rtol=1e-6)


def test_traversal_order_is_decreasing_kl_with_ties_by_index():
  kl = np.array([0.1, 2.0, 0.5, 2.0, 0.0])
  np.testing.assert_array_equal(lp.traversal_order(kl), [1, 3, 2, 0, 4])
  np.testing.assert_array_equal(lp.traversal_order(kl, 2), [1, 3])


def test_traversal_and_interpolation_latents():
  base = np.array([0.5, -1.0, 2.0])
  z = lp.traversal_latents(base, [2, 0], [-3.0, 0.0, 3.0]).reshape(2, 3, 3)
  np.testing.assert_array_equal(z[0, :, 2], [-3, 0, 3])
  np.testing.assert_array_equal(z[0, :, :2], np.tile(base[:2], (3, 1)))
  np.testing.assert_array_equal(z[1, :, 0], [-3, 0, 3])
  np.testing.assert_array_equal(z[1, :, 1:], np.tile(base[1:], (3, 1)))
  path = lp.interpolation_latents(np.array([[0.0, 0.0]]), np.array([[4.0, -2.0]]), 5)
  np.testing.assert_allclose(path[0], [[0, 0], [1, -0.5], [2, -1], [3, -1.5], [4, -2]])


def test_manifold_latents_are_normal_quantiles_with_z1_growing_upward():
  z = lp.manifold_latents(20).reshape(20, 20, 2)
  np.testing.assert_allclose(z[0, 0], [-1.6448536, 1.6448536], rtol=1e-5)
  np.testing.assert_allclose(z[-1, -1], [1.6448536, -1.6448536], rtol=1e-5)
  assert np.all(np.diff(z[..., 0], axis=1) > 0) and np.all(np.diff(z[..., 0], axis=0) == 0)
  assert np.all(np.diff(z[..., 1], axis=0) < 0) and np.all(np.diff(z[..., 1], axis=1) == 0)


def test_traversal_rows_follow_decreasing_kl(tmp_path, monkeypatch):
  # Zero kernel: every posterior is N(mu, 1) with mu fixed by the bias, so KL_d = mu_d^2 / 2.
  mu = np.array([0.0, 3.0, 1.0, 2.0, 0.5])
  config, model, variables = _model(5, encoder_bias=np.concatenate([mu, np.zeros(5)]))
  seen = {}
  real = lp._save_labelled_rows

  def spy(images, ncols, row_labels, path, title):
    seen.update(images=np.asarray(images), labels=list(row_labels))
    return real(images, ncols, row_labels, path, title)

  monkeypatch.setattr(lp, "_save_labelled_rows", spy)
  lp.save_latent_pictures(config, model, variables, str(tmp_path), _source(20),
                          max_traversal_rows=4)
  dims = [int(s.split()[0][1:]) for s in seen["labels"]]
  kls = [float(s.split()[-1]) for s in seen["labels"]]
  assert dims == [1, 3, 2, 4]
  np.testing.assert_allclose(kls, 0.5 * mu[dims] ** 2, atol=0.005)
  # Row r decodes the base latent with dimension dims[r] swept over the range.
  values = np.linspace(-3, 3, 10)
  expected = _generate(model, variables, lp.traversal_latents(mu, dims, values))
  np.testing.assert_allclose(seen["images"], expected, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_five_dim_latents_write_traversals_and_interpolations_only(tmp_path, channels):
  shape = (8, 8, channels)
  config, model, variables = _model(5, shape)
  paths = lp.save_latent_pictures(config, model, variables, str(tmp_path), _source(40, shape))
  names = sorted(os.path.basename(p) for p in paths)
  assert names == ["interpolations.png", "traversals.png"]
  assert sorted(os.listdir(tmp_path)) == names
  h, w, _ = _png_shape(tmp_path / "traversals.png")
  assert h >= 5 * 9 and w >= 10 * 9  # five rows of ten 8x8 tiles, at least one pixel each
  # 8 pairs x (image, 10 steps, image), 8x8 tiles with one-pixel gaps.
  assert _png_shape(tmp_path / "interpolations.png")[:2] == (8 * 9 + 1, 12 * 9 + 1)


@pytest.mark.parametrize("labels", [True, False])
def test_two_dim_latents_add_manifold_and_scatter(tmp_path, labels):
  config, model, variables = _model(2)
  paths = lp.save_latent_pictures(config, model, variables, str(tmp_path),
                                  _source(64, labels=labels))
  names = {os.path.basename(p) for p in paths}
  assert names == {"traversals.png", "interpolations.png", "manifold.png",
                   "latent_scatter.png"}
  assert all(os.path.exists(p) for p in paths)
  assert _png_shape(tmp_path / "manifold.png")[:2] == (20 * 9 + 1, 20 * 9 + 1)
  h, w, _ = _png_shape(tmp_path / "latent_scatter.png")
  assert h >= 200 and w >= 200
  # The decoded grid is the model's, not a blank canvas.
  tiles = mpimg.imread(tmp_path / "manifold.png")[1:9, 1:9, 0]
  expected = _generate(model, variables, lp.manifold_latents(20)[:1])[0, ..., 0]
  np.testing.assert_allclose(tiles, expected, atol=2 / 255)  # colormap and 8-bit quantization


def test_single_image_source_writes_only_traversals(tmp_path):
  config, model, variables = _model(5)
  paths = lp.save_latent_pictures(config, model, variables, str(tmp_path), _source(1))
  assert [os.path.basename(p) for p in paths] == ["traversals.png"]
  assert os.listdir(tmp_path) == ["traversals.png"]
