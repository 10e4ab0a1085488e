"""The run contract (see test_contract.py), populations on 1 device: for every config file,
one member per key the population machinery lets members differ in, beside the config
itself (a key whose member trains apart fails, unless contract_cases.SPLIT_BY_DESIGN says
why); the population equals the runs alone, bitwise with impl "loop" and within 1e-5 with
"vmap"."""
from __future__ import annotations

import numpy as np
import pytest

import contract_cases as cc
from vaelab.training import experiment as experiment_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  return cc.prepare(str(tmp_path_factory.mktemp("contract_population")))


@pytest.mark.parametrize("case", sorted(cc.base_cases()))
def test_population_members_equal_their_runs_alone(setup, case, tmp_path):
  members = cc.population_members(cc.config_of(case, setup["data"], setup["vq"]))
  assert len(members) >= 3  # the seed and the learning rate at least
  exp = experiment_lib.build(members[0])
  alone = [cc.run(m, experiment=exp) for m in members]
  for impl in ("loop", "vmap"):
    for (got, flat), (losses, params) in zip(cc.population_runs(members, str(tmp_path), impl),
                                             alone):
      if impl == "loop":  # the one-run step on each member
        assert got == losses
        cc.assert_params(flat, params, exact=True)
      else:  # batched kernels round differently, and Adam scales the rounding of a
        # gradient near 0 up to a step of about the learning rate: a few weights of
        # thousands move by up to ~8% of the most 4 steps can (atol 1e-4)
        np.testing.assert_allclose(got, losses, rtol=1e-5)
        cc.assert_params(flat, params, exact=False, rtol=1e-4, atol=1e-4)
