"""What the command-line entry points (vaelab.main, vaelab.sweep) share: a console without
orbax's per-save chatter, and the exit codes of a stopped or refused run."""
from __future__ import annotations

import contextlib
import logging as py_logging
import sys

from absl import logging

from vaelab.errors import CheckpointError, ConfigError, DataError


class QuietCheckpointing(py_logging.Filter):
  """Orbax logs several INFO lines per save; keep the console for the progress lines."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


@contextlib.contextmanager
def reporting_errors():
  """Preemption exits with 128 + the signal (the shell's convention for death by that
  signal) after saying how to resume; a refused config, data file, checkpoint or workdir
  exits with 2 and one line naming it, instead of a traceback."""
  from vaelab.train import loop
  logging.get_absl_handler().addFilter(QuietCheckpointing())
  try:
    yield
  except loop.Preempted as e:
    logging.warning("%s", e)
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except (ConfigError, DataError, CheckpointError, OSError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
