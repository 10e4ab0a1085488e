"""Command line: python -m vaelab.sweep --config=configs/NAME.py --workdir=DIR
                 [--config.key=value ...] [--sweep=KEY=V1,V2,... ...]
                 [--population=auto|vmap|loop|off]

Runs every trial of the config file's get_sweep(h), or of the product of the --sweep flags
where any are given (`--sweep=loss.beta=1,4,16 --sweep=seed=0,1`: six trials; a value is
read as the key's type, a tuple in brackets), in DIR/<trial name>/ (each a normal,
resumable run; the --config overrides apply to every trial), then writes DIR/sweep.csv
(one row per trial: its overrides and every eval/ metric) and DIR/sweep_<key>.png (each
metric against each swept key). Re-running it skips finished trials and resumes the rest.
--population=auto trains trials that differ only in numbers the step takes as arrays
(seed, learning rate, the family's hyperparameters such as loss.beta) together as one
population, one compilation for all: vmap batches the members in one step (accelerators'
default; equal to runs alone up to float rounding, which training amplifies), loop steps
them in turn with the one-run step (CPUs' default: faster there, and bitwise equal to runs
alone); off trains them one by one. Several processes: the multi-process flags of
vaelab.main (--coordinator_address, --num_processes, --process_id), or none on a cluster
that describes itself; every trial then runs on all processes.
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from vaelab import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep's trials.")
_POPULATION = flags.DEFINE_enum(
    "population", "auto", ["auto", "vmap", "loop", "off"],
    "auto: train compatible trials as one population (loop on CPUs, vmap on accelerators); "
    "vmap: members batched in one step; loop: members in turn (bitwise equal to runs "
    "alone); off: every trial alone.")
_SWEEP = flags.DEFINE_multi_string(
    "sweep", [], "KEY=V1,V2,...: sweep KEY over the values (repeat the flag for a product); "
    "replaces the config file's get_sweep.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vaelab.training import sweep
  with cli.reporting_errors():
    cli.start_processes()
    rows = sweep.run_sweep(_CONFIG.value, config_flags.get_config_filename(flags.FLAGS["config"]),
                           _WORKDIR.value, _POPULATION.value, _SWEEP.value)
  if rows:  # process 0's; the other processes of a multi-process sweep write no table
    print(f"{len(rows)} trials; {_WORKDIR.value}/sweep.csv")


if __name__ == "__main__":
  app.run(main)
