"""Multi-process runs: 2 local CPU processes (gloo collectives) against 1 with the same global
batch, through the command line (`--coordinator_address`, `--num_processes`, `--process_id`).

Each process loads only its half of every global batch, the step's pmean crosses the two
processes, process 0 alone writes logs, results and pictures, and both write the orbax
checkpoint together. The two runs must agree step by step.
"""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import SingleDeviceSharding

from conftest import ROOT, xla_flags
from vaelab.errors import ConfigError
from vaelab.training import distributed

# Slow (several processes, each compiling every program): left out of `make test-fast`.
pytestmark = pytest.mark.slow

STEPS = 6
# A tiny VAE on the 8x8 blobs with dynamic binarization, whose randomness depends on each
# example's index in the global batch: a wrong row offset in a process would show.
FLAGS = ["--config=configs/vae_mnist.py:runlocal", "--config.data.name=npz",
         "--config.model.hidden=(16,)", "--config.model.latent_dim=4",
         f"--config.num_train_steps={STEPS}", "--config.batch_size=16",
         "--config.eval.batch_size=32", "--config.log_every=1", f"--config.eval_every={STEPS}",
         "--config.checkpoint_every=3", "--config.eval.iwae_ks=(1,5)",
         "--config.eval.num_pictures=8"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, npz_pair, *extra, module="vaelab.main", flags=FLAGS):
  train, evalp = npz_pair
  env = dict(os.environ, XLA_FLAGS=xla_flags())  # one CPU device each
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.Popen(
      [sys.executable, "-m", module, *flags, f"--config.data.train_path={train}",
       f"--config.data.eval_path={evalp}", f"--workdir={workdir}", *extra],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _cluster(process_id: int, port: int) -> list[str]:
  return [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
          f"--process_id={process_id}"]


def _finish(procs, timeout=240):
  """Waits for all; on a timeout or failure kills the rest (a process left alone in a
  collective would wait minutes for its peer) and shows the logs."""
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in lines if "train/loss" in r}, lines


def _final_params(workdir):
  """The step-STEPS checkpoint's params, restored onto this process's one device (the
  2-process checkpoint records a 2-device sharding, hence the explicit target)."""
  path = os.path.join(workdir, "checkpoints", str(STEPS), "default")
  ckptr = ocp.StandardCheckpointer()
  device = SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        ckptr.metadata(path).item_metadata)
  return jax.device_get(ckptr.restore(path, target)["params"])


@pytest.fixture(scope="module")
def runs(npz_pair, tmp_path_factory):
  """(1-process workdir, 2-process workdir, their logs), all three processes at once."""
  base = tmp_path_factory.mktemp("multihost")
  one, two = str(base / "one"), str(base / "two")
  port = _free_port()
  procs = [_start(one, npz_pair)] + [_start(two, npz_pair, *_cluster(i, port))
                                     for i in range(2)]
  logs = _finish(procs)
  return one, two, logs


def test_two_processes_give_the_losses_of_one(runs):
  one, two, logs = runs
  assert "process 1 of 2" in logs[2] and "1 local of 2 devices" in logs[2]
  expected, _ = _losses(one)
  got, lines = _losses(two)
  assert sorted(got) == list(range(1, STEPS + 1))
  # Process 0 alone logs: one line per step (and one per evaluation), not two.
  assert len([r for r in lines if "train/loss" in r]) == STEPS
  np.testing.assert_allclose([got[s] for s in sorted(got)],
                             [expected[s] for s in sorted(expected)], rtol=1e-5)


def test_two_processes_give_the_parameters_and_results_of_one(runs):
  one, two, _ = runs
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _final_params(one), _final_params(two))
  with open(os.path.join(one, "results.json")) as f:
    expected = json.load(f)
  with open(os.path.join(two, "results.json")) as f:
    got = json.load(f)
  assert got.keys() == expected.keys()
  for k in expected:  # the evaluation's sums also cross the two processes
    assert got[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-6), k
  assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["3", str(STEPS)]
  assert os.path.exists(os.path.join(two, "reconstructions.png"))
  assert not [f for f in os.listdir(two) if f.startswith(".write_probe")]


def test_partial_flags_are_refused_naming_them(monkeypatch):
  with pytest.raises(ConfigError, match="num_processes"):
    distributed.initialize("127.0.0.1:1234", None, 0)
  with pytest.raises(ConfigError, match="process_id=2"):
    distributed.initialize("127.0.0.1:1234", 2, 2)


def test_no_flags_and_no_cluster_is_one_process(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detected_cluster() is None
  assert distributed.initialize() is False
  monkeypatch.setenv("SLURM_NTASKS", "4")
  monkeypatch.setenv("SLURM_PROCID", "1")
  assert distributed.detected_cluster() is None  # a batch script, not an srun step
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node[1-4]")
  assert distributed.detected_cluster() == "Slurm (4 tasks)"
  monkeypatch.delenv("SLURM_NTASKS")
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # Open MPI 5: JAX cannot find the coordinator
  with pytest.raises(ConfigError, match="--coordinator_address"):
    distributed.detected_cluster()


def test_a_sweep_of_two_processes_gives_the_table_of_one(npz_pair, tmp_path):
  """vaelab.sweep joins the processes too; its population (both members at once) runs on
  both, and process 0 alone writes the table."""
  config = tmp_path / "two_betas.py"
  config.write_text("from configs.vae_mnist import get_config\n\n\n"
                    "def get_sweep(h):\n  return h.sweep('loss.beta', [1.0, 4.0])\n")
  flags = [f"--config={config}:runlocal", *FLAGS[1:]]
  one, two = tmp_path / "one", tmp_path / "two"
  port = _free_port()
  _finish([_start(one, npz_pair, module="vaelab.sweep", flags=flags)] +
          [_start(two, npz_pair, *_cluster(i, port), module="vaelab.sweep", flags=flags)
           for i in range(2)])
  with open(one / "sweep.csv") as f:
    expected = list(csv.DictReader(f))
  with open(two / "sweep.csv") as f:
    got = list(csv.DictReader(f))
  assert [r["loss.beta"] for r in got] == ["1.0", "4.0"]
  for e, g in zip(expected, got):
    assert g.keys() == e.keys()
    for k in e:
      if k.startswith("eval/"):
        assert float(g[k]) == pytest.approx(float(e[k]), rel=1e-5, abs=1e-6), k
  assert float(got[0]["eval/kl"]) > float(got[1]["eval/kl"])  # beta reached each member


def test_a_preemption_notice_to_one_process_stops_both_at_one_step(npz_pair, tmp_path):
  """SIGTERM to process 1 alone: JAX's preemption service names one step, both processes
  checkpoint it and exit with 128 + SIGTERM, and the same commands resume from it to the
  evaluations and results of the two processes run without a stop."""
  workdir = tmp_path / "run"
  long_run = [f for f in FLAGS if not f.startswith(("--config.num_train_steps",
                                                      "--config.log_every",
                                                      "--config.checkpoint_every"))]
  # A constant learning rate: the resumed run's length differs from the stopped one's, and
  # a schedule over the length would change course at the resume (unlike the uninterrupted
  # run it is compared with).
  flags = [*long_run, "--config.num_train_steps=100000", "--config.log_every=50",
           "--config.checkpoint_every=100000", "--config.optimizer.schedule=constant"]
  port = _free_port()
  procs = [_start(workdir, npz_pair, *_cluster(i, port), flags=flags) for i in range(2)]
  try:
    deadline = time.time() + 120
    while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").stat().st_size:
      assert time.time() < deadline and all(p.poll() is None for p in procs), "no training"
      time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)
    logs = [p.communicate(timeout=120)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, logs[0][-2000:]
  steps = [int(re.search(r"stopped at step (\d+)", log).group(1)) for log in logs]
  assert steps[0] == steps[1]
  assert os.listdir(workdir / "checkpoints") == [str(steps[0])]
  # Resumed by both, to 20 steps past the stop: the losses and results of the same two
  # processes run to that step without a stop.
  end = steps[0] + 20
  resumed = [f"--config.num_train_steps={end}" if f.startswith("--config.num_train_steps")
             else f for f in flags]
  port = _free_port()
  logs = _finish([_start(workdir, npz_pair, *_cluster(i, port), flags=resumed)
                  for i in range(2)])
  assert f"Resuming from the checkpoint at step {steps[0]}" in logs[0]
  uninterrupted = tmp_path / "uninterrupted"
  port = _free_port()
  _finish([_start(uninterrupted, npz_pair, *_cluster(i, port), flags=resumed)
           for i in range(2)])
  # (train/loss is a mean since the last log line, which the stop moved: the periodic
  # evaluations every STEPS steps after it are compared instead.)
  evals = lambda d: {r["step"]: r for r in _losses(d)[1]
                     if "eval/elbo" in r and r["step"] > steps[0]}
  got, expected = evals(workdir), evals(uninterrupted)
  assert got.keys() == expected.keys() and got
  for step, line in expected.items():
    for k, v in line.items():
      if k.startswith("eval/"):
        assert got[step][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (step, k)
  with open(workdir / "results.json") as f:
    got = json.load(f)
  with open(uninterrupted / "results.json") as f:
    expected = json.load(f)
  assert got.keys() == expected.keys() and "eval/elbo" in got
  for k in expected:
    assert got[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-6), k
