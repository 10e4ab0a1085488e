"""The training loop: `train_and_evaluate(config, workdir)` and friends.

This is the Python API that `vaelab.main`, `vaelab.api` (notebooks) and populations call;
it knows no family by name. A run with `workdir=None` trains in memory: no checkpoints, no
files, its metrics kept in `MetricsWriter.history`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vaelab import checkpoint as checkpoint_lib
from vaelab import spmd, validation
from vaelab.data import make_sources, pipeline
from vaelab.data.base import described
from vaelab.errors import ConfigError
from vaelab.evaluate.evaluator import Evaluator
from vaelab.models.base import Family
from vaelab.training import optimizer as optimizer_lib
from vaelab.training import step as step_lib
from vaelab.files import write_json
from vaelab.training.metrics_writer import MetricsWriter, Progress
from vaelab.training.state import TrainState


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
def _preemption_signals(enabled: bool = True):
  """Turns SIGTERM (a preemption notice) and SIGINT (Ctrl-C) into a flag the loop checks
  between steps, so the run stops at a step boundary with a checkpoint instead of dying
  mid-step. Handlers can only be installed from the main thread (notebooks may train in
  another one: there the signals keep their defaults), and a run without a workdir has
  nowhere to checkpoint. In a multi-process run they are left to JAX's preemption service
  (see `_preempted`)."""
  received: list[int] = []
  if (not enabled or threading.current_thread() is not threading.main_thread()
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
  train_step: step_lib.TrainStep
  hparams: dict
  # The training source's device form when the step reads its batches on the device.
  train_form: Any = None
  # {group: optimizer} of the family's further parameter groups (`Family.groups`).
  group_txs: dict = dataclasses.field(default_factory=dict)

  def init_state(self) -> TrainState:
    variables = init_variables(self.family, self.model, self.train_source, int(self.config.seed))
    return TrainState.create(variables, self.tx, int(self.config.seed), self.group_txs)

  def batcher(self) -> pipeline.Batcher:
    return pipeline.Batcher(self.train_source, int(self.config.batch_size), int(self.config.seed),
                            jax.process_index(), jax.process_count())

  def evaluator(self) -> Evaluator:
    return Evaluator(self.family, self.config, self.model, self.mesh, self.eval_source)

  def step_inputs(self, batchers: list, start: int, stacked: bool = False,
                  per_member: bool = False):
    """The train step's inputs for steps [start, num_train_steps): from one batcher (a run,
    or members sharing batches) or one per member, stacked on a member axis (a vmapped
    population) or as a tuple per step (`per_member`, members stepped in turn)."""
    steps = range(start, int(self.config.num_train_steps))
    if self.train_form is not None:
      feed = pipeline.DeviceFeed(batchers, self.train_form, self.mesh, stacked, per_member)
      return (feed.batch(s) for s in steps)
    shard = lambda b, **kw: spmd.shard_batch(self.mesh, b, **kw)
    if stacked:
      batches = (shard({k: np.stack([b[k] for b in member]) for k in member[0]}, stacked=True)
                 for s in steps for member in [[b.batch(s) for b in batchers]])
    elif per_member:
      batches = (tuple(shard(b.batch(s)) for b in batchers) for s in steps)
    else:
      batches = (shard(batchers[0].batch(s)) for s in steps)
    return pipeline.prefetch(batches)

  def run_inputs(self, start: int):
    """(train step, its inputs for steps [start, num_train_steps)) of a run alone: on the
    device path the gather compiled into the step, which then takes the gather's arguments
    (where the device form allows it: `DeviceForm.fuse`); otherwise `train_step` and the
    batches of `step_inputs`."""
    if self.train_form is None or not self.train_form.fuse:
      return self.train_step, self.step_inputs([self.batcher()], start)
    feed = pipeline.DeviceFeed([self.batcher()], self.train_form, self.mesh)
    steps = range(start, int(self.config.num_train_steps))
    return self.train_step.with_input(feed.gather), (feed.args(s) for s in steps)


def init_variables(family: Family, model, train_source, seed: int) -> dict:
  if family.init_input is not None:
    x = family.init_input(model, train_source)
  else:
    x = jnp.zeros((1, *train_source.info.image_shape), jnp.float32)
  keys = spmd.example_keys(seed, 0, jnp.zeros((1,), jnp.int32))
  return spmd.init(model, jax.random.key(seed), x, keys)


def hparams_of(family: Family, config, mesh) -> dict:
  return spmd.replicate(mesh, {k: jnp.asarray(v, jnp.float32)
                               for k, v in family.hparams(config).items()})


def build(config, sources=None, population: str | None = None,
          population_impl: str = "vmap") -> Experiment:
  """Validates the config and builds model, optimizer, data and the compiled-on-first-use step
  (`population`: the step of a population of such runs, see train/population.py)."""
  family = validation.validate(config)
  train_source, eval_source = sources or make_sources(config.data)
  _check_data(config, train_source, eval_source)
  if family.transform_sources is not None:
    train_source, eval_source = family.transform_sources(config, train_source, eval_source)
  info = described(train_source)
  model = family.make_model(config, info)
  tx, group_txs = optimizers(family, config)
  mesh = spmd.make_mesh()
  batch_size = int(config.batch_size)
  form = pipeline.device_form(train_source, config.data.placement, batch_size,
                              reads=batch_size * int(config.num_train_steps))
  train_step = step_lib.make_train_step(family.make_loss(config, info), model, tx, mesh,
                                        config.data.binarize, config.nonfinite == "skip",
                                        population, population_impl, group_txs)
  return Experiment(config, family, model, tx, mesh, train_source, eval_source, train_step,
                    hparams_of(family, config, mesh), form, group_txs)


def optimizers(family: Family, config):
  """(the model's optimizer, {group: its optimizer}) from `optimizer.*` and each further
  parameter group's own section `<group>_optimizer.*`."""
  steps = int(config.num_train_steps)
  return (optimizer_lib.make_optimizer(config.optimizer, steps),
          {g: optimizer_lib.make_optimizer(config[f"{g}_optimizer"], steps)
           for g in family.groups})


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
  """Per-step metrics (one packed vector per step) stay on device until a log point, so the
  host never waits each step.

  `member`: the index of this run in a population's metrics, or None."""

  def __init__(self, policy: str, member: int | None = None, name: str = ""):
    self.policy, self.items, self.skipped = policy, [], 0
    self.member, self.name = member, name

  def _host(self) -> list[dict]:
    """The pending steps' metrics of this run, on the host: one small read per step."""
    return [m.to_dict() for m in jax.device_get([member_of(m, self.member)
                                                 for _, m in self.items])]

  def add(self, step: int, metrics):
    self.items.append((step, metrics))

  def check(self, host: list | None = None):
    """Raises under the `stop` policy if any pending step was not finite."""
    host = self._host() if host is None else host
    bad = [s for (s, _), m in zip(self.items, host) if not bool(m["finite"])]
    if bad and self.policy == "stop":
      raise NonFiniteError(
          f"{self.name}non-finite loss or gradient at step {bad[0]}: the update was not applied "
          f"and no checkpoint after it was written. Lower optimizer.learning_rate or set "
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
  return train(config, workdir, evaluate=True)[2]


def train(config, workdir: str | None, evaluate: bool = True, sources=None,
          stop_after: int | None = None):
  """Trains one run; returns (experiment, host state, final results or None, metrics history).
  `workdir=None`: in memory, from scratch, without checkpoints or files. `stop_after`: stop
  once that step is done, with a checkpoint there and no evaluation, as a preemption would
  (the same call without it resumes)."""
  exp = build(config, sources)
  ckpt, state, start = open_run(exp, workdir)
  run = Member(exp, workdir, ckpt, MetricsWriter(workdir, start),
               _MetricsBuffer(config.nonfinite), exp.evaluator(), None)
  run.buffer.skipped = int(jax.device_get(state.skipped_steps))
  train_step, inputs = exp.run_inputs(start)
  state, results = run_steps(exp, [run], spmd.replicate(exp.mesh, state), inputs, start,
                             evaluate, stop_after, train_step)
  return exp, jax.device_get(state), results[0], run.writer.history


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


@dataclasses.dataclass
class Member:
  """One run's own pieces: alone, or one member of a population sharing a step."""
  exp: Experiment  # its config, optimizer and hyperparameters
  workdir: str | None
  ckpt: checkpoint_lib.Checkpointer | None
  writer: MetricsWriter
  buffer: "_MetricsBuffer"
  evaluator: Evaluator
  index: int | None  # its position in the population; None alone

  def state(self, state):
    return member_of(state, self.index)


def run_steps(exp: Experiment, runs: list[Member], state, inputs, start: int,
              evaluate: bool = True, stop_after: int | None = None, train_step=None):
  """The training loop from `start` and the final evaluation, for one run or a population
  (`exp.train_step` then updates every member at once); returns the final (device) state
  and each run's results (None each without `evaluate`, or when stopped by `stop_after`).
  `train_step` (default `exp.train_step`) is what `inputs` feed."""
  train_step = exp.train_step if train_step is None else train_step
  config = exp.config
  num_steps = int(config.num_train_steps)
  stop = num_steps if stop_after is None else min(int(stop_after), num_steps)
  progress = Progress(start, num_steps)
  log_every, eval_every = int(config.log_every), int(config.eval_every)
  checkpoint_every = int(config.checkpoint_every)
  began = time.perf_counter()
  window = spmd.Window(spmd.CHAINED_IN_FLIGHT)
  with contextlib.ExitStack() as stack:
    signals = stack.enter_context(_preemption_signals(runs[0].ckpt is not None))
    for r in runs:
      stack.callback(r.writer.flush)
      if r.ckpt is not None:
        stack.callback(r.ckpt.wait)
    for step, step_inputs in zip(range(start, stop), inputs):
      state, metrics = train_step(state, step_inputs, exp.hparams)
      window.add(metrics)  # not the state: the next step has taken (donated) it
      for r in runs:
        r.buffer.add(step, metrics)
      done = step + 1
      signum = _preempted(signals, done)
      if signum:
        _stop_for_preemption(signum, done, state, runs)
      if done % log_every == 0 or done in (num_steps, stop):
        rate = progress.rate(done)
        for r in runs:
          scalars = r.buffer.drain()
          scalars["steps_per_sec"] = rate
          scalars["train/skipped_steps"] = r.buffer.skipped
          r.writer.write(done, scalars)
          logging.info(("" if r.index is None else f"[{r.index}] ") +
                       progress.line(done, rate, scalars))
      if done % eval_every == 0 and done != num_steps:
        for r in runs:
          r.writer.write(done, r.evaluator(r.state(state), r.exp.hparams))
      if done % checkpoint_every == 0 or done in (num_steps, stop):
        for r in runs:
          r.buffer.check()  # under `stop`, a NaN since the last log ends the run before saving
          _save(r, state, runs)
  jax.block_until_ready(state)
  trained = time.perf_counter()
  out = []
  for r in runs:
    results = None
    if stop < num_steps:
      r.writer.close()
      if r.ckpt is not None:
        r.ckpt.close()
      out.append(None)
      continue
    if evaluate:
      results = final_evaluation(r.exp, r.state(state), r.evaluator, r.workdir)
      r.writer.write(num_steps, results)
    if start < num_steps or evaluate:
      # Where a run's time goes (the default job's split, experiments/benchmark_loop.py).
      r.writer.write(num_steps, {"time/train_s": trained - began,
                                 "time/eval_s": time.perf_counter() - trained})
    r.writer.close()
    if r.ckpt is not None:
      r.ckpt.close()
    out.append(results)
  return state, out


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
  if run.ckpt is None:
    return
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


def final_evaluation(exp: Experiment, state, evaluator: Evaluator, workdir: str | None):
  """The final evaluation of a run: the family's metrics over the evaluation split (final
  ones included), analyses, baselines, probe and disentanglement; with a workdir, also
  results.json and the pictures."""
  timings, t = {}, time.perf_counter()

  def lap(name):
    nonlocal t
    now = time.perf_counter()
    timings[name], t = now - t, now

  results = evaluator(state, exp.hparams, final=True)
  lap("metrics")
  if exp.family.analyses is not None:
    results.update(exp.family.analyses(exp.config, exp.model, jax.device_get(state.variables()),
                                       evaluator.model_source(exp.train_source),
                                       evaluator.model_source(exp.eval_source)))
  lap("analyses")
  if exp.family.baselines is not None:
    results.update(exp.family.baselines(exp.config, exp.train_source, exp.eval_source))
  lap("baselines")
  results.update(evaluator.probe(state, exp.train_source))
  lap("probe")
  results.update(evaluator.disentanglement(state))
  lap("disentanglement")
  if workdir is not None and jax.process_index() == 0:
    write_json(os.path.join(workdir, "results.json"), results)
    evaluator.save_pictures(state, workdir, results)
  lap("pictures")
  logging.info("Final evaluation (%s): %s",
               ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), results)
  return results


def restore_latest(exp: Experiment, workdir: str):
  ckpt = checkpoint_lib.Checkpointer(workdir, int(exp.config.keep_checkpoints))
  state = ckpt.restore(exp.init_state())
  ckpt.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train "
                            f"first (--mode=train)")
  return spmd.replicate(exp.mesh, state)


def evaluate_checkpoint(config, workdir: str) -> dict[str, float]:
  """`--mode=eval`: recomputes results.json and the pictures from the latest checkpoint."""
  exp = build(config)
  state = restore_latest(exp, workdir)
  return final_evaluation(exp, state, exp.evaluator(), workdir)


def sample_checkpoint(config, workdir: str, num: int = 64) -> str:
  """`--mode=sample`: a grid of samples from the latest checkpoint's prior, timed."""
  from vaelab.evaluate import pictures
  exp = build(config)
  if exp.family.sample is None:
    raise ConfigError(f"model.name={config.model.name!r} has no prior to sample from")
  state = jax.device_get(restore_latest(exp, workdir))
  key = jax.random.fold_in(jax.random.key(int(config.seed)), 2**31 - 2)
  t = time.perf_counter()
  images = np.asarray(exp.family.sample(exp.model, state.variables(), key, num, config=config))
  first = time.perf_counter() - t
  # Again, compiled: the time a sampler takes, apart from its compilation.
  t = time.perf_counter()
  np.asarray(exp.family.sample(exp.model, state.variables(), key, num, config=config))
  took = time.perf_counter() - t
  logging.info("Sampled %d images in %.3f s (%.2f ms per image; the first call, with "
               "compilation, %.1f s)", num, took, 1e3 * took / num, first)
  path = os.path.join(workdir, "samples.png")
  if jax.process_index() == 0:  # every process drew the same samples; one writes them
    pictures.save_grid(images, path)
  return path
