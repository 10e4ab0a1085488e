"""The run contract (see test_contract.py), populations: for every config file, one member
per key the population machinery lets members differ in, beside the config itself; the
population equals the runs alone, bitwise with impl "loop" and within 1e-5 with "vmap"."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import contract_cases as cc
from vaelab import config_base
from vaelab.training import loop, population

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  return cc.prepare(str(tmp_path_factory.mktemp("contract_population")))


def _population_keys(config) -> list[str]:
  """The keys a population may vary for this config."""
  keys = list(population.ALWAYS)
  flat = config_base.flat(config)
  family_keys = [k for k, v in flat.items() if k not in keys and isinstance(v, (int, float))
                 and not isinstance(v, bool) and population.is_population_key(config, k)]
  return keys + sorted(family_keys)


def _changed(config, key):
  """`config` with `key` changed by a small amount."""
  value = population._get(config, key)
  new = value + 1 if key == "seed" or isinstance(value, int) else value * 1.5 + 0.01
  return population._with(config, {key: new})


@pytest.mark.parametrize("case", sorted(cc.base_cases()))
def test_population_members_equal_their_runs_alone(setup, case, tmp_path):
  config = cc.config_of(case, setup["data"], setup["vq"])
  members = [config]
  for key in _population_keys(config):
    other = _changed(config, key)
    if population.groups([config, other]) == [[0, 1]]:
      members.append(other)
  assert len(members) >= 3  # the seed and the learning rate at least
  alone = [cc.run(m) for m in members]
  for impl in ("loop", "vmap"):
    dirs = [str(tmp_path / f"{impl}{i}") for i in range(len(members))]
    population.train_population(members, dirs, impl, evaluate=False)
    for d, c, (losses, params) in zip(dirs, members, alone):
      with open(os.path.join(d, "metrics.jsonl")) as f:
        got = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
      flat = cc.flat_params(loop.restore_latest(loop.build(c), d).params)
      if impl == "loop":  # the one-run step on each member
        assert got == losses
        cc.assert_params(flat, params, exact=True)
      else:  # batched kernels round differently, and Adam scales the rounding of a
        # gradient near 0 up to a step of about the learning rate: a few weights of
        # thousands move by up to ~8% of the most 4 steps can (atol 1e-4)
        np.testing.assert_allclose(got, losses, rtol=1e-5)
        cc.assert_params(flat, params, exact=False, rtol=1e-4, atol=1e-4)
