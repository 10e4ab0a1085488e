"""The run contract (see test_contract.py), resume: every case stopped after 2 steps and
resumed from its checkpoint is bitwise the run of 4 uninterrupted steps."""
from __future__ import annotations

import os

import pytest

import contract_cases as cc

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("contract_resume")
  return {**cc.prepare(str(root)), "root": root}


@pytest.mark.parametrize("case", cc.all_cases())
def test_resumed_run_is_bitwise_the_uninterrupted_one(setup, case):
  config = cc.config_of(case, setup["data"], setup["vq"])
  losses, params = cc.run(config)
  workdir = str(setup["root"] / f"resume_{case}")
  first, _ = cc.run(config, workdir, stop_after=2)
  assert len(first) == 2 and os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  rest, resumed = cc.run(config, workdir)
  assert first + rest == losses
  cc.assert_params(resumed, params, exact=True)
