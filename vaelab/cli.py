"""What the command-line entry points (vaelab.main, vaelab.sweep) share: the multi-process
flags, a console without orbax's per-save chatter, and the exit codes of a stopped or
refused run."""
from __future__ import annotations

import contextlib
import logging as py_logging
import sys

from absl import flags, logging

from vaelab.errors import CheckpointError, ConfigError, DataError

# Several processes (hosts, or GPUs with one process each): give all three, or none where the
# environment describes the cluster (Cloud TPU VM, Slurm, Open MPI); see train/distributed.py.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index in [0, num_processes).")


def start_processes():
  """Joins the multi-process run the flags or the environment describe (nothing for one
  process). Call it before anything touches a JAX backend: backends read the cluster when
  they start."""
  from vaelab.training import distributed
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)


class QuietCheckpointing(py_logging.Filter):
  """Orbax logs several INFO lines per save; keep the console for the progress lines."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


@contextlib.contextmanager
def reporting_errors():
  """Preemption exits with 128 + the signal (the shell's convention for death by that
  signal) after saying how to resume; a refused config, data file, checkpoint or workdir
  exits with 2 and one line naming it, instead of a traceback."""
  from vaelab.training import preemption
  logging.get_absl_handler().addFilter(QuietCheckpointing())
  try:
    yield
  except preemption.Preempted as e:
    logging.warning("%s", e)
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except (ConfigError, DataError, CheckpointError, OSError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
