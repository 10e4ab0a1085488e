"""Mixed precision (`config.dtype`): bfloat16/float16 activations, float32 parameters and
objectives; the step stays finite and learns."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, vq_config
from vaelab import models, spmd, validation
from vaelab.errors import ConfigError
from vaelab.training import loop
from vaelab.training import experiment as experiment_lib


def _config(family, npz_pair, **overrides):
  if family == "vqvae":
    return vq_config(*npz_pair, **overrides)
  return tiny_config(family, *npz_pair, **{"model.name": family, **overrides})


def _dtypes(tree):
  return {str(leaf.dtype) for leaf in jax.tree.leaves(tree)}


@pytest.fixture(scope="module")
def experiments(npz_pair):
  """family -> (bfloat16 experiment, its initial state)."""
  out = {}
  for f in ("vae", "ae", "vqvae"):
    exp = experiment_lib.build(_config(f, npz_pair, dtype="bfloat16", **{"optimizer.learning_rate": 3e-3}))
    out[f] = exp, exp.init_state()
  return out


@pytest.mark.parametrize("family", ["vae", "ae", "vqvae"])
def test_parameters_float32_activations_bfloat16_outputs_float32(family, experiments):
  exp, state = experiments[family]
  assert _dtypes(state.params) == {"float32"}
  x = jnp.asarray(exp.train_source.get(np.arange(4))["image"])
  keys = spmd.example_keys(0, 0, jnp.arange(4))
  # Jitted: op-by-op bfloat16 convolutions are slow on CPU.
  out, captured = jax.jit(lambda v, x, k: exp.model.apply(
      v, x, k, capture_intermediates=True, mutable=["intermediates"]))(state.variables(), x, keys)
  inter = captured["intermediates"]
  # The encoder's first layer computes in bfloat16...
  first = inter["encoder"]["down_0" if family == "vqvae" else "dense_0"]["__call__"][0]
  assert first.dtype == jnp.bfloat16
  # ...and what reaches the objective (logits, posterior parameters, z_e) is float32.
  assert _dtypes(out) <= {"float32", "int32"}
  assert inter["decoder"]["__call__"][0].dtype == jnp.float32


@pytest.mark.parametrize("family", ["vae", "ae", "vqvae"])
def test_bfloat16_steps_are_finite_and_learn(family, experiments):
  exp, state = experiments[family]
  state = spmd.replicate(exp.mesh, state)
  batcher = exp.batcher()
  losses = []
  for s in range(40):
    state, metrics = exp.train_step(state, spmd.shard_batch(exp.mesh, batcher.batch(s)),
                                    exp.hparams)
    m = jax.device_get(metrics)
    assert bool(m["finite"]) and np.isfinite(m["grad_norm"]), (s, m)
    losses.append(float(m["loss"]))
  assert _dtypes(state.params) == {"float32"}
  assert _dtypes(state.opt_state) <= {"float32", "int32"}
  assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


def test_bfloat16_objective_is_the_float32_one_up_to_rounding(npz_pair):
  """Same parameters, same batch: the losses differ only by bfloat16 activations."""
  values, state = {}, None
  for dtype in ("float32", "bfloat16", "float16"):
    exp = experiment_lib.build(_config("vae", npz_pair, dtype=dtype))
    state = state or exp.init_state()  # the same float32 parameters for every dtype
    batch = exp.batcher().batch(0)
    keys = spmd.example_keys(0, 0, jnp.asarray(batch["index"]))
    loss = jax.jit(lambda *a, loss_fn=exp.family.make_loss(exp.config), model=exp.model:
                   loss_fn(model, *a)[0])
    hparams = {k: jnp.asarray(v) for k, v in exp.family.hparams(exp.config).items()}
    values[dtype] = loss(state.params, state.model_state,
                         {k: jnp.asarray(v) for k, v in batch.items()}, keys,
                         {**hparams, "step": jnp.zeros((), jnp.int32)})
    assert values[dtype].dtype == jnp.float32
  assert float(values["bfloat16"]) == pytest.approx(float(values["float32"]), rel=2e-2)
  assert float(values["float16"]) == pytest.approx(float(values["float32"]), rel=5e-3)


def test_a_bfloat16_run_trains_and_evaluates(npz_pair, tmp_path):
  config = _config("vae", npz_pair, dtype="bfloat16", num_train_steps=20, log_every=10,
                   eval_every=20, checkpoint_every=20, **{"eval.iwae_ks": (1, 5)})
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert all(np.isfinite(v) for v in results.values()), results
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["dtype"] == "bfloat16"
  assert os.path.exists(tmp_path / "reconstructions.png")


def test_unknown_dtype_is_refused_naming_the_key(npz_pair):
  with pytest.raises(ConfigError, match="dtype='int8'"):
    validation.validate(_config("vae", npz_pair, dtype="int8"), num_devices=1)


def test_a_family_without_mixed_precision_refuses_other_dtypes(npz_pair, monkeypatch):
  float32_only = dataclasses.replace(models.get_family("vae"), mixed_precision=False)
  monkeypatch.setattr(models, "get_family", lambda name: float32_only)
  with pytest.raises(ConfigError, match="dtype='bfloat16'.*float32 only"):
    validation.validate(_config("vae", npz_pair, dtype="bfloat16"), num_devices=1)
  validation.validate(_config("vae", npz_pair), num_devices=1)  # float32 is always fine
