"""Sparse autoencoder: the Bernoulli KL, the penalty on the global-batch rho_hat, refused
values, and a run whose mean activation is pulled to rho. (That the penalty is the global
batch's, the same on 1 or 4 devices: tests/test_contract.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import sparse_ae as sparse_losses
from vaelab.models import ae, nets, sparse_ae
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (8, 8, 1)


def sparse_config(train, evalp, **overrides):
  overrides = {"model.name": "sparse_ae", "model.hidden": (), "model.latent_dim": 16,
               "model.code_activation": "sigmoid", "model.rho": 0.05,
               "loss.sparsity_weight": 3.0, **overrides}
  return tiny_config("sparse_ae", train, evalp, **overrides)


def _closed_form(rho, q):
  rho, q = np.float64(rho), np.asarray(q, np.float64)
  return rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q))


def test_bernoulli_kl_matches_its_closed_form():
  q = np.array([1e-3, 0.01, 0.05, 0.2, 0.5, 0.9, 0.999], np.float32)
  for rho in (0.05, 0.1, 0.5):
    np.testing.assert_allclose(sparse_losses.bernoulli_kl(rho, q), _closed_form(rho, q), rtol=1e-5,
                               atol=1e-7)
  assert float(sparse_losses.bernoulli_kl(0.05, 0.05)) == pytest.approx(0.0, abs=1e-7)
  # Known value: KL(0.5 || 0.25) = 0.5 ln 2 + 0.5 ln(2/3).
  assert float(sparse_losses.bernoulli_kl(0.5, 0.25)) == pytest.approx(
      0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-6)
  assert np.all(np.asarray(sparse_losses.bernoulli_kl(0.05, jnp.linspace(0.01, 0.99, 50))) >= 0)
  assert np.isfinite(sparse_losses.bernoulli_kl(0.05, jnp.array([0.0, 1.0]))).all()


def test_bernoulli_kl_gradient_matches_finite_differences_and_the_analytic_form():
  rho, q = 0.05, np.array([0.02, 0.05, 0.1, 0.3, 0.7], np.float32)
  grad = np.asarray(jax.grad(lambda v: sparse_losses.sparsity_penalty(rho, v))(jnp.asarray(q)))
  np.testing.assert_allclose(grad, -rho / q + (1 - rho) / (1 - q), rtol=1e-5, atol=1e-6)
  h = 1e-5
  qd = q.astype(np.float64)
  fd = (_closed_form(rho, qd + h) - _closed_form(rho, qd - h)) / (2 * h)
  np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4)
  assert grad[1] == pytest.approx(0.0, abs=1e-5)  # minimum at rho_hat = rho


def _model_params_batch(n=32):
  model = ae.AE(nets.NetSpec(hidden=()), 16, SHAPE, "sigmoid")
  x = jax.random.uniform(jax.random.key(0), (n, *SHAPE))
  params = model.init(jax.random.key(1), x)["params"]
  return model, params, {"image": x}


def test_loss_is_recon_plus_weighted_kl_of_the_batch_mean_activation(npz_pair):
  model, params, batch = _model_params_batch()
  config = sparse_config(*npz_pair)
  hp = {k: jnp.asarray(v) for k, v in sparse_ae.hparams(config).items()}
  assert set(hp) == {"rho", "sparsity_weight"}
  loss_fn = sparse_ae.make_loss(config)
  value, (metrics, _) = loss_fn(model, params, {}, batch, None, hp)
  code = model.apply({"params": params}, batch["image"], method="encode")
  assert code.shape == (32, 16) and float(code.min()) > 0 and float(code.max()) < 1
  rho_hat = np.asarray(code, np.float64).mean(0)
  kl = _closed_form(0.05, rho_hat).sum()
  plain, _ = ae.make_loss(config)(model, params, {}, batch, None, {})
  np.testing.assert_allclose(metrics["sparsity_kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(value, float(plain) + 3.0 * kl, rtol=1e-5)
  np.testing.assert_allclose(metrics["mean_activation"], rho_hat.mean(), rtol=1e-5)
  # Weight 0 is the plain autoencoder, exactly; the weight is an array a population vmaps.
  zero, _ = loss_fn(model, params, {}, batch, None, {**hp, "sparsity_weight": jnp.asarray(0.)})
  assert float(zero) == float(plain)
  weights = jnp.array([0.0, 1.0, 3.0])
  batched = jax.vmap(lambda w: loss_fn(model, params, {}, batch, None,
                                       {**hp, "sparsity_weight": w})[0])(weights)
  np.testing.assert_allclose(batched, float(plain) + np.asarray(weights) * kl, rtol=1e-5)


def test_eval_mean_activation_is_the_mean_code_per_example(npz_pair):
  model, params, batch = _model_params_batch(8)
  config = sparse_config(*npz_pair)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(8))
  out = sparse_ae.make_eval_metrics(config)(model, {"params": params}, batch, keys,
                                            sparse_ae.hparams(config))
  code = model.apply({"params": params}, batch["image"], method="encode")
  np.testing.assert_allclose(out["mean_activation"], code.mean(-1), rtol=1e-6)
  assert {"loss", "recon_sse", "denoise_sse"} <= set(out)
  final = sparse_ae.FAMILY.make_final_eval_metrics(config)(model, {"params": params}, batch, keys, {})
  assert final["jacobian_fro2"].shape == (8,)


@pytest.mark.parametrize("overrides, match", [
    ({"model.rho": 0.0}, r"model\.rho=0\.0"),
    ({"model.rho": 1.0}, r"model\.rho=1\.0"),
    ({"model.rho": 1.5}, r"model\.rho=1\.5"),
    ({"model.rho": -0.05}, r"model\.rho=-0\.05"),
    ({"loss.sparsity_weight": -1.0}, r"loss\.sparsity_weight=-1\.0"),
    ({"model.code_activation": "linear"}, r"model\.code_activation='linear'"),
    ({"eval.noise_level": 1.5}, r"eval\.noise_level=1\.5"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, overrides, match):
  with pytest.raises(ConfigError, match=match):
    validation.validate(sparse_config(*npz_pair, **overrides), num_devices=1)


def test_sparsity_weight_pulls_the_mean_activation_to_rho(npz_pair, tmp_path):
  common = dict(num_train_steps=100, log_every=50, eval_every=100, checkpoint_every=100,
                **{"optimizer.learning_rate": 1e-2, "model.rho": 0.05})
  results = {}
  # Measured: weight 30 gives ~0.055 after 100 steps; weight 0 leaves the units at ~0.66.
  for weight in (0.0, 30.0):
    config = sparse_config(*npz_pair, **common, **{"loss.sparsity_weight": weight})
    results[weight] = loop.train_and_evaluate(config, str(tmp_path / f"w{weight}"))
  assert abs(results[30.0]["eval/mean_activation"] - 0.05) < 0.02, results[30.0]
  assert abs(results[0.0]["eval/mean_activation"] - 0.05) > 0.15, results[0.0]

