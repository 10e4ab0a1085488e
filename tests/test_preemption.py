"""Preemption: SIGTERM checkpoints the current step and exits; SIGKILL at random moments
(including during checkpoint writes) and restarts reach an uninterrupted run's parameters."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, set_overrides
from test_configs import load
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STEPS = 800


def _overrides(train, evalp):
  return {"data.name": "npz", "data.train_path": train, "data.eval_path": evalp,
          "data.binarize": "dynamic", "num_train_steps": STEPS, "batch_size": 16,
          "log_every": 10, "eval_every": 100000, "checkpoint_every": 100,
          "model.hidden": (32,), "model.latent_dim": 4, "eval.batch_size": 32,
          "eval.num_pictures": 4, "eval.iwae_ks": (1, 2), "seed": 3}


def _config(npz_pair):
  return set_overrides(load(os.path.join(ROOT, "configs", "vae_mnist.py")), _overrides(*npz_pair))


def _command(npz_pair, workdir):
  args = [f"--config.{k}={v}" for k, v in _overrides(*npz_pair).items()]
  return [sys.executable, "-m", "vaelab.main", "--config=configs/vae_mnist.py",
          f"--workdir={workdir}", *args]


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  return json.loads(lines[-1])["step"] if lines else 0


def _start(npz_pair, workdir):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(_command(npz_pair, workdir), cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_until_training(proc, workdir, beyond: int, timeout=240):
  """Blocks until the run has logged a step past `beyond` (so it is really training)."""
  t = time.time()
  while _logged_steps(workdir) <= beyond:
    if proc.poll() is not None:
      raise AssertionError(f"run ended early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
    if time.time() - t > timeout:
      proc.kill()
      raise AssertionError("run did not start training in time")
    time.sleep(0.05)


def _checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _params(config, workdir):
  return jax.device_get(loop.restore_latest(loop.build(config), workdir).params)


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
  proc = _start(npz_pair, workdir)
  _wait_until_training(proc, workdir, beyond=120)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  assert "SIGTERM" in err and "Run the same command again to resume" in err, err[-2000:]
  stopped = int(err.split("stopped at step ")[1].split()[0])
  assert 120 < stopped < STEPS
  assert _checkpoint_steps(workdir)[-1] == stopped  # not only the last periodic one
  assert _logged_steps(workdir) == stopped  # pending metrics were flushed
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  rerun = subprocess.run(_command(npz_pair, workdir), cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  _assert_same_params(_params(config, workdir), straight)


def test_sigkill_at_random_moments_then_restarts_reach_the_same_params(npz_pair, tmp_path,
                                                                       reference):
  config, straight = reference
  workdir = str(tmp_path / "run")
  rng = random.Random(0)
  kills, beyond = 0, 0
  for _ in range(3):
    proc = _start(npz_pair, workdir)
    try:
      _wait_until_training(proc, workdir, beyond)
    except AssertionError:
      if proc.returncode == 0:  # finished before we could kill it
        break
      raise
    # Checkpoints every 100 steps at a few hundred steps/s: random delays land some kills
    # inside an (async) checkpoint write.
    time.sleep(rng.uniform(0.0, 1.0))
    if proc.poll() is not None:
      break
    proc.kill()
    proc.wait()
    kills += 1
    beyond = _logged_steps(workdir)
  assert kills >= 2
  final = subprocess.run(_command(npz_pair, workdir), cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert final.returncode == 0, final.stderr[-2000:]
  assert os.path.exists(os.path.join(workdir, "results.json"))
  _assert_same_params(_params(config, workdir), straight)
  steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))
           if "train/loss" in line]
  assert steps == sorted(set(steps))  # resumed logs were truncated, not duplicated
