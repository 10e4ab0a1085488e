"""Preemption: SIGTERM (a scheduler's notice) or SIGINT stops a run at the next step
boundary with a checkpoint there (`training/loop.py` saves it), alone or across processes."""
from __future__ import annotations

import contextlib
import os
import signal
import threading

import jax


class Preempted(Exception):
  """A SIGTERM or SIGINT arrived; the state at the current step has been checkpointed."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step = signum, step
    super().__init__(
        f"{signal.Signals(signum).name} received: stopped at step {step} and wrote a "
        f"checkpoint there in {os.path.join(workdir, 'checkpoints')}. Run the same command "
        f"again to resume from it.")


@contextlib.contextmanager
def catching_signals(enabled: bool = True):
  """Turns SIGTERM (a preemption notice) and SIGINT (Ctrl-C) into a flag the loop checks
  between steps, so the run stops at a step boundary with a checkpoint instead of dying
  mid-step. Handlers can only be installed from the main thread (notebooks may train in
  another one: there the signals keep their defaults), and a run without a workdir has
  nowhere to checkpoint. In a multi-process run they are left to JAX's preemption service
  (see `reached`)."""
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


def reached(signals: list[int], done: int) -> int | None:
  """The signal to stop for after step `done`, or None. Alone, the first one received. With
  several processes a preemption notice may reach only some, which would then stop while
  the others wait for them in the next collective: there JAX's preemption service (on by
  default after jax.distributed.initialize; it listens for SIGTERM itself) spreads the
  notice and names one step at which every process stops together."""
  if jax.process_count() == 1:
    return signals[0] if signals else None
  from jax.experimental import multihost_utils
  return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(done) else None

