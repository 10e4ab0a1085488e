"""Preemption: SIGTERM checkpoints the current step and exits; SIGKILLs (one inside a
checkpoint write) and restarts reach an uninterrupted run's parameters. Every interruption
lands at a chosen step, whatever the machine's speed (tests/preempt_run.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, set_overrides
from test_configs import load
from vaelab.training import loop
from vaelab.training import experiment as experiment_lib
from vaelab.training import workdir as workdir_lib

# Slow (runs stopped by signals, in subprocesses): left out of `make test-fast`.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow]

STEPS = 800


def _overrides(train, evalp):
  return {"data.name": "npz", "data.train_path": train, "data.eval_path": evalp,
          "data.binarize": "dynamic", "num_train_steps": STEPS, "batch_size": 16,
          "log_every": 10, "eval_every": 100000, "checkpoint_every": 100,
          "model.hidden": (32,), "model.latent_dim": 4, "eval.batch_size": 32,
          "eval.num_pictures": 4, "eval.iwae_ks": (1, 2), "seed": 3}


def _config(npz_pair):
  return set_overrides(load(os.path.join(ROOT, "configs", "vae_mnist.py")), _overrides(*npz_pair))


def _command(npz_pair, workdir, **interrupt):
  """The run's command line; `interrupt` (sigterm_at=, kill_at=, kill_in_write=) places
  an interruption at a step (tests/preempt_run.py)."""
  args = [f"--config.{k}={v}" for k, v in _overrides(*npz_pair).items()]
  points = [f"--{k}={v}" for k, v in interrupt.items()]
  return [sys.executable, os.path.join(ROOT, "tests", "preempt_run.py"), *points, "--",
          "--config=configs/vae_mnist.py", f"--workdir={workdir}", *args]


def _run(npz_pair, workdir, **interrupt):
  return subprocess.run(_command(npz_pair, workdir, **interrupt), cwd=ROOT, text=True,
                        capture_output=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  return json.loads(lines[-1])["step"] if lines else 0


def _checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _params(config, workdir):
  return jax.device_get(workdir_lib.restore_latest(experiment_lib.build(config), workdir).params)


@pytest.fixture(scope="module")
def reference(npz_pair, tmp_path_factory):
  """The uninterrupted run, in-process."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  config = _config(npz_pair)
  loop.train_and_evaluate(config, workdir)
  return config, _params(config, workdir)


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sigterm_checkpoints_the_current_step_and_resumes_bitwise(npz_pair, tmp_path,
                                                                   reference):
  config, straight = reference
  workdir = str(tmp_path / "run")
  stopped = _run(npz_pair, workdir, sigterm_at=123)
  err = stopped.stderr
  assert stopped.returncode == 128 + signal.SIGTERM, err[-2000:]
  assert "SIGTERM" in err and "Run the same command again to resume" in err, err[-2000:]
  assert int(err.split("stopped at step ")[1].split()[0]) == 123
  assert _checkpoint_steps(workdir)[-1] == 123  # not only the last periodic one
  assert _logged_steps(workdir) == 123  # pending metrics were flushed
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  rerun = _run(npz_pair, workdir)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  _assert_same_params(_params(config, workdir), straight)


def test_sigkills_one_inside_a_checkpoint_write_then_restarts_reach_the_same_params(
    npz_pair, tmp_path, reference):
  """Killed inside the write of step 200's checkpoint (its arrays written, the directory not
  yet renamed), restarted from 100, killed again at step 350 between checkpoints, restarted
  from 300 to the end: the parameters of the uninterrupted run, bitwise."""
  config, straight = reference
  workdir = str(tmp_path / "run")
  first = _run(npz_pair, workdir, kill_in_write=200)
  assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
  assert _checkpoint_steps(workdir) == [100]
  leftovers = [n for n in os.listdir(os.path.join(workdir, "checkpoints"))
               if n.startswith("200")]
  assert leftovers, "the kill did not land inside step 200's write"
  second = _run(npz_pair, workdir, kill_at=350)
  assert second.returncode == -signal.SIGKILL, second.stderr[-2000:]
  assert "Resuming from the checkpoint at step 100" in second.stderr, second.stderr[-2000:]
  assert _checkpoint_steps(workdir)[-1] == 300
  final = _run(npz_pair, workdir)
  assert final.returncode == 0, final.stderr[-2000:]
  assert "Resuming from the checkpoint at step 300" in final.stderr, final.stderr[-2000:]
  assert os.path.exists(os.path.join(workdir, "results.json"))
  _assert_same_params(_params(config, workdir), straight)
  steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))
           if "train/loss" in line]
  assert steps == sorted(set(steps))  # resumed logs were truncated, not duplicated
