"""Checks of a whole config before anything is built or compiled.

Each failure is a ConfigError whose message names the key, the value and what is allowed.
Family-specific keys are checked by the family's own `validate`.
"""
from __future__ import annotations

import math

import jax

from vaelab import checks, config_base
from vaelab import data as data_lib
from vaelab import models
from vaelab.data import pipeline
from vaelab.errors import ConfigError
from vaelab.evaluate.disentanglement import DCI_IMPORTANCE, configured_metrics
from vaelab.models import nets
from vaelab.spmd import BINARIZE_MODES

NONFINITE_POLICIES = ("stop", "skip")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _positive_int(config, key: str, minimum: int = 1):
  value = config
  for part in key.split("."):
    value = value[part]
  checks.integer(value, key, minimum)


def _refuse_nonfinite(config):
  """No config number may be inf or NaN: a weight of inf passes every `>= 0` check and
  turns the objective into NaN at the first step."""
  for key, value in config_base.flat(config).items():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{key}={value!r}: must be a finite number")


def validate_optimizer(opt_cfg, section: str = "optimizer") -> None:
  if opt_cfg.name not in OPTIMIZERS:
    raise ConfigError(f"{section}.name={opt_cfg.name!r}: expected one of {OPTIMIZERS}")
  if opt_cfg.schedule not in SCHEDULES:
    raise ConfigError(f"{section}.schedule={opt_cfg.schedule!r}: expected one of {SCHEDULES}")
  if not float(opt_cfg.learning_rate) > 0:
    raise ConfigError(f"{section}.learning_rate={opt_cfg.learning_rate}: must be > 0")
  for key in ("b1", "b2"):
    if not 0 <= float(opt_cfg[key]) < 1:
      raise ConfigError(f"{section}.{key}={opt_cfg[key]}: must be in [0, 1)")
  for key in ("weight_decay", "grad_clip_norm", "warmup_steps"):
    if float(opt_cfg[key]) < 0:
      raise ConfigError(f"{section}.{key}={opt_cfg[key]}: must be >= 0")


def validate(config, num_devices: int | None = None):
  """Raises ConfigError for the first bad value; returns the family on success."""
  num_devices = num_devices or jax.device_count()
  _refuse_nonfinite(config)
  for key in ("batch_size", "num_train_steps", "log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints", "eval.batch_size"):
    _positive_int(config, key)
  _positive_int(config, "seed", minimum=0)
  _positive_int(config, "eval.num_pictures", minimum=0)
  for key in ("batch_size", "eval.batch_size"):
    value = config.batch_size if key == "batch_size" else config.eval.batch_size
    if value % num_devices:
      raise ConfigError(f"{key}={value} is not divisible by the {num_devices} devices; use a "
                        f"multiple of {num_devices}")
  if config.nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f"nonfinite={config.nonfinite!r}: expected one of {NONFINITE_POLICIES}")
  if config.data.name not in data_lib.NAMES:
    raise ConfigError(f"data.name={config.data.name!r}: expected one of {data_lib.NAMES}")
  if config.data.binarize not in BINARIZE_MODES:
    raise ConfigError(f"data.binarize={config.data.binarize!r}: expected one of "
                      f"{BINARIZE_MODES}")
  _positive_int(config, "data.num_eval")
  data_lib.check(config.data)  # files and images, before anything is built
  for key in ("num_train", "num_eval", "batch_size", "num_variance_estimate"):
    _positive_int(config, f"eval.disentanglement_{key}")
  _positive_int(config, "eval.disentanglement_every", minimum=0)
  _positive_int(config, "eval.disentanglement_seed", minimum=0)
  configured_metrics(config)  # a ConfigError naming eval.disentanglement_metrics
  if config.eval.dci_importance not in DCI_IMPORTANCE:
    raise ConfigError(f"eval.dci_importance={config.eval.dci_importance!r}: expected one of "
                      f"{DCI_IMPORTANCE}")
  if not 0 < float(config.eval.disentanglement_curve_fraction) <= 1:
    raise ConfigError(f"eval.disentanglement_curve_fraction="
                      f"{config.eval.disentanglement_curve_fraction}: must be in (0, 1]")
  if config.dtype not in nets.DTYPES:
    raise ConfigError(f"dtype={config.dtype!r}: expected one of {nets.DTYPES} (the dtype of "
                      f"activations; parameters stay float32)")
  if config.data.placement not in pipeline.PLACEMENTS:
    raise ConfigError(f"data.placement={config.data.placement!r}: expected one of "
                      f"{pipeline.PLACEMENTS}")
  validate_optimizer(config.optimizer)
  family = models.get_family(config.model.name)
  if config.dtype != "float32" and not family.mixed_precision:
    raise ConfigError(f"dtype={config.dtype!r}: model.name={config.model.name!r} computes in "
                      f"float32 only; use dtype='float32'")
  for group in family.groups:
    section = f"{group}_optimizer"
    if section not in config:
      raise ConfigError(f"model.name={config.model.name!r} trains the parameter group "
                        f"{group!r}, whose optimizer section {section}.* the config lacks "
                        f"(config_base.optimizer_section)")
    validate_optimizer(config[section], section)
  family.validate(config)
  return family
