"""Command line: python -m vaelab.main --config=configs/NAME.py --workdir=DIR [--mode=...]

  --mode=train   train (resuming from DIR's latest checkpoint), evaluate, write results.json
  --mode=eval    recompute results.json and the pictures from DIR's latest checkpoint
  --mode=sample  write DIR/samples.png from the latest checkpoint

Several processes: the same command on each, plus --coordinator_address=HOST:PORT (process
0's), --num_processes=N and --process_id=I; on a Cloud TPU pod, Slurm or Open MPI the
environment says all that and the flags can be left out.
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from vaelab import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vaelab.training import loop
  from vaelab.training import evaluation
  with cli.reporting_errors():
    cli.start_processes()
    if _MODE.value == "train":
      loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "eval":
      evaluation.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)
    else:
      print(evaluation.sample_checkpoint(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
