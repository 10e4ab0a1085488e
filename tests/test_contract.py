"""The contract every family and every objective is held to: a run depends only on its
config and seed.

Every case of tests/contract_cases.py (each config file, each declared option value) is
checked for
  devices:     1 and 4 devices give the same per-step losses and final parameters (rtol 1e-5)
               after 4 steps; the 4-device runs of all cases share one subprocess (here);
  resume:      stopped after 2 steps and resumed from the checkpoint, bitwise the run of 4
               uninterrupted steps (test_contract_resume.py);
and every config file for
  populations: each key the population machinery lets members differ in (the seed, the
               learning rate, the family's step arrays), one member per key beside the
               config itself: the population equals the runs alone, bitwise with impl
               "loop" and within 1e-5 with "vmap" (test_contract_population.py);
  grouping:    a key that changes the model or a static setting of the objective never
               lands two configs in one population (here).
Three modules, so that the test workers share the work.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import contract_cases as cc
from conftest import ROOT
from vaelab.training import population

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CASES = cc.all_cases()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, request):
  """Data, the frozen VQ runs the priors read, and the 4-device runs of the selected cases
  (started at once in a subprocess, collected by the first test that needs them)."""
  selected = sorted({item.callspec.params["case"] for item in request.session.items
                     if item.module is sys.modules[__name__] and hasattr(item, "callspec")
                     and "case" in item.callspec.params
                     and item.originalname == "test_one_and_four_devices_give_the_same_run"})
  root = tmp_path_factory.mktemp("contract")
  state = cc.prepare(str(root))
  setup_path, out_path = root / "setup.json", root / "four_devices.npz"
  setup_path.write_text(json.dumps({"cases": selected, "data": state["data"],
                                    "vq_workdirs": state["vq"]}))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "contract_cases.py"),
                           str(setup_path), str(out_path)], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  state.update(proc=proc, out=out_path, four=None)
  yield state
  if proc.poll() is None:
    proc.kill()


def _four_devices(setup):
  if setup["four"] is None:
    output, _ = setup["proc"].communicate(timeout=1800)
    assert setup["proc"].returncode == 0, output[-4000:]
    with np.load(setup["out"]) as f:
      setup["four"] = dict(f)
    assert int(setup["four"]["devices"]) == 4
  return setup["four"]


@pytest.mark.parametrize("case", CASES)
def test_one_and_four_devices_give_the_same_run(setup, case):
  """Every case must apply (an option value that needs other settings names them in
  contract_cases.COMPANIONS rather than being skipped)."""
  losses, params = cc.run(cc.config_of(case, setup["data"], setup["vq"]))
  four = _four_devices(setup)
  assert len(losses) == cc.STEPS and np.all(np.isfinite(losses))
  # Step 0's loss is the forward pass alone: rounding only (the sparse AE's per-device rho_hat
  # defect was 8e-5 there). Later losses follow Adam updates, which normalize each gradient
  # entry, so entries that are ~0 in exact arithmetic turn rounding into steps of about the
  # learning rate (measured: VQ-VAE-2 with FSQ, step 1, 2.1e-5 relative).
  np.testing.assert_allclose(four[f"{case}:losses"][0], losses[0], rtol=1e-5)
  np.testing.assert_allclose(four[f"{case}:losses"], losses, rtol=5e-5)
  prefix = f"{case}:param:"
  cc.assert_params({k[len(prefix):]: v for k, v in four.items() if k.startswith(prefix)},
                   params, exact=False)


# Step arrays that a model also reads statically (TD-VAE's dt features are scaled by the
# longest trained jump), and a plain structural key.
@pytest.mark.parametrize("case,key", [("tdvae_oscillator", "loss.long_jump"),
                                      ("tdvae_moving_digits", "loss.max_jump"),
                                      ("default", "model.latent_dim")])
def test_keys_that_change_the_model_never_share_a_population(setup, case, key):
  config = cc.config_of(case, setup["data"], setup["vq"])
  other = population._with(config, {key: max(population._get(config, key) // 2, 1)})
  assert population.groups([config, other]) == [[0], [1]]
