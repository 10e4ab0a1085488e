"""The autoencoder family (vaelab/models/ae.py), whose model, evaluation and baseline every
deterministic autoencoder shares: Hinton's shape and its linear code, the loss and the
evaluation metrics of each likelihood, the exact Jacobian of the final evaluation, the PCA
baseline, and refused values."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vaelab import config_base, validation
from vaelab.data import make_sources
from vaelab.data.base import SourceInfo
from vaelab.errors import ConfigError
from vaelab.evaluate import pca
from vaelab.losses import dae as dae_losses
from vaelab.losses import reconstruction
from vaelab.models import ae
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _config(hidden=(16,), latent=3, **overrides):
  c = config_base.base_config()
  ae.config_keys(c)
  c.model.hidden, c.model.latent_dim = hidden, latent
  return config_base.set_overrides(c, overrides)


def _model(config, shape=(6, 6, 1), n=5):
  model = ae.make_model(config, SourceInfo(shape))
  x = jax.random.uniform(jax.random.key(0), (n, *shape))
  keys = jax.random.split(jax.random.key(1), n)
  return model, model.init(jax.random.key(2), x), x, keys


def test_hinton_autoencoder_shape_and_linear_code():
  config = _config(hidden=(1000, 500, 250), latent=30)
  model = ae.make_model(config, SourceInfo((28, 28, 1)))
  x = jnp.asarray(np.random.default_rng(0).random((2, 28, 28, 1)), jnp.float32)
  params = model.init(jax.random.key(0), x)["params"]
  enc = [params["encoder"][f"dense_{i}"]["kernel"].shape for i in range(4)]
  dec = [params["decoder"]["MLP_0"][f"dense_{i}"]["kernel"].shape for i in range(4)]
  assert enc == [(784, 1000), (1000, 500), (500, 250), (250, 30)]
  assert dec == [(30, 250), (250, 500), (500, 1000), (1000, 784)]
  # A linear code: scaling the last layer's kernel scales the code exactly.
  code = model.apply({"params": params}, x, method="encode")
  p2 = jax.tree.map(lambda a: a, params)
  p2["encoder"]["dense_3"] = {"kernel": 2 * params["encoder"]["dense_3"]["kernel"],
                              "bias": 2 * params["encoder"]["dense_3"]["bias"]}
  np.testing.assert_allclose(model.apply({"params": p2}, x, method="encode"), 2 * code,
                             rtol=1e-5)


@pytest.mark.parametrize("likelihood", ae.LIKELIHOODS)
def test_loss_and_eval_metrics_are_the_likelihood_term_and_squared_errors(likelihood):
  config = _config(**{"model.likelihood": likelihood, "eval.corruption": "salt_pepper",
                      "eval.noise_level": 0.3})
  model, variables, x, keys = _model(config)
  logits = model.apply(variables, x)
  term = np.asarray(reconstruction.nll(likelihood, logits, x))
  sse = np.asarray(reconstruction.sse(jax.nn.sigmoid(logits), x))
  loss, (metrics, _) = ae.make_loss(config)(model, variables["params"], {}, {"image": x}, keys,
                                            {})
  np.testing.assert_allclose(loss, term.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["recon_sse"], sse.mean(), rtol=1e-5)
  out = ae.make_eval_metrics(config)(model, variables, {"image": x}, keys, {})
  np.testing.assert_allclose(out["loss"], term, rtol=1e-5)
  np.testing.assert_allclose(out["recon_sse"], sse, rtol=1e-5)
  # The clean image against the reconstruction of its corruption by eval.corruption.
  noisy = dae_losses.corrupt("salt_pepper", x, 0.3, keys)
  denoised = model.apply(variables, noisy, method="reconstruct")
  np.testing.assert_allclose(out["denoise_sse"], reconstruction.sse(denoised, x), rtol=1e-5)


def test_final_metric_is_the_encoders_exact_jacobian_norm():
  model, variables, x, keys = _model(_config())
  out = ae.make_final_eval_metrics(_config())(model, variables, {"image": x}, keys, {})
  encode = lambda v: model.apply(variables, v[None], method="encode")[0]
  expected = [float(jnp.sum(jnp.square(jax.jacfwd(encode)(xi)))) for xi in x]
  np.testing.assert_allclose(out["jacobian_fro2"], expected, rtol=1e-5)


@pytest.mark.parametrize("key,value", [
    ("model.likelihood", "gaussian"), ("model.code_activation", "tanh"),
    ("eval.corruption", "blur"), ("eval.noise_level", -0.5), ("model.latent_dim", 0)])
def test_bad_values_are_refused_naming_the_key(key, value):
  with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
    validation.validate(_config(**{key: value}), num_devices=1)


def test_autoencoder_reports_the_pca_baseline(npz_pair, tmp_path):
  config = tiny_config("ae", *npz_pair, num_train_steps=5)
  results = loop.train_and_evaluate(config, str(tmp_path / "ae"))
  train, evaluation = make_sources(config.data)
  assert results["eval/pca_recon_sse"] == pytest.approx(
      pca.pca_recon_sse(train, evaluation, config.model.latent_dim), rel=1e-6)
  assert "eval/elbo" not in results
