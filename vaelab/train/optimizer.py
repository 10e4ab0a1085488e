"""The optax optimizer and learning-rate schedule named by `config.optimizer`."""
from __future__ import annotations

import optax

from vaelab.errors import ConfigError

NAMES = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(opt_cfg, num_steps: int):
  lr = float(opt_cfg.learning_rate)
  if opt_cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt_cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(num_steps, 1))
  return optax.warmup_cosine_decay_schedule(0.0, lr, int(opt_cfg.warmup_steps),
                                            max(num_steps, int(opt_cfg.warmup_steps) + 1))


def make_optimizer(opt_cfg, num_steps: int) -> optax.GradientTransformation:
  """inject_hyperparams keeps the learning rate in the optimizer state as an array, so it is
  checkpointed, logged, and can differ between members of a vmapped population."""

  def build(learning_rate):
    if opt_cfg.name == "adam":
      opt = optax.adam(learning_rate, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2))
    elif opt_cfg.name == "adamw":
      opt = optax.adamw(learning_rate, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2),
                        weight_decay=float(opt_cfg.weight_decay))
    else:
      opt = optax.sgd(learning_rate, momentum=float(opt_cfg.b1) or None)
    if float(opt_cfg.grad_clip_norm) > 0:
      opt = optax.chain(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)), opt)
    return opt

  return optax.inject_hyperparams(build)(learning_rate=make_schedule(opt_cfg, num_steps))


def validate(opt_cfg) -> None:
  if opt_cfg.name not in NAMES:
    raise ConfigError(f"optimizer.name={opt_cfg.name!r}: expected one of {NAMES}")
  if opt_cfg.schedule not in SCHEDULES:
    raise ConfigError(f"optimizer.schedule={opt_cfg.schedule!r}: expected one of {SCHEDULES}")
  if not float(opt_cfg.learning_rate) > 0:
    raise ConfigError(f"optimizer.learning_rate={opt_cfg.learning_rate}: must be > 0")
  for key in ("b1", "b2"):
    if not 0 <= float(opt_cfg[key]) < 1:
      raise ConfigError(f"optimizer.{key}={opt_cfg[key]}: must be in [0, 1)")
  for key in ("weight_decay", "grad_clip_norm", "warmup_steps"):
    if float(opt_cfg[key]) < 0:
      raise ConfigError(f"optimizer.{key}={opt_cfg[key]}: must be >= 0")
