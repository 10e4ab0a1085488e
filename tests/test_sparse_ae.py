"""Sparse autoencoder: the Bernoulli KL, the penalty on the global-batch rho_hat (the same on
1 or 4 devices), refused values, and a run whose mean activation is pulled to rho.

Also runnable as a script (so XLA_FLAGS can set the device count of a fresh process):
  python tests/test_sparse_ae.py TRAIN.npz EVAL.npz NUM_STEPS
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import ROOT, tiny_config  # noqa: E402
from vaelab import validation  # noqa: E402
from vaelab.errors import ConfigError  # noqa: E402
from vaelab.losses import sparse  # noqa: E402
from vaelab.models import ae, nets, sparse_ae  # noqa: E402
from vaelab.train import loop  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (8, 8, 1)


def sparse_config(train, evalp, **overrides):
  overrides = {"model.name": "sparse_ae", "model.hidden": (), "model.latent_dim": 16,
               "model.code_activation": "sigmoid", "model.rho": 0.05,
               "loss.sparsity_weight": 3.0, **overrides}
  return tiny_config("ae", train, evalp, **overrides)


def _closed_form(rho, q):
  rho, q = np.float64(rho), np.asarray(q, np.float64)
  return rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q))


def test_bernoulli_kl_matches_its_closed_form():
  q = np.array([1e-3, 0.01, 0.05, 0.2, 0.5, 0.9, 0.999], np.float32)
  for rho in (0.05, 0.1, 0.5):
    np.testing.assert_allclose(sparse.bernoulli_kl(rho, q), _closed_form(rho, q), rtol=1e-5,
                               atol=1e-7)
  assert float(sparse.bernoulli_kl(0.05, 0.05)) == pytest.approx(0.0, abs=1e-7)
  # Known value: KL(0.5 || 0.25) = 0.5 ln 2 + 0.5 ln(2/3).
  assert float(sparse.bernoulli_kl(0.5, 0.25)) == pytest.approx(
      0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-6)
  assert np.all(np.asarray(sparse.bernoulli_kl(0.05, jnp.linspace(0.01, 0.99, 50))) >= 0)
  assert np.isfinite(sparse.bernoulli_kl(0.05, jnp.array([0.0, 1.0]))).all()


def test_bernoulli_kl_gradient_matches_finite_differences_and_the_analytic_form():
  rho, q = 0.05, np.array([0.02, 0.05, 0.1, 0.3, 0.7], np.float32)
  grad = np.asarray(jax.grad(lambda v: sparse.sparsity_penalty(rho, v))(jnp.asarray(q)))
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
  final = sparse_ae.FAMILY.make_final_metrics(config)(model, {"params": params}, batch, keys, {})
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


def _train_metrics(train, evalp, steps):
  """Per-step train metrics of a tiny sparse-AE run through the shared SPMD step (no
  evaluation or checkpoints: only the step is under test). The weight is large enough for
  the penalty to matter in every step."""
  from vaelab.train import step as step_lib
  config = sparse_config(train, evalp, **{"loss.sparsity_weight": 5.0})
  exp = loop.build(config)
  state = step_lib.replicate(exp.mesh, exp.init_state())
  batcher, out = exp.batcher(), []
  for s in range(steps):
    state, metrics = exp.train_step(state, step_lib.shard_batch(exp.mesh, batcher.batch(s)),
                                    exp.hparams)
    out.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return out


def test_one_and_four_devices_give_the_same_losses(npz_pair):
  """rho_hat is a mean over the global batch (pmean across devices): with a per-device mean
  the KL of the four quarter-batch means differs from the KL of the whole batch's."""
  logs = {}
  for n in (1, 4):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *npz_pair, "5"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == n
    logs[n] = result["metrics"]
  assert len(logs[1]) == len(logs[4]) == 5
  for step, (one, four) in enumerate(zip(logs[1], logs[4])):
    for name in ("loss", "sparsity_kl", "mean_activation"):
      assert four[name] == pytest.approx(one[name], rel=1e-5), (step, name)


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


if __name__ == "__main__":
  train, evalp, steps = sys.argv[1:4]
  print(json.dumps({"devices": jax.device_count(),
                    "metrics": _train_metrics(train, evalp, int(steps))}))
