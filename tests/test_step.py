"""The train step's parameter groups (training/step.py, `Family.groups`): each part of the
parameters takes the gradient of its own loss only, through its own optimizer; the
finiteness check covers every group; every group's metrics are logged; resuming resets
every group's learning rate from the config. (Averaging each group's gradient over the
global batch, on 1 vs 4 devices, is the run contract's: tests/test_contract.py runs every
family with groups with each group's optimizer set to plain SGD, where a gradient of the
wrong scale shows.)"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaelab import spmd
from vaelab.training import loop, optimizer
from vaelab.training import experiment as experiment_lib
from vaelab.training import workdir as workdir_lib
from vaelab.training import step as step_lib
from vaelab.training.state import TrainState

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class TwoParts(nn.Module):
  """A model part and a "critic" group, both reading the input."""

  @nn.compact
  def __call__(self, x, keys=None):
    return nn.Dense(3, name="body")(x), nn.Dense(1, name="critic")(x)


def two_losses(model, params, model_state, batch, keys, hparams):
  """The model's loss reads the critic (as FactorVAE's reads its discriminator), the
  critic's loss reads the model's output: cross terms the step must not apply."""
  body, critic = model.apply({"params": params}, batch["x"])
  losses = {"model": jnp.mean(jnp.square(body - 1.0)) + jnp.mean(critic),
            "critic": jnp.mean(jnp.square(critic - jnp.sum(body, -1, keepdims=True)))}
  return losses, ({"body_mean": jnp.mean(body)}, model_state)


def _setup(critic_lr=0.5, model_lr=0.1, nan_in_critic=False):
  model = TwoParts()
  x = jax.random.normal(jax.random.key(0), (8, 4))
  params = jax.device_get(model.init(jax.random.key(1), x)["params"])  # kept: the step donates
  sgd = lambda lr: optax.inject_hyperparams(
      lambda learning_rate, schedule: optax.sgd(learning_rate * schedule))(
      learning_rate=lr, schedule=1.0)
  tx, group_txs = sgd(model_lr), {"critic": sgd(critic_lr)}
  def loss_fn(*args):
    losses, aux = two_losses(*args)
    return ({**losses, "critic": losses["critic"] * jnp.nan}, aux) if nan_in_critic else (
        losses, aux)
  mesh = spmd.make_mesh(jax.devices()[:1])
  step = step_lib.make_train_step(loss_fn, model, tx, mesh, "none", group_txs=group_txs,
                                  skip_nonfinite=True)
  state = TrainState.create({"params": params}, tx, 0, group_txs)
  batch = {"x": x, "index": jnp.arange(8, dtype=jnp.int32)}
  return model, params, step, spmd.replicate(mesh, state), batch


def test_each_part_takes_the_gradient_of_its_own_loss_only():
  model, params, step, state, batch = _setup()
  new, metrics = step(state, batch, {})
  loss = lambda p, g: two_losses(model, p, {}, batch, None, {})[0][g]
  body_grad = jax.grad(loss)(params, "model")["body"]
  critic_grad = jax.grad(loss)(params, "critic")["critic"]
  new = jax.device_get(new)
  for k in ("kernel", "bias"):
    np.testing.assert_allclose(new.params["body"][k], params["body"][k] - 0.1 * body_grad[k],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new.params["critic"][k],
                               params["critic"][k] - 0.5 * critic_grad[k], rtol=1e-6, atol=1e-7)
  m = metrics.to_dict()
  assert {"loss", "grad_norm", "learning_rate", "critic_loss", "critic_grad_norm",
          "critic_learning_rate", "body_mean", "finite"} == set(m)
  assert float(m["critic_learning_rate"]) == pytest.approx(0.5)
  assert float(m["learning_rate"]) == pytest.approx(0.1)
  assert float(m["critic_grad_norm"]) == pytest.approx(
      float(optax.tree.norm(critic_grad)), rel=1e-5)
  assert int(new.step) == 1 and set(new.group_opt_state) == {"critic"}


def test_the_global_norm_is_optaxs_for_leaves_of_any_size():
  # Summed in groups of up to 32 elements, then the groups' sums (step._global_norm).
  key = jax.random.key(3)
  tree = {"a": jax.random.normal(key, (64, 96)), "b": jnp.arange(33.0), "c": jnp.float32(2.0),
          "d": jnp.ones((3, 5, 7), jnp.bfloat16)}
  assert float(jax.jit(step_lib._global_norm)(tree)) == pytest.approx(
      float(optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))), rel=1e-6)


def test_a_non_finite_group_loss_makes_the_step_non_finite():
  _, params, step, state, batch = _setup(nan_in_critic=True)
  new, metrics = step(state, batch, {})
  assert not bool(metrics["finite"])
  new = jax.device_get(new)
  assert int(new.skipped_steps) == 1  # nonfinite=skip: nothing applied, the model's part too
  np.testing.assert_array_equal(new.params["body"]["kernel"], params["body"]["kernel"])


def test_resuming_resets_every_groups_learning_rate_from_the_config(npz_pair, tmp_path):
  from test_factor_vae import tiny_factor_vae
  config = tiny_factor_vae(npz_pair, num_train_steps=2, checkpoint_every=2)
  loop.train(config, str(tmp_path), evaluate=False)
  config.discriminator_optimizer.learning_rate = 0.125
  exp = experiment_lib.build(config)
  _, state, start = workdir_lib.open_run(exp, str(tmp_path))
  assert start == 2
  assert float(optimizer.current_learning_rate(
      state.group_opt_state["discriminator"])) == pytest.approx(0.125)
