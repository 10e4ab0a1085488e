"""The training loop: `train(config, workdir)` for one run, `run_steps` for one run or a
population, and the checkpoints and logs along the way.

What `vaelab.main`, `vaelab.api` (notebooks) and populations call; it knows no family by
name. A run with `workdir=None` trains in memory: no checkpoints, no files, its metrics
kept in `MetricsWriter.history`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import time

import jax
from absl import logging

from vaelab import checkpoint as checkpoint_lib
from vaelab import spmd
from vaelab.evaluate.evaluator import Evaluator
from vaelab.training import preemption
from vaelab.training.evaluation import final_evaluation
from vaelab.training.experiment import Experiment, build
from vaelab.training.metrics_writer import MetricsWriter, Progress
from vaelab.training.pending_metrics import PendingMetrics, member_of
from vaelab.training.workdir import open_run


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluates, writes results.json."""
  return train(config, workdir, evaluate=True)[2]


def train(config, workdir: str | None, evaluate: bool = True, sources=None,
          stop_after: int | None = None, experiment: Experiment | None = None):
  """Trains one run; returns (experiment, host state, final results or None, metrics history).
  `workdir=None`: in memory, from scratch, without checkpoints or files. `stop_after`: stop
  once that step is done, with a checkpoint there and no evaluation, as a preemption would
  (the same call without it resumes). `experiment`: one built for a config that differs
  from `config` only in population keys, whose compiled steps the run reuses."""
  exp = build(config, sources) if experiment is None else experiment.for_member(config)
  ckpt, state, start = open_run(exp, workdir)
  run = RunRecord(exp, workdir, ckpt, MetricsWriter(workdir, start),
               PendingMetrics(config.nonfinite), exp.evaluator(), None)
  run.buffer.skipped = int(jax.device_get(state.skipped_steps))
  train_step, inputs = exp.run_inputs(start)
  state, results = run_steps(exp, [run], spmd.replicate(exp.mesh, state), inputs, start,
                             evaluate, stop_after, train_step)
  return exp, jax.device_get(state), results[0], run.writer.history


@dataclasses.dataclass
class RunRecord:
  """One run's own pieces: alone, or one member of a population sharing a step."""
  exp: Experiment  # its config, optimizer and hyperparameters
  workdir: str | None
  ckpt: checkpoint_lib.Checkpointer | None
  writer: MetricsWriter
  buffer: PendingMetrics
  evaluator: Evaluator
  index: int | None  # its position in the population; None alone

  def state(self, state):
    return member_of(state, self.index)


def run_steps(exp: Experiment, runs: list[RunRecord], state, inputs, start: int,
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
  began, periodic = time.perf_counter(), 0.0
  window = spmd.Window(spmd.CHAINED_IN_FLIGHT)
  chunk = POPULATION_CHUNK if len(runs) > 1 else 1
  with contextlib.ExitStack() as stack:
    signals = stack.enter_context(preemption.catching_signals(runs[0].ckpt is not None))
    for r in runs:
      stack.callback(r.writer.flush)
      if r.ckpt is not None:
        stack.callback(r.ckpt.wait)
    inputs = iter(inputs)
    done = start
    while done < stop:
      steps = range(done, _chunk_end(done, stop, chunk, log_every, eval_every,
                                     checkpoint_every))
      state, metrics = train_step.steps(state, [next(inputs) for _ in steps], exp.hparams)
      signum = None
      for step, m in zip(steps, metrics):
        window.add(m)  # not the state: the next step has taken (donated) it
        for r in runs:
          r.buffer.add(step, m)
        # Every step's check, in order (several processes meet at JAX's sync point).
        signum = preemption.reached(signals, step + 1) or signum
      done = steps[-1] + 1
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
        evaluating = time.perf_counter()
        curves = [None] * len(runs)
        if len(runs) > 1 and runs[0].evaluator.scores_curve_at(done):
          curves = Evaluator.population_disentanglement(
              [r.evaluator for r in runs], [r.state(state) for r in runs], final=False)
        for r, curve in zip(runs, curves):
          r.writer.write(done, r.evaluator(r.state(state), r.exp.hparams, curve_scores=curve))
        periodic += time.perf_counter() - evaluating
      if done % checkpoint_every == 0 or done in (num_steps, stop):
        for r in runs:
          r.buffer.check()  # under `stop`, a NaN since the last log ends the run before saving
          _save(r, state, runs)
  jax.block_until_ready(state)
  trained = time.perf_counter()
  shared, shared_s = [None] * len(runs), 0.0
  if evaluate and stop == num_steps and len(runs) > 1:
    shared = Evaluator.population_disentanglement(
        [r.evaluator for r in runs], [r.state(state) for r in runs], final=True)
    shared_s = time.perf_counter() - trained
    logging.info("Population of %d: disentanglement scores of every member on one draw in "
                 "%.1f s", len(runs), shared_s)
  out = []
  for r, scores in zip(runs, shared):
    results = None
    if stop < num_steps:
      r.writer.close()
      if r.ckpt is not None:
        r.ckpt.close()
      out.append(None)
      continue
    if evaluate:
      results = final_evaluation(r.exp, r.state(state), r.evaluator, r.workdir, scores,
                                 shared_s if scores is not None else None)
      r.writer.write(num_steps, results)
    if start < num_steps or evaluate:
      # Where a run's time goes (experiments/benchmark_loop.py, benchmark_study.py): train_s
      # includes the periodic evaluations (a member's: the whole population's); eval_s runs
      # from the end of training to the end of this run's final evaluation (for the last
      # member of a population, the population's whole final evaluation); shared_eval_s is
      # the population's scoring of every member on one draw, which eval_s includes.
      r.writer.write(num_steps, {"time/train_s": trained - began,
                                 "time/periodic_eval_s": periodic,
                                 "time/eval_s": time.perf_counter() - trained,
                                 "time/shared_eval_s": shared_s})
    r.writer.close()
    if r.ckpt is not None:
      r.ckpt.close()
    out.append(results)
  return state, out


# A population's members take up to this many steps each in turn (TrainStep.steps); a chunk
# ends where a log, an evaluation or a checkpoint falls, so each happens at its own step.
# A preemption notice stops a population at the end of its chunk.
POPULATION_CHUNK = 20


def _chunk_end(step: int, stop: int, chunk: int, *every: int) -> int:
  """The step after the last of the chunk that starts at `step`."""
  return min([stop, step + chunk] + [(step // e + 1) * e for e in every])


def _save(run: RunRecord, state, runs: list[RunRecord], force: bool = False):
  if run.ckpt is None:
    return
  run.ckpt.save(run.state(state), force=force)
  if len(runs) > 1 and jax.process_count() > 1:
    # Orbax's cross-process barriers of concurrent saves by several managers collide
    # ("ArrayMetadata Store contains metadata from just one process"): a multi-process
    # population writes its members' checkpoints one at a time.
    run.ckpt.wait()


def _stop_for_preemption(signum, done, state, runs: list[RunRecord]):
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
  raise preemption.Preempted(signum, done, runs[0].workdir)

