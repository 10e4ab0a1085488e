"""The training loop: `train_and_evaluate(config, workdir)` and friends.

This is the Python API that `vaelab.main` (and notebooks) call; it knows no family by name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vaelab import validation
from vaelab.data import make_sources, pipeline
from vaelab.errors import ConfigError
from vaelab.evaluate.evaluator import Evaluator
from vaelab.models import base
from vaelab.models.base import Family
from vaelab.train import checkpoint as checkpoint_lib
from vaelab.train import optimizer as optimizer_lib
from vaelab.train import step as step_lib
from vaelab.train.metrics_writer import MetricsWriter, Progress, write_json
from vaelab.train.state import TrainState


class NonFiniteError(FloatingPointError):
  pass


class Preempted(Exception):
  """A SIGTERM or SIGINT arrived; the state at the current step has been checkpointed."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step = signum, step
    super().__init__(
        f"{signal.Signals(signum).name} received: stopped at step {step} and wrote a "
        f"checkpoint there in {os.path.join(workdir, 'checkpoints')}. Run the same command "
        f"again to resume from it.")


@contextlib.contextmanager
def _preemption_signals():
  """Turns SIGTERM (a preemption notice) and SIGINT (Ctrl-C) into a flag the loop checks
  between steps, so the run stops at a step boundary with a checkpoint instead of dying
  mid-step. Handlers can only be installed from the main thread (notebooks may train in
  another one: there the signals keep their defaults). In a multi-process run they are
  left to JAX's preemption service (see `_preempted`)."""
  received: list[int] = []
  if (threading.current_thread() is not threading.main_thread()
      or jax.process_count() > 1):
    yield received
    return
  handler = lambda signum, frame: received.append(signum)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


@dataclasses.dataclass
class Experiment:
  """Everything built from a config; the pieces a notebook needs to train in-process."""
  config: Any
  family: Family
  model: Any
  tx: Any
  mesh: Any
  train_source: Any
  eval_source: Any
  train_step: Any
  hparams: dict

  def init_state(self) -> TrainState:
    if self.family.init_input is not None:
      x = self.family.init_input(self.model, self.train_source)
    else:
      x = jnp.zeros((1, *self.train_source.info.image_shape), jnp.float32)
    keys = step_lib.example_keys(int(self.config.seed), 0, jnp.zeros((1,), jnp.int32))
    variables = base.init(self.model, jax.random.key(int(self.config.seed)), x, keys)
    return TrainState.create(variables, self.tx, int(self.config.seed))

  def batcher(self) -> pipeline.Batcher:
    return pipeline.Batcher(self.train_source, int(self.config.batch_size), int(self.config.seed),
                            jax.process_index(), jax.process_count())

  def evaluator(self) -> Evaluator:
    return Evaluator(self.family, self.config, self.model, self.mesh, self.eval_source)


def build(config, sources=None, population: str | None = None,
          population_impl: str = "vmap") -> Experiment:
  """Validates the config and builds model, optimizer, data and the compiled-on-first-use step
  (`population`: the step of a population of such runs, see train/population.py)."""
  family = validation.validate(config)
  train_source, eval_source = sources or make_sources(config.data)
  _check_data(config, train_source, eval_source)
  if family.transform_sources is not None:
    train_source, eval_source = family.transform_sources(config, train_source, eval_source)
  model = family.make_model(config, train_source.info)
  tx = optimizer_lib.make_optimizer(config.optimizer, int(config.num_train_steps))
  mesh = step_lib.make_mesh()
  train_step = step_lib.make_train_step(family.make_loss(config), model, tx, mesh,
                                        config.data.binarize, config.nonfinite == "skip",
                                        population, population_impl)
  hparams = step_lib.replicate(mesh, {k: jnp.asarray(v, jnp.float32)
                                      for k, v in family.hparams(config).items()})
  return Experiment(config, family, model, tx, mesh, train_source, eval_source, train_step,
                    hparams)


def _check_data(config, train_source, eval_source):
  if train_source.info.image_shape != eval_source.info.image_shape:
    raise ConfigError(f"data: train images are {train_source.info.image_shape} but eval images "
                      f"are {eval_source.info.image_shape}")
  if config.model.get("encoder") == "conv":
    h, w, _ = train_source.info.image_shape
    f = 2**len(config.model.conv_channels)
    if h % f or w % f:
      raise ConfigError(f"model.conv_channels has {len(config.model.conv_channels)} stride-2 "
                        f"layers, so image height and width must be multiples of {f}; the data "
                        f"({config.data.name}) has {h}x{w}")


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


def _save_config(config, workdir: str):
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json.tmp"), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))
    os.replace(os.path.join(workdir, "config.json.tmp"), os.path.join(workdir, "config.json"))


def member_of(tree, index: int | None):
  """A population member's part of a state or metrics: the tree itself for a run alone
  (index None), the index-th element of a "loop" population's tuple, or the index-th row
  of a vmapped population's stacked arrays."""
  if index is None:
    return tree
  if isinstance(tree, tuple):
    return tree[index]
  return jax.tree.map(lambda v: v[index], tree)


class _MetricsBuffer:
  """Per-step metrics stay on device until a log point, so the host never waits each step.

  `member`: the index of this run in a population's metrics, or None."""

  def __init__(self, policy: str, member: int | None = None, name: str = ""):
    self.policy, self.items, self.skipped = policy, [], 0
    self.member, self.name = member, name

  def _host(self) -> list:
    """The pending steps' metrics of this run, on the host."""
    metrics = [m for _, m in self.items]
    if metrics and isinstance(metrics[0], tuple):  # one device read for this member only
      return jax.device_get([member_of(m, self.member) for m in metrics])
    return [member_of(m, self.member) for m in jax.device_get(metrics)]

  def add(self, step: int, metrics):
    self.items.append((step, metrics))

  def check(self, host: list | None = None):
    """Raises under the `stop` policy if any pending step was not finite."""
    host = self._host() if host is None else host
    bad = [s for (s, _), m in zip(self.items, host) if not bool(m["finite"])]
    if bad and self.policy == "stop":
      raise NonFiniteError(
          f"{self.name}non-finite loss or gradient at step {bad[0]}: the update was not applied and no "
          f"checkpoint after it was written. Lower optimizer.learning_rate or set "
          f"nonfinite='skip' to skip such updates.")
    return bad

  def drain(self) -> dict[str, float]:
    if not self.items:
      return {}
    host = self._host()
    self.skipped += len(self.check(host))
    self.items = []
    good = [m for m in host if bool(m["finite"])] or host
    keys = [k for k in good[0] if k != "finite"]
    return {f"train/{k}": float(np.mean([m[k] for m in good])) for k in keys}


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluates, writes results.json."""
  exp = build(config)
  ckpt, state, start = open_run(exp, workdir)
  run = Member(exp, workdir, ckpt, MetricsWriter(workdir, start),
               _MetricsBuffer(config.nonfinite), exp.evaluator(), None)
  run.buffer.skipped = int(jax.device_get(state.skipped_steps))
  batcher = exp.batcher()
  batches = (step_lib.shard_batch(exp.mesh, batcher.batch(s))
             for s in range(start, int(config.num_train_steps)))
  return run_steps(exp, [run], step_lib.replicate(exp.mesh, state), batches, start)[0]


def open_run(exp: Experiment, workdir: str):
  """(checkpointer, host state, start step) of the run in `workdir`: its latest usable
  checkpoint, or a fresh state; the workdir is probed for writing and gets the config."""
  _probe_workdir(workdir)
  ckpt = checkpoint_lib.Checkpointer(workdir, int(exp.config.keep_checkpoints))
  fresh = exp.init_state()  # also the template that restore fills
  state = ckpt.restore(fresh) or fresh
  start = int(jax.device_get(state.step))
  if start:
    logging.info("Resuming from the checkpoint at step %d in %s", start, ckpt.directory)
  state = state.replace(opt_state=optimizer_lib.with_learning_rate(
      state.opt_state, float(exp.config.optimizer.learning_rate)))
  _save_config(exp.config, workdir)
  return ckpt, state, start


@dataclasses.dataclass
class Member:
  """One run's own pieces: alone, or one member of a population sharing a step."""
  exp: Experiment  # its config, optimizer and hyperparameters
  workdir: str
  ckpt: checkpoint_lib.Checkpointer
  writer: MetricsWriter
  buffer: "_MetricsBuffer"
  evaluator: Evaluator
  index: int | None  # its position in the population; None alone

  def state(self, state):
    return member_of(state, self.index)


def run_steps(exp: Experiment, runs: list[Member], state, batches, start: int) -> list[dict]:
  """The training loop from `start` and the final evaluation, for one run or a population
  (`exp.train_step` then updates every member at once); returns each run's results."""
  num_steps, config = int(exp.config.num_train_steps), exp.config
  batches = pipeline.prefetch(batches)
  progress = Progress(start, num_steps)
  with contextlib.ExitStack() as stack:
    signals = stack.enter_context(_preemption_signals())
    for r in runs:
      stack.callback(r.writer.flush)
      stack.callback(r.ckpt.wait)
    for step in range(start, num_steps):
      state, metrics = exp.train_step(state, next(batches), exp.hparams)
      for r in runs:
        r.buffer.add(step, metrics)
      done = step + 1
      signum = _preempted(signals, done)
      if signum:
        _stop_for_preemption(signum, done, state, runs)
      if done % config.log_every == 0 or done == num_steps:
        rate = progress.rate(done)
        for r in runs:
          scalars = r.buffer.drain()
          scalars["steps_per_sec"] = rate
          scalars["train/skipped_steps"] = r.buffer.skipped
          r.writer.write(done, scalars)
          logging.info(("" if r.index is None else f"[{r.index}] ") +
                       progress.line(done, rate, scalars))
      if done % config.eval_every == 0 and done != num_steps:
        for r in runs:
          r.writer.write(done, r.evaluator(r.state(state), r.exp.hparams))
      if done % config.checkpoint_every == 0 or done == num_steps:
        for r in runs:
          r.buffer.check()  # under `stop`, a NaN since the last log ends the run before saving
          _save(r, state, runs)
  out = []
  for r in runs:
    results = _final_evaluation(r.exp, r.state(state), r.evaluator, r.workdir)
    r.writer.write(num_steps, results)
    r.writer.close()
    r.ckpt.close()
    out.append(results)
  return out


def _preempted(signals: list[int], done: int) -> int | None:
  """The signal to stop for after step `done`, or None. Alone, the first one received. With
  several processes a preemption notice may reach only some, which would then stop while
  the others wait for them in the next collective: there JAX's preemption service (on by
  default after jax.distributed.initialize; it listens for SIGTERM itself) spreads the
  notice and names one step at which every process stops together."""
  if jax.process_count() == 1:
    return signals[0] if signals else None
  from jax.experimental import multihost_utils
  return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(done) else None


def _save(run: Member, state, runs: list[Member], force: bool = False):
  run.ckpt.save(run.state(state), force=force)
  if len(runs) > 1 and jax.process_count() > 1:
    # Orbax's cross-process barriers of concurrent saves by several managers collide
    # ("ArrayMetadata Store contains metadata from just one process"): a multi-process
    # population writes its members' checkpoints one at a time.
    run.ckpt.wait()


def _stop_for_preemption(signum, done, state, runs: list[Member]):
  """Logs the pending metrics, checkpoints the state at `done` and raises Preempted."""
  for r in runs:
    scalars = r.buffer.drain()  # under `stop`, a NaN raises here and nothing is saved
    if scalars:
      scalars["train/skipped_steps"] = r.buffer.skipped
      r.writer.write(done, scalars)
  for r in runs:
    _save(r, state, runs, force=True)
  for r in runs:
    r.ckpt.wait()
  logging.warning("%s received at step %d: checkpoint written", signal.Signals(signum).name,
                  done)
  raise Preempted(signum, done, runs[0].workdir)


def _final_evaluation(exp: Experiment, state, evaluator: Evaluator, workdir: str):
  results = evaluator(state, exp.hparams, final=True)
  if exp.family.analyses is not None:
    results.update(exp.family.analyses(exp.config, exp.model, jax.device_get(state.variables()),
                                       exp.train_source, exp.eval_source))
  if exp.family.baselines is not None:
    results.update(exp.family.baselines(exp.config, exp.train_source, exp.eval_source))
  results.update(evaluator.probe(state, exp.train_source))
  results.update(evaluator.disentanglement(state))
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, "results.json"), results)
    evaluator.save_pictures(state, workdir)
  logging.info("Final evaluation: %s", results)
  return results


def restore_latest(exp: Experiment, workdir: str):
  ckpt = checkpoint_lib.Checkpointer(workdir, int(exp.config.keep_checkpoints))
  state = ckpt.restore(exp.init_state())
  ckpt.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train "
                            f"first (--mode=train)")
  return step_lib.replicate(exp.mesh, state)


def evaluate_checkpoint(config, workdir: str) -> dict[str, float]:
  """`--mode=eval`: recomputes results.json and the pictures from the latest checkpoint."""
  exp = build(config)
  state = restore_latest(exp, workdir)
  return _final_evaluation(exp, state, exp.evaluator(), workdir)


def sample_checkpoint(config, workdir: str, num: int = 64) -> str:
  """`--mode=sample`: a grid of samples from the latest checkpoint's prior."""
  from vaelab.evaluate import pictures
  exp = build(config)
  if exp.family.sample is None:
    raise ConfigError(f"model.name={config.model.name!r} has no prior to sample from")
  state = jax.device_get(restore_latest(exp, workdir))
  key = jax.random.fold_in(jax.random.key(int(config.seed)), 2**31 - 2)
  images = exp.family.sample(exp.model, state.variables(), key, num)
  path = os.path.join(workdir, "samples.png")
  if jax.process_index() == 0:  # every process drew the same samples; one writes them
    pictures.save_grid(np.asarray(images), path)
  return path
