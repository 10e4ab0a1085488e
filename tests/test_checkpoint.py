"""Damaged and foreign checkpoints: skipped with a warning naming them, resumed from the one
before, replaced when the run reaches their step again; a workdir with no usable checkpoint
is refused (CLI exit 2) and nothing already written there changes; an unwritable workdir is
refused before training."""
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

from conftest import ROOT, tiny_config
from vaelab.errors import CheckpointError
from vaelab import checkpoint
from vaelab.training import loop
from vaelab.training import experiment as experiment_lib
from vaelab.training import workdir as workdir_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def finished(npz_pair, tmp_path_factory):
  """A 10-step run with checkpoints at 5 and 10: (config, workdir)."""
  workdir = str(tmp_path_factory.mktemp("ckpt") / "run")
  config = tiny_config("vae", *npz_pair, num_train_steps=10, log_every=5)
  loop.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.fixture
def copy_of(finished, tmp_path):
  config, workdir = finished
  target = str(tmp_path / "run")
  shutil.copytree(workdir, target)
  return config, target


def _warnings(monkeypatch):
  seen = []
  monkeypatch.setattr(absl_logging, "warning", lambda msg, *a: seen.append(msg % a))
  return seen


def _restore(config, workdir):
  exp = experiment_lib.build(config)
  ckpt = checkpoint.Checkpointer(workdir, 3)
  try:
    state = ckpt.restore(exp.init_state())
  finally:
    ckpt.close()
  return None if state is None else int(jax.device_get(state.step))


def _files(root):
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("damage", ["truncate", "delete_entry"])
def test_a_damaged_checkpoint_is_skipped_naming_it_and_replaced_on_resume(copy_of, damage,
                                                                         monkeypatch):
  config, workdir = copy_of
  step10 = os.path.join(workdir, "checkpoints", "10")
  files = _files(step10)
  if damage == "truncate":  # every file of the step cut to half: data and metadata
    for f in files:
      with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
  else:
    os.remove(next(f for f in files if os.path.basename(f) == "_METADATA"))
  seen = _warnings(monkeypatch)
  assert _restore(config, workdir) == 5
  assert any(step10 in w for w in seen), seen
  # Resuming retrains 5 -> 10 and replaces the damaged step; the old one is kept aside.
  loop.train_and_evaluate(config, workdir)
  assert _restore(config, workdir) == 10
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unusable", "10"))


def test_a_workdir_of_another_config_is_refused_and_left_as_it_was(copy_of, tmp_path):
  config, workdir = copy_of
  before = {f: open(f, "rb").read() for f in _files(workdir)}
  other = tiny_config("vae", config.data.train_path, config.data.eval_path,
                      **{"model.hidden": (24,)})
  with pytest.raises(CheckpointError, match=r"checkpoints/10: ValueError: .*the checkpoint "
                                             r"has \(32,\), this config's model needs \(24,\)"):
    loop.train_and_evaluate(other, workdir)
  assert {f: open(f, "rb").read() for f in _files(workdir)} == before


def test_cli_refuses_a_foreign_workdir_and_an_unwritable_one(copy_of, tmp_path):
  config, workdir = copy_of
  common = ["--config=configs/vae_mnist.py:runlocal", "--config.data.name=npz",
            f"--config.data.train_path={config.data.train_path}",
            f"--config.data.eval_path={config.data.eval_path}", "--config.num_train_steps=10",
            "--config.batch_size=16", "--config.eval.batch_size=32"]
  run = lambda *args: subprocess.run([sys.executable, "-m", "vaelab.main", *common, *args],
                                     capture_output=True, text=True, cwd=ROOT, timeout=300)
  out = run(f"--workdir={workdir}")  # runlocal's hidden sizes differ from the fixture's
  assert out.returncode == 2, out.stderr[-2000:]
  assert "No usable checkpoint" in out.stderr and "Exception ignored" not in out.stderr
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  out = run(f"--workdir={blocker}/run")
  assert out.returncode == 2 and "is not writable" in out.stderr, out.stderr[-2000:]


def test_shape_check_names_the_first_differing_array():
  abstract = {"params": {"w": np.zeros((3, 4))}, "step": np.zeros(())}
  checkpoint._check_shapes({"params": {"w": np.zeros((3, 4))}, "step": np.zeros(())}, abstract)
  with pytest.raises(ValueError, match=r"params/w: the checkpoint has \(3, 5\).*\(3, 4\)"):
    checkpoint._check_shapes({"params": {"w": np.zeros((3, 5))}, "step": np.zeros(())},
                             abstract)
  with pytest.raises(ValueError, match="params/b: the checkpoint has nothing"):
    checkpoint._check_shapes({"params": {"w": np.zeros((3, 4))}, "step": np.zeros(())},
                             {**abstract, "params": {"w": np.zeros((3, 4)),
                                                     "b": np.zeros((4,))}})


def test_a_checkpoint_written_before_parameter_groups_existed_resumes(copy_of, tmp_path):
  """TrainState gained `group_opt_state` (empty for families without parameter groups):
  a checkpoint without it still restores, bitwise, into the current state."""
  import orbax.checkpoint as ocp
  config, workdir = copy_of
  exp = experiment_lib.build(config)
  state = workdir_lib.restore_latest(exp, workdir)
  older = str(tmp_path / "older")
  fields = ("step", "params", "opt_state", "model_state", "seed", "skipped_steps")
  manager = ocp.CheckpointManager(os.path.join(older, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=True),
                                  item_handlers=ocp.StandardCheckpointHandler())
  manager.save(10, args=ocp.args.StandardSave({f: getattr(state, f) for f in fields}))
  manager.wait_until_finished()
  restored = workdir_lib.restore_latest(exp, older)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)
  assert restored.group_opt_state == {}
