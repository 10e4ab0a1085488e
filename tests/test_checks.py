"""vaelab.checks.integer, the one integer check: integral floats pass everywhere, bools,
strings, non-finite and non-integral numbers are refused naming the key, with the same
behaviour in every family's validation."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from conftest import ROOT
from vaelab import checks, config_base, validation
from vaelab.errors import ConfigError


@pytest.mark.parametrize("value", [2, 2.0, np.int64(2), np.int32(2), np.float32(2.0),
                                   np.float64(2.0)])
def test_integers_and_integral_floats_pass_as_ints(value):
  out = checks.integer(value, "model.k", 1)
  assert out == 2 and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), "2", None, 2.5, math.inf,
                                   -math.inf, math.nan, np.float32(np.nan), (2,)])
def test_other_values_are_refused_naming_the_key(value):
  with pytest.raises(ConfigError, match=r"^model\.k=.*: must be an integer$"):
    checks.integer(value, "model.k")


def test_bounds_are_in_the_message():
  assert checks.integer(0, "a", 0) == 0 and checks.integer(5, "a", 1, 5) == 5
  for value, lo, hi, expected in ((0, 1, None, "an integer >= 1"),
                                  (6, 1, 5, r"an integer in \[1, 5\]"),
                                  (6, None, 5, "an integer <= 5")):
    with pytest.raises(ConfigError, match=rf"^a={value}: must be {expected}$"):
      checks.integer(value, "a", lo, hi)
  with pytest.raises(ConfigError, match=r"must be an integer in \[1, model.latent_dim=4\]$"):
    checks.integer(5, "model.k", 1, 4, "[1, model.latent_dim=4]")


# An integer key of each validator that used to check integers its own way.
KEYS = [("default.py", "batch_size"), ("default.py", "eval.disentanglement_num_eval"),
        ("vae_mnist.py", "loss.iwae_k"), ("vae_mnist.py", "model.latent_dim"),
        ("tdvae_oscillator.py", "loss.num_pairs"), ("tdvae_oscillator.py", "model.layers"),
        ("vqvae_mnist.py", "model.num_codes"), ("vqvae_mnist.py", "model.num_res_blocks"),
        ("cae_mnist.py", "loss.num_projections"), ("ksparse_mnist.py", "model.k")]


def _validate(name, key, value):
  """Validates the config file `name` with `key` set to `value` of any type (a locked config
  keeps each key's type; a config file may have written the key as a float)."""
  config = config_base.load_config(os.path.join(ROOT, "configs", name))
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  with config.unlocked():
    del node[leaf]
    node[leaf] = value
  return validation.validate(config, num_devices=1)


@pytest.mark.parametrize("name,key", KEYS)
def test_every_validator_checks_integers_alike(name, key):
  current = config_base.flat(config_base.load_config(os.path.join(ROOT, "configs", name)))[key]
  _validate(name, key, float(current))
  for bad in (True, current + 0.5, math.inf, str(current)):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
      _validate(name, key, bad)
