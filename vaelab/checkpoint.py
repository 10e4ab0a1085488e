"""Orbax checkpoints of the TrainState: keep the newest N, resume from the newest usable one.

Orbax writes each step into a temporary directory and renames it when complete, so a
run killed mid-write leaves the previous checkpoints intact. A checkpoint that does not
restore (damaged files, or another config's shapes) is skipped with a warning; when the
resumed run reaches that step again, the unusable directory is moved to
`<workdir>/checkpoints_unusable/<step>` (kept for inspection, never deleted) so that the
new one can take its place.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from vaelab.errors import CheckpointError


def _single_replica_saves():
  """Orbax splits the save of an array replicated over several devices into one slice per
  replica ("replica-parallel", its default off GPUs), so that hosts share the writing. In
  one process that shares nothing and costs an eager slice program per array and replica at
  every save (most of a small model's save on 4 devices: docs/design.md), so there
  replica 0 writes each array whole."""
  if jax.process_count() == 1:
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    # The registered handler's own setting (the constructor's argument, which orbax reads
    # only from its environment's platform; registering a new handler logs a warning).
    if getattr(handler, "_use_replica_parallel", False):
      handler._use_replica_parallel = False


class Checkpointer:

  def __init__(self, workdir: str, max_to_keep: int):
    _single_replica_saves()
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        # Named, so that `item_metadata` can read a checkpoint's shapes before restoring it.
        item_handlers=ocp.StandardCheckpointHandler())
    self._unusable: set[int] = set()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, state, force: bool = False) -> bool:
    step = int(jax.device_get(state.step))
    if step in self._unusable:
      self._move_aside(step)
    if step in self.manager.all_steps():
      return False
    saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
    return saved

  def restore(self, template, part: bool = False):
    """The newest checkpoint that restores into `template`'s structure, or None if none exist.

    A damaged or mismatched checkpoint is skipped with a warning naming it; if checkpoints
    exist but none is usable this raises rather than silently starting over.
    `part`: `template` is a dict of some of the state's top-level fields (e.g. params and
    model_state of a frozen model): only those are read, so an optimizer state of another
    structure does not matter.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    failures = []
    for step in reversed(self.steps()):
      try:
        # Checked first: restoring a mismatched tree fails deep inside orbax's coroutines,
        # which then print pages of "Exception ignored" tracebacks at garbage collection.
        saved = self.manager.item_metadata(step)
        if part:
          saved = {k: saved[k] for k in abstract if k in saved}
        _check_shapes(saved, abstract)
        if part:
          restored = ocp.PyTreeCheckpointer().restore(
              os.path.join(self.directory, str(step), "default"),
              args=ocp.args.PyTreeRestore(abstract, restore_args=jax.tree.map(
                  lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract),
                                          partial_restore=True))
        else:
          restored = self._restore_state(step, saved, abstract)
        # As host values, like a fresh state: in a multi-process run, arrays committed to
        # this process's device would make replicating them over the global mesh a
        # cross-host transfer, which the CPU backend refuses.
        return jax.device_get(restored)
      except Exception as e:  # orbax raises many types for a damaged directory
        path = os.path.join(self.directory, str(step))
        logging.warning("Checkpoint %s is unusable (%s: %s); trying an older one.", path,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        failures.append(f"{path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        self._unusable.add(step)
    if failures:
      raise CheckpointError(
          f"No usable checkpoint in {self.directory} ({'; '.join(failures)}). Nothing was "
          f"overwritten. If these belong to another config, use another --workdir; to start "
          f"over here, move the checkpoints directory away.")
    return None

  def _restore_state(self, step: int, saved, abstract):
    """The checkpoint of `step` in `abstract`'s structure. A field the checkpoint lacks that
    holds no array in the template (a TrainState field added since it was written, empty
    for this run: `group_opt_state` of a family without parameter groups) keeps the
    template's value, so checkpoints of earlier versions resume."""
    if dataclasses.is_dataclass(abstract) and hasattr(saved, "keys"):
      fields = [f.name for f in dataclasses.fields(abstract)]
      absent = [f for f in fields if f not in saved and not jax.tree.leaves(getattr(abstract, f))]
      if absent:
        target = {f: getattr(abstract, f) for f in fields if f not in absent}
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(target))
        return abstract.replace(**restored)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def _move_aside(self, step: int):
    if jax.process_index() == 0:
      target = os.path.join(os.path.dirname(self.directory), "checkpoints_unusable", str(step))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      if os.path.exists(target):
        shutil.rmtree(target)
      shutil.move(os.path.join(self.directory, str(step)), target)
      logging.warning("Moved the unusable checkpoint of step %d to %s; writing a new one.",
                      step, target)
    if jax.process_count() > 1:  # the others must not look before process 0 has moved it
      multihost_utils.sync_global_devices(f"vaelab_move_aside_{step}")
    self._unusable.discard(step)
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def _leaf_shapes(tree) -> dict[str, tuple]:
  def name(key):
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {"/".join(name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _check_shapes(metadata, abstract) -> None:
  """Raises ValueError naming the first array whose presence or shape differs."""
  if metadata is None:
    raise ValueError("no readable metadata")
  saved, wanted = _leaf_shapes(metadata), _leaf_shapes(abstract)
  for path in sorted(set(saved) | set(wanted)):
    if saved.get(path) != wanted.get(path):
      raise ValueError(f"{path}: the checkpoint has {saved.get(path, 'nothing')}, this "
                       f"config's model needs {wanted.get(path, 'nothing')}")
