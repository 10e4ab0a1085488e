"""A run's workdir: refused early if it cannot be written, its config.json, the state to
resume from (its latest usable checkpoint) and the checkpoint the other modes read."""
from __future__ import annotations

import json
import os

import jax
from absl import logging

from vaelab import checkpoint as checkpoint_lib
from vaelab import spmd
from vaelab.training import optimizer as optimizer_lib
from vaelab.training.experiment import Experiment


def _probe_workdir(workdir: str):
  """Fails now, not after an hour, if results could not be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    # One name per process: the processes of a multi-host run may share the workdir.
    probe = os.path.join(workdir, f".write_probe.{jax.process_index()}")
    with open(probe, "wb") as f:
      f.write(b"\0" * 65536)
    os.remove(probe)
  except OSError as e:
    raise OSError(f"workdir {workdir!r} is not writable: {e}") from e


def _saved_config(workdir: str) -> dict | None:
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _save_config(config, workdir: str):
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json.tmp"), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))
    os.replace(os.path.join(workdir, "config.json.tmp"), os.path.join(workdir, "config.json"))


def open_run(exp: Experiment, workdir: str | None):
  """(checkpointer or None, host state, start step) of the run in `workdir`: its latest usable
  checkpoint, or a fresh state; the workdir is probed for writing and gets the config."""
  fresh = exp.init_state()  # also the template that restore fills
  if workdir is None:
    return None, fresh, 0
  _probe_workdir(workdir)
  ckpt = checkpoint_lib.Checkpointer(workdir, int(exp.config.keep_checkpoints))
  state = ckpt.restore(fresh) or fresh
  start = int(jax.device_get(state.step))
  if start:
    logging.info("Resuming from the checkpoint at step %d in %s", start, ckpt.directory)
    _warn_changed_length(exp.config, workdir, start)
  # Learning rates are the config's, not the checkpoint's: every group's is reset.
  state = state.replace(
      opt_state=optimizer_lib.with_learning_rate(state.opt_state,
                                                 float(exp.config.optimizer.learning_rate)),
      group_opt_state={g: optimizer_lib.with_learning_rate(
          o, float(exp.config[f"{g}_optimizer"].learning_rate))
                       for g, o in state.group_opt_state.items()})
  _save_config(exp.config, workdir)
  return ckpt, state, start


def _warn_changed_length(config, workdir: str, start: int):
  """A resumed run whose num_train_steps differs from the one it started with follows the new
  length from here on: schedules stretched over it (a cosine learning rate, k-sparse's k)
  change their course, which the log must say."""
  saved = _saved_config(workdir)
  old = None if saved is None else saved.get("num_train_steps")
  new = int(config.num_train_steps)
  if old is not None and int(old) != new:
    logging.warning(
        "num_train_steps changed from %d (the run in %s was trained with) to %d, resuming at "
        "step %d: every schedule over the run's length (optimizer.schedule=%s, k-sparse's k, "
        "...) now follows %d steps, so the run differs from one trained with either length "
        "throughout.", int(old), workdir, new, start, config.optimizer.schedule, new)


def restore_latest(exp: Experiment, workdir: str):
  ckpt = checkpoint_lib.Checkpointer(workdir, int(exp.config.keep_checkpoints))
  state = ckpt.restore(exp.init_state())
  ckpt.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train "
                            f"first (--mode=train)")
  return spmd.replicate(exp.mesh, state)

