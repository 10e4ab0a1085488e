"""The contract every family and every objective is held to: a run depends only on its
config and seed.

Every case of tests/contract_cases.py (each config file, each declared option value) is
checked for
  devices:     1 and 4 devices give the same per-step losses and final parameters (rtol 1e-5)
               after 4 steps; the 4-device runs of all cases share one subprocess;
  resume:      stopped after 2 steps and resumed from the checkpoint, bitwise the run of 4
               uninterrupted steps;
and every config file for
  populations: each key the population machinery lets members differ in (the seed, the
               learning rate, the family's step arrays), one member per key beside the
               config itself: the population equals the runs alone, bitwise with impl
               "loop" and within 1e-5 with "vmap";
  grouping:    a key that changes the model or a static setting of the objective never
               lands two configs in one population.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import contract_cases as cc
from conftest import ROOT
from vaelab import config_base
from vaelab.errors import ConfigError
from vaelab.train import loop, population

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
  data = cc.write_data(str(root))
  vq_workdirs = {}
  for name in ("vqvae", "vqvae2"):
    config = cc.config_of(f"{name}_mnist", data, {})
    vq_workdirs[name] = str(root / name)
    loop.train(config, vq_workdirs[name], evaluate=False)
  setup_path, out_path = root / "setup.json", root / "four_devices.npz"
  setup_path.write_text(json.dumps({"cases": selected, "data": data,
                                    "vq_workdirs": vq_workdirs}))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "contract_cases.py"),
                           str(setup_path), str(out_path)], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  state = {"data": data, "vq": vq_workdirs, "root": root, "proc": proc, "out": out_path,
           "four": None, "alone": {}}
  yield state
  if proc.poll() is None:
    proc.kill()


def _config(setup, case):
  try:
    return cc.config_of(case, setup["data"], setup["vq"])
  except ConfigError as e:
    pytest.skip(f"{case} does not apply: {e}")


def _alone(setup, case):
  """The case's 1-device run of 4 steps, in memory (shared by the tests of a case)."""
  if case not in setup["alone"]:
    setup["alone"][case] = cc.run(_config(setup, case))
  return setup["alone"][case]


def _four_devices(setup):
  if setup["four"] is None:
    output, _ = setup["proc"].communicate(timeout=1800)
    assert setup["proc"].returncode == 0, output[-4000:]
    with np.load(setup["out"]) as f:
      setup["four"] = dict(f)
    assert int(setup["four"]["devices"]) == 4
  return setup["four"]


# Attention's key bias adds q.b to every logit of a query: softmax cancels it, so its
# gradient is zero in exact arithmetic and rounding noise in float32, which Adam scales up
# to steps of about the learning rate. No run can be compared on it but bitwise.
UNOBSERVABLE = ("['attention']/['key']/['bias']",)


def _assert_params(a: dict, b: dict, exact: bool, rtol: float = 1e-5, atol: float = 1e-5):
  """atol 1e-5: about 1% of the most that 4 Adam steps at the configs' rates move a weight."""
  assert a.keys() == b.keys()
  for k in a:
    if not exact and k.endswith(UNOBSERVABLE):
      continue
    if exact:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
      np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("case", CASES)
def test_one_and_four_devices_give_the_same_run(setup, case):
  losses, params = _alone(setup, case)
  four = _four_devices(setup)
  assert len(losses) == cc.STEPS and np.all(np.isfinite(losses))
  np.testing.assert_allclose(four[f"{case}:losses"], losses, rtol=1e-5)
  prefix = f"{case}:param:"
  _assert_params({k[len(prefix):]: v for k, v in four.items() if k.startswith(prefix)}, params,
                 exact=False)


@pytest.mark.parametrize("case", CASES)
def test_resumed_run_is_bitwise_the_uninterrupted_one(setup, case):
  config = _config(setup, case)
  losses, params = _alone(setup, case)
  workdir = str(setup["root"] / f"resume_{case}")
  first, _ = cc.run(config, workdir, stop_after=2)
  assert len(first) == 2 and os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  rest, resumed = cc.run(config, workdir)
  assert first + rest == losses
  _assert_params(resumed, params, exact=True)


def _population_keys(config) -> list[str]:
  """The keys a population may vary for this config, each changed by a small amount."""
  keys = list(population.ALWAYS)
  flat = config_base.flat(config)
  family_keys = [k for k, v in flat.items() if k not in keys and isinstance(v, (int, float))
                 and not isinstance(v, bool) and population.is_population_key(config, k)]
  return keys + sorted(family_keys)


def _changed(config, key):
  value = population._get(config, key)
  new = value + 1 if key == "seed" or isinstance(value, int) else value * 1.5 + 0.01
  return population._with(config, {key: new})


@pytest.mark.parametrize("case", sorted(cc.base_cases()))
def test_population_members_equal_their_runs_alone(setup, case, tmp_path):
  config = _config(setup, case)
  members = [config]
  for key in _population_keys(config):
    other = _changed(config, key)
    if population.groups([config, other]) == [[0, 1]]:
      members.append(other)
  assert len(members) >= 3  # the seed and the learning rate at least
  alone = [_alone(setup, case)] + [cc.run(m) for m in members[1:]]
  for impl in ("loop", "vmap"):
    dirs = [str(tmp_path / f"{impl}{i}") for i in range(len(members))]
    population.train_population(members, dirs, impl, evaluate=False)
    for d, c, (losses, params) in zip(dirs, members, alone):
      with open(os.path.join(d, "metrics.jsonl")) as f:
        got = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
      state = jax.device_get(loop.restore_latest(loop.build(c), d))
      flat = {"/".join(str(k) for k in path): np.asarray(leaf) for path, leaf in
              jax.tree_util.tree_leaves_with_path(state.params)}
      if impl == "loop":  # the one-run step on each member
        assert got == losses
        _assert_params(flat, params, exact=True)
      else:  # batched kernels round differently
        np.testing.assert_allclose(got, losses, rtol=1e-5)
        _assert_params(flat, params, exact=False, rtol=1e-4)


# Step arrays that a model also reads statically (TD-VAE's dt features are scaled by the
# longest trained jump), and a plain structural key.
@pytest.mark.parametrize("case,key", [("tdvae_oscillator", "loss.long_jump"),
                                      ("tdvae_moving_digits", "loss.max_jump"),
                                      ("default", "model.latent_dim")])
def test_keys_that_change_the_model_never_share_a_population(setup, case, key):
  config = _config(setup, case)
  other = population._with(config, {key: max(population._get(config, key) // 2, 1)})
  assert population.groups([config, other]) == [[0], [1]]
