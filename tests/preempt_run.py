"""`python -m vaelab.main` with interruptions placed by construction, not by the clock:

  python tests/preempt_run.py [--sigterm_at=N] [--kill_at=N] [--kill_in_write=N] -- MAIN_FLAGS

--sigterm_at=N  sends SIGTERM to this process once step N is done (the notice a scheduler
                gives; the run's own handler takes it from there);
--kill_at=N     SIGKILLs it once step N is done and no checkpoint write is in flight (a
                kill between checkpoints);
--kill_in_write=N  SIGKILLs it inside the checkpoint write of step N: every array is in
                orbax's temporary directory, which is not yet renamed to its final name.
Each lands at its step whatever the machine's speed (a test that slept and then killed
counted on the run being slow).
"""
from __future__ import annotations

import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def _take(argv: list[str], name: str) -> int | None:
  for a in argv:
    if a.startswith(f"--{name}="):
      argv.remove(a)
      return int(a.split("=", 1)[1])
  return None


def _wait_for_writes(workdir: str, timeout: float = 120.0):
  """Until orbax has renamed every temporary checkpoint directory to its step."""
  import time
  directory = os.path.join(workdir, "checkpoints")
  end = time.time() + timeout
  while time.time() < end and any(not n.isdigit() for n in os.listdir(directory)):
    time.sleep(0.01)


def _install(workdir, sigterm_at, kill_at, kill_in_write):
  from orbax.checkpoint._src.path import atomicity
  from vaelab.training import preemption

  preempted = preemption.reached

  def at_step(signals, done):
    if done == sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
    if done == kill_at:
      _wait_for_writes(workdir)
      os.kill(os.getpid(), signal.SIGKILL)
    return preempted(signals, done)

  preemption.reached = at_step  # called by the loop after every step
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize_or_die(self):
    if kill_in_write is not None and self.get_final().name == str(kill_in_write):
      os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die


if __name__ == "__main__":
  argv = sys.argv[1:]
  points = [_take(argv, n) for n in ("sigterm_at", "kill_at", "kill_in_write")]
  argv = argv[argv.index("--") + 1:] if "--" in argv else argv
  from absl import app
  from vaelab import main
  workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
  _install(workdir, *points)
  sys.argv = [sys.argv[0], *argv]
  app.run(main.main)
