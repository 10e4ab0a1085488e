"""The command line (vaelab/main.py) on 4 simulated devices at a size with real work per
device: --mode=train, --mode=eval and --mode=sample finish, and the 4-device results equal
the 1-device run's (the final evaluation's collectives once aborted the process there)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import contract_cases as cc
from conftest import ROOT, xla_flags

# Slow (the command line's three modes on 4 devices at a size with real work): left out of
# `make test-fast`.
pytestmark = pytest.mark.slow

# Each evaluation batch costs each device far more than its dispatch costs the host, and the
# split takes dozens of batches: a host free to run ahead queues more programs than XLA:CPU
# has threads for their collectives.
FLAGS = ["--config=configs/vae_mnist.py", "--config.data.name=npz",
         "--config.model.hidden=(1024,1024)", "--config.model.latent_dim=8",
         "--config.batch_size=8", "--config.num_train_steps=2", "--config.log_every=1",
         "--config.eval_every=2", "--config.checkpoint_every=2", "--config.eval.batch_size=64",
         "--config.eval.iwae_ks=(1,2)", "--config.eval.num_pictures=4",
         "--config.eval.probe_train_size=64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cc.write_data(str(tmp_path_factory.mktemp("main")))


def _main(workdir, data, devices: int, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(devices))
  done = subprocess.run(
      [sys.executable, "-m", "vaelab.main", *FLAGS, f"--workdir={workdir}",
       f"--config.data.train_path={data['train1']}",
       f"--config.data.eval_path={data['evalmany1']}", *extra],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  # An aborted process ends its log with every loaded extension module: not the news.
  log = "\n".join(l for l in done.stderr.splitlines() if not l.startswith("Extension modules"))
  assert done.returncode == 0, log[-3000:]
  return done


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_the_three_modes_on_four_devices_give_the_one_device_results(data, tmp_path):
  one, four = str(tmp_path / "one"), str(tmp_path / "four")
  _main(one, data, 1)
  _main(four, data, 4)
  first = _results(four)
  for key in ("eval/loss", "eval/elbo", "eval/recon_sse", "eval/nll"):
    np.testing.assert_allclose(first[key], _results(one)[key], rtol=1e-5, err_msg=key)
  os.remove(os.path.join(four, "results.json"))
  _main(four, data, 4, "--mode=eval")
  assert _results(four) == pytest.approx(first, rel=1e-6)
  sampled = _main(four, data, 4, "--mode=sample")
  assert "Sampled 64 images" in sampled.stderr
  assert os.path.exists(os.path.join(four, "samples.png"))
