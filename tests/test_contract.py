"""The contract every family and every objective is held to: a run depends only on its
config and seed.

Every case of tests/contract_cases.py (each config file, each declared option value, each
parameter group's optimizer as SGD) is checked for
  devices:     1 and 4 devices give the same per-step losses and final parameters (rtol 1e-5)
               after 4 steps;
  resume:      stopped after 2 steps and resumed from the checkpoint, bitwise the run of 4
               uninterrupted steps (on 4 devices too, for one case per family);
and one case per family for
  populations on 4 devices: each member of a population of both impls equals its run alone
               (bitwise with "loop"; with "vmap" its losses as the device check reads them,
               its weights within 1e-4);
  evaluation on 4 devices: the final evaluation, --mode=eval and --mode=sample at a size
               with real work per device (the modes' functions, in-process; the command line
               itself: tests/test_main.py);
and every config file for
  populations: on 1 device, a member with another seed and one with every other population
               key changed (a family's further files only
               where they bring a population key its earlier files lack);
  grouping:    a key that changes the model or a static setting of the objective never
               lands two configs in one population (here).
All 4-device work runs in one subprocess, started with the module; the 1-device
uninterrupted runs are computed once per case and shared by the checks here.

What "the same run" means across device counts (`contract_cases.assert_same_run`): the
device split changes only the order of floating-point sums, so the losses agree to rounding
(rtol 1e-5 at step 0, the forward pass alone; 5e-5 after Adam's steps), and so does every
weight (rtol and atol 1e-5), except weights whose gradient is itself at the rounding level
(a bias that a softmax cancels, a unit that barely fires): Adam normalizes a gradient
entry by its own size, so rounding noise there becomes a step of about the learning rate
in either direction. Those may differ, up to what Adam can move a weight in the run, in at
most `OUTLIER_FRACTION` of the model's weights (counted over the whole model, not per
array). A wrong reduction (a per-device statistic where the global batch's is meant, a
gradient summed instead of averaged under SGD) changes the losses or most weights of the
arrays it reaches, and fails: `test_a_per_device_statistic_fails_the_device_check` keeps
that true.

Narrowing: VAELAB_CONTRACT_FAMILY (`make contract FAMILY=name`) checks only the named
families, everything above; VAELAB_CONTRACT_FAST=1 (`make test-fast`) checks each family's
first config file on 1 vs 4 devices and resumed on 1, and nothing per file or per family;
VAELAB_CONTRACT_CASES names cases (tests/test_optimized.py) and leaves out the per-file and
per-family checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import contract_cases as cc
from conftest import ROOT, xla_flags
from vaelab import models
from vaelab.training import experiment as experiment_lib
from vaelab.training import population

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CASES = cc.all_cases()
FAMILIES = cc.family_cases()
CONFIG_FILES = [c for c in sorted(cc.base_cases()) if c in CASES]
POPULATION_FILES = [c for c in cc.population_cases() if c in CONFIG_FILES]
if cc.families_asked() is not None:
  FAMILIES = {f: c for f, c in FAMILIES.items() if f in cc.families_asked()}
if os.environ.get("VAELAB_CONTRACT_FAST") == "1":
  CASES = sorted(c for c in FAMILIES.values() if c in CASES)
  FAMILIES, CONFIG_FILES, POPULATION_FILES = {}, [], []
# A subset of cases (and no per-file or per-family checks): tests/test_optimized.py runs
# them again with XLA's optimizations on.
if os.environ.get("VAELAB_CONTRACT_CASES"):
  CASES = [c for c in CASES if c in os.environ["VAELAB_CONTRACT_CASES"].split(",")]
  FAMILIES, CONFIG_FILES, POPULATION_FILES = {}, [], []
# The negative control: a family whose statistic is taken per device, on 4 devices.
NEGATIVE = "sparse_ae_mnist" if "sparse_ae_mnist" in CASES else None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Data, the frozen VQ runs the priors read, and the 4-device work (started at once in a
  subprocess that publishes each result as it is done)."""
  root = tmp_path_factory.mktemp("contract")
  state = cc.prepare(str(root))
  out_dir = root / "four_devices"
  out_dir.mkdir()
  setup_path = root / "setup.json"
  # Only the whole contract reports its costs: a narrowed one (make contract, the optimized
  # cases) would overwrite them with its own.
  whole = cc.families_asked() is None and not any(
      os.environ.get(k) for k in ("VAELAB_CONTRACT_FAST", "VAELAB_CONTRACT_CASES"))
  setup_path.write_text(json.dumps({"cases": CASES, "families": sorted(FAMILIES.values()),
                                    "negative": NEGATIVE,
                                    "costs": os.environ.get("VAELAB_SUITE_COSTS") if whole
                                    else None,
                                    "data": state["data"], "vq_workdirs": state["vq"]}))
  env = dict(os.environ, XLA_FLAGS=xla_flags(4),
             JAX_PLATFORMS="cpu")
  log = open(root / "four_devices.log", "w")
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "contract_cases.py"),
                           str(setup_path), str(out_dir)], env=env, cwd=ROOT,
                          stdout=log, stderr=subprocess.STDOUT, text=True)
  state.update(proc=proc, out=out_dir, log=root / "four_devices.log", root=root, alone={})
  yield state
  if proc.poll() is None:
    proc.kill()
  log.close()


def _four(setup, name: str, suffix: str = ".npz", timeout: float = 3000):
  """A result of the 4-device subprocess, once published (contract_cases.publish)."""
  path = setup["out"] / (name.replace("/", "_") + suffix)
  end = time.time() + timeout
  while not path.exists():
    if setup["proc"].poll() is not None and not path.exists():
      raise AssertionError(f"the 4-device subprocess ended (rc {setup['proc'].returncode}) "
                           f"without {path.name}:\n" + setup["log"].read_text()[-4000:])
    assert time.time() < end, f"no {path.name} after {timeout} s"
    time.sleep(0.2)
  if suffix == ".json":
    return json.loads(path.read_text())
  with np.load(path) as f:
    return dict(f)


def _run_of(arrays: dict, name: str = ""):
  prefix = f"{name}:" if name else ""
  params = {k[len(prefix) + 6:]: v for k, v in arrays.items()
            if k.startswith(f"{prefix}param:")}
  return list(arrays[f"{prefix}losses"]), params


def _alone(setup, case: str):
  """The case's uninterrupted 1-device run, once per module (devices and resume read it),
  and the experiment it was built from (the resumed runs reuse its compiled step)."""
  if case not in setup["alone"]:
    exp = experiment_lib.build(cc.config_of(case, setup["data"], setup["vq"]))
    setup["alone"][case] = exp, cc.run(exp.config, experiment=exp)
  return setup["alone"][case]


@pytest.mark.parametrize("case", CASES)
def test_one_and_four_devices_give_the_same_run(setup, case):
  """Every case must apply (an option value that needs other settings names them in
  contract_cases.COMPANIONS rather than being skipped)."""
  exp, (losses, params) = _alone(setup, case)
  assert len(losses) == cc.STEPS and np.all(np.isfinite(losses))
  cc.assert_same_run(_run_of(_four(setup, case)), (losses, params), exp.config)


@pytest.mark.skipif(NEGATIVE is None, reason="the negative control's case is not selected")
def test_a_per_device_statistic_fails_the_device_check(setup):
  """The sparse AE with its rho_hat taken per device (spmd.global_mean made the identity in
  the 4-device process) is the classic wrong reduction: the device check must refuse it."""
  exp, alone = _alone(setup, NEGATIVE)
  wrong = _run_of(_four(setup, f"{NEGATIVE}:per_device_statistic"))
  with pytest.raises(AssertionError, match="loss"):
    cc.assert_same_run(wrong, alone, exp.config)
  # The weights alone give it away too, beyond the allowance for rounding.
  with pytest.raises(AssertionError, match="differ beyond"):
    cc.assert_same_run((alone[0], wrong[1]), alone, exp.config)


@pytest.mark.parametrize("case", CASES)
def test_resumed_run_is_bitwise_the_uninterrupted_one(setup, case):
  exp, (losses, params) = _alone(setup, case)
  got, resumed = cc.resumed(exp.config, str(setup["root"] / f"resume_{case}"), exp)
  assert got == losses
  cc.assert_params(resumed, params, exact=True)


def assert_vmap_losses(got, want):
  """A vmapped member's losses against its run alone, as the device check reads them: the
  forward pass of step 0 to rounding (rtol 1e-5), the later steps, after optimizer updates
  that scale rounding up (Adam's normalisation, VQGAN's adaptive weight: a ratio of two
  gradient norms), to 5e-5."""
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, err_msg="step 0's loss")
  np.testing.assert_allclose(got, want, rtol=5e-5, err_msg="per-step losses")


@pytest.mark.parametrize("case", POPULATION_FILES)
def test_population_members_equal_their_runs_alone(setup, case, tmp_path):
  """For each family's config files that bring a population key of their own
  (contract_cases.population_cases), on 1 device: beside the config, a member with another
  seed and one with every other key changed that the population machinery lets members
  differ in (a key whose member trains apart fails, unless contract_cases.SPLIT_BY_DESIGN
  says why); the population equals the runs alone, bitwise with impl "loop", with "vmap"
  its losses as the device check reads them and its weights within 1e-4."""
  members = cc.population_members(cc.config_of(case, setup["data"], setup["vq"]))
  assert len(members) >= 3
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
        assert_vmap_losses(got, losses)
        cc.assert_params(flat, params, exact=False, rtol=1e-4, atol=1e-4)


# The checks of the 4-device subprocess's per-family results come after every 1-device check
# above, so that this module's worker does its own runs before it waits for them (xdist
# hands out whole files: a waiting worker takes no other work).
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resumed_run_is_bitwise_the_uninterrupted_one_on_four_devices(setup, family):
  case = FAMILIES[family]
  (losses4, params4) = _run_of(_four(setup, case))
  (got4, resumed4) = _run_of(_four(setup, f"{case}:resumed"))
  assert got4 == losses4
  cc.assert_params(resumed4, params4, exact=True)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_populations_on_four_devices_equal_their_runs_alone(setup, family):
  case = FAMILIES[family]
  four = _four(setup, f"{case}:population")
  count = len([k for k in four if k.startswith("member") and k.endswith(":losses")])
  assert count >= 3
  for i in range(count):
    losses, params = _run_of(four, f"member{i}")
    got, flat = _run_of(four, f"loop{i}")
    assert got == losses  # the one-run step on each member
    cc.assert_params(flat, params, exact=True)
    got, flat = _run_of(four, f"vmap{i}")
    assert_vmap_losses(got, losses)
    cc.assert_params(flat, params, exact=False, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_final_evaluation_and_the_modes_run_on_four_devices(setup, family):
  case = FAMILIES[family]
  got = _four(setup, f"{case}:evaluation", ".json")
  trained, again = got["train"], got["eval"]
  assert trained and set(trained) == set(again)
  assert all(np.isfinite(v) for v in trained.values()), trained
  for k, v in trained.items():  # --mode=eval recomputes the results of the same checkpoint
    assert again[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
  assert got["sampled"] in (True, None)
  assert (got["sampled"] is None) == (models.get_family(family).sample is None)
  if got["roundtrip"] is not None:  # the API on 4 devices: decode(encode(x)) reconstructs
    assert got["roundtrip"] < 1e-5


# Step arrays that a model also reads statically (TD-VAE's dt features are scaled by the
# longest trained jump), and a plain structural key.
@pytest.mark.parametrize("case,key", [(c, k) for c, k in [
    ("tdvae_oscillator", "loss.long_jump"), ("tdvae_moving_digits", "loss.max_jump"),
    ("default", "model.latent_dim")] if c in CONFIG_FILES])
def test_keys_that_change_the_model_never_share_a_population(setup, case, key):
  config = cc.config_of(case, setup["data"], setup["vq"])
  other = population._with(config, {key: max(population._get(config, key) // 2, 1)})
  assert population.groups([config, other]) == [[0], [1]]
