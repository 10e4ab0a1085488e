"""The optax optimizer and learning-rate schedule named by `config.optimizer`."""
from __future__ import annotations

import jax.numpy as jnp
import optax



def make_schedule(opt_cfg, num_steps: int, peak: float | None = None):
  """The learning rate at each step; `peak` replaces optimizer.learning_rate (1.0 gives the
  schedule's shape)."""
  lr = float(opt_cfg.learning_rate) if peak is None else float(peak)
  if opt_cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt_cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(num_steps, 1))
  return optax.warmup_cosine_decay_schedule(0.0, lr, int(opt_cfg.warmup_steps),
                                            max(num_steps, int(opt_cfg.warmup_steps) + 1))


def make_optimizer(opt_cfg, num_steps: int) -> optax.GradientTransformation:
  """Adam / AdamW / SGD whose step size is learning_rate * schedule(step).

  Both factors live in the optimizer state (inject_hyperparams): `learning_rate` is the
  peak value, a plain array, so members of a vmapped population can each hold their own
  and it is checkpointed; `schedule` is the schedule's shape (peak 1), recomputed from the
  step count. The updates are those of optax.adam(schedule) etc.: the same chain of
  transformations with the rate factored in two.
  """
  shape = make_schedule(opt_cfg, num_steps, peak=1.0)

  def build(learning_rate, schedule):
    b1, b2 = float(opt_cfg.b1), float(opt_cfg.b2)
    if opt_cfg.name == "adam":
      core = optax.scale_by_adam(b1=b1, b2=b2)
    elif opt_cfg.name == "adamw":
      core = optax.chain(optax.scale_by_adam(b1=b1, b2=b2),
                         optax.add_decayed_weights(float(opt_cfg.weight_decay)))
    else:
      core = optax.trace(decay=b1) if b1 else optax.identity()
    parts = [core, optax.scale(-learning_rate * schedule)]
    if float(opt_cfg.grad_clip_norm) > 0:
      parts.insert(0, optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
    return optax.chain(*parts)

  return optax.inject_hyperparams(build)(learning_rate=float(opt_cfg.learning_rate),
                                         schedule=shape)


def with_learning_rate(opt_state, learning_rate: float):
  """`opt_state` with the peak learning rate set: a run resumed under a config with another
  learning rate follows the config, not the checkpoint."""
  hyperparams = dict(opt_state.hyperparams)
  old = hyperparams["learning_rate"]
  hyperparams["learning_rate"] = jnp.asarray(learning_rate, old.dtype)
  return opt_state._replace(hyperparams=hyperparams)


def current_learning_rate(opt_state):
  """The step size of the last update: peak learning rate times the schedule's factor."""
  return opt_state.hyperparams["learning_rate"] * opt_state.hyperparams["schedule"]
