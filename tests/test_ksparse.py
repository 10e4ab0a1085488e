"""k-sparse autoencoder: exact top-k support, gradients only through kept units, k schedule,
tied decoder, validation by key, and a tiny run that learns and writes filters.png."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, set_overrides
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import ksparse as ksparse_losses
from vaelab.models import ksparse
from vaelab.models.nets import NetSpec
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ks_config(npz_pair, **overrides):
  c = tiny_config("ksparse", *npz_pair, **{"model.hidden": ()})
  c.model.latent_dim, c.model.k, c.model.k_start, c.model.alpha = 16, 3, 8, 2.0
  c.model.tied = False
  return set_overrides(c, overrides)


def _model(tied=False, latent=20, k=3):
  m = ksparse.KSparseAE(NetSpec(hidden=()), latent, (4, 4, 1), k, 2.0, tied)
  x = jax.random.uniform(jax.random.key(0), (5, 4, 4, 1))
  return m, m.init(jax.random.key(1), x), x


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_keeps_exactly_k_largest_per_example(k):
  code = jax.random.normal(jax.random.key(k), (6, 20))
  mask = ksparse_losses.topk_mask(code, jnp.asarray(k), 10)  # traced k under a static bound
  np.testing.assert_array_equal(np.asarray(mask).sum(1), k)
  kept_min = np.where(mask, code, np.inf).min(1)
  dropped_max = np.where(mask, -np.inf, code).max(1)
  assert (kept_min > dropped_max).all()


def test_gradients_are_zero_for_dropped_units():
  m, v, x = _model()
  code = m.apply(v, x, method="dense_code")
  mask = np.asarray(ksparse_losses.topk_mask(code, 3, 3))
  # d(sum of sparse code * random weights)/d(code kernel): column j gets gradient only from
  # the examples that kept unit j.
  w = jax.random.normal(jax.random.key(2), code.shape)
  g = jax.grad(lambda p: jnp.sum(w * m.apply({"params": p}, x, method="encode")))(v["params"])
  never_kept = mask.sum(0) == 0
  assert never_kept.any() and (~never_kept).any()
  np.testing.assert_array_equal(np.asarray(g["code_kernel"])[:, never_kept], 0.0)
  np.testing.assert_array_equal(np.asarray(g["code_bias"])[never_kept], 0.0)
  np.testing.assert_allclose(np.asarray(g["code_bias"]), (np.asarray(w) * mask).sum(0), rtol=1e-6)
  sparse = np.asarray(m.apply(v, x, method="encode"))
  np.testing.assert_array_equal((sparse != 0).sum(1), 3)


def test_loss_decodes_the_k_largest_units_and_trains_only_them():
  code = jax.random.normal(jax.random.key(4), (4, 10))
  x = jax.random.uniform(jax.random.key(5), (4, 2, 2, 1))
  w = jax.random.normal(jax.random.key(6), (10, 4))
  decode = lambda c: (c @ w).reshape(4, 2, 2, 1)
  (value, logits), g = jax.value_and_grad(
      lambda c: ksparse_losses.ksparse_loss("bernoulli", decode, c, x, 3, 5), has_aux=True)(code)
  mask = np.asarray(ksparse_losses.topk_mask(code, 3, 5))
  np.testing.assert_allclose(logits, decode(code * mask), rtol=1e-6)
  assert float(value) == pytest.approx(float(jnp.mean(
      jnp.sum(jax.nn.softplus(logits) - x * logits, (1, 2, 3)))), rel=1e-6)
  np.testing.assert_array_equal(np.asarray(g)[mask == 0], 0.0)
  assert (np.asarray(g)[mask == 1] != 0).all()


def test_k_schedule_at_start_middle_and_end():
  k = lambda s: int(ksparse_losses.k_at_step(s, 25, 100, 1000))
  assert k(0) == 100
  assert k(250) == 62  # halfway down: 100 - 75/2 = 62.5 -> rounds to even
  assert k(500) == 25 and k(999) == 25 and k(1000) == 25
  assert [k(s) for s in range(0, 501, 50)] == sorted([k(s) for s in range(0, 501, 50)],
                                                      reverse=True)
  # Traced: one compiled function serves every step.
  f = jax.jit(lambda s: ksparse_losses.k_at_step(s, 25, 100, 1000))
  assert int(f(0)) == 100 and int(f(500)) == 25


def test_tied_decoder_uses_the_transposed_encoder_kernel():
  m, v, x = _model(tied=True)
  p = v["params"]
  assert set(p) == {"code_kernel", "code_bias", "out_bias"}
  assert p["code_kernel"].shape == (16, 20) and p["out_bias"].shape == (16,)  # pixels, units
  code = jax.random.normal(jax.random.key(3), (5, 20))
  out = m.apply(v, code, method="decode").reshape(5, -1)
  np.testing.assert_allclose(out, code @ p["code_kernel"].T + p["out_bias"], rtol=1e-5, atol=1e-6)
  filters = m.apply(v, method="filters")
  assert filters.shape == (20, 4, 4, 1)
  np.testing.assert_allclose(filters.reshape(20, -1), p["code_kernel"].T, rtol=1e-6)
  # Untied: its own decoder, whose columns the filters are.
  m, v, _ = _model(tied=False)
  assert "out_bias" not in v["params"] and "decoder" in v["params"]
  kernel = v["params"]["decoder"]["MLP_0"]["dense_0"]["kernel"]  # (20 units, 16 pixels)
  np.testing.assert_allclose(m.apply(v, method="filters").reshape(20, -1), kernel, atol=1e-6)


def test_tied_decoder_with_a_trunk_ties_only_the_code_layer():
  m = ksparse.KSparseAE(NetSpec(hidden=(8,)), 20, (4, 4, 1), 3, 2.0, True)
  x = jax.random.uniform(jax.random.key(0), (5, 4, 4, 1))
  v = m.init(jax.random.key(1), x)
  assert v["params"]["code_kernel"].shape == (8, 20) and v["params"]["out_bias"].shape == (8,)
  assert m.apply(v, x).shape == x.shape
  assert m.apply(v, method="filters").shape == (20, 4, 4, 1)


def test_features_keep_alpha_k_units():
  m, v, x = _model(k=3)
  feats = np.asarray(m.apply(v, x, method="features"))
  np.testing.assert_array_equal((feats != 0).sum(1), 6)  # alpha = 2


@pytest.mark.parametrize("key,value,message", [
    ("model.k", 0, "model.k=0"),
    ("model.k", 17, "model.k=17"),
    ("model.k_start", 2, "model.k_start=2"),
    ("model.k_start", 17, "model.k_start=17"),
    ("model.alpha", 0.5, "model.alpha=0.5"),
    ("model.alpha", 6.0, "model.alpha=6.0"),
    ("model.encoder", "conv", "model.encoder='conv'"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, key, value, message):
  config = ks_config(npz_pair, **{key: value})
  with pytest.raises(ConfigError) as e:
    validation.validate(config, num_devices=1)
  assert message in str(e.value)


def test_tiny_run_learns_anneals_k_and_writes_filters(npz_pair, tmp_path):
  config = ks_config(npz_pair, num_train_steps=40, log_every=10, eval_every=40,
                     checkpoint_every=40, **{"optimizer.learning_rate": 3e-3})
  workdir = str(tmp_path / "ks")
  results = loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(l) for l in f if "train/loss" in l]
  assert logged[-1]["train/loss"] < 0.8 * logged[0]["train/loss"]
  assert logged[0]["train/k"] > 3 and logged[-1]["train/k"] == 3  # annealed by step 20
  assert os.path.exists(os.path.join(workdir, "filters.png"))
  assert {"eval/recon_sse", "eval/jacobian_fro2", "eval/probe_error"} <= set(results)
