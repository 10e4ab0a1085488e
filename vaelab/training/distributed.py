"""Multi-process (multi-host) start-up: `jax.distributed.initialize` before any JAX computation.

One Python process runs per host (or per GPU); together they form one JAX program whose
mesh holds every process's devices. Each process loads only its rows of the global batch
(data/pipeline.py), the step's collectives cross processes, and only process 0 writes
logs, results and pictures; orbax checkpoints are written by all processes together.

`initialize` starts the distributed system when
  - the flags give the cluster (`--coordinator_address`, `--num_processes`, `--process_id`:
    any machines, including several processes on one CPU host), or
  - the environment describes one that JAX detects itself: a Cloud TPU VM (a pod slice:
    run the same command on every worker), an `srun` step of several Slurm tasks, an Open
    MPI 4 `mpirun` of several ranks, or `JAX_COORDINATOR_ADDRESS` set;
and does nothing otherwise (one process: the usual single-host run).

CPU processes exchange collectives through gloo (TCP); XLA's CPU client has none unless
`jax_cpu_collectives_implementation` is set before the backend starts, so it is set here.
"""
from __future__ import annotations

import os

import jax
from absl import logging

from vaelab.errors import ConfigError


def _count(name: str) -> int:
  try:
    return int(os.environ.get(name, "1"))
  except ValueError:
    return 1


def _on_cloud_tpu_vm() -> bool:
  # Set by `import jax` when libtpu and TPU chips are present. Private, hence the getattr:
  # an older or newer jax without it just falls back to the flags.
  try:
    from jax._src import cloud_tpu_init
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def detected_cluster() -> str | None:
  """The cluster environment this process runs in, in words, or None for a lone process.

  Only environments where `jax.distributed.initialize()` finds the coordinator, the process
  count and this process's id by itself.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']}"
  # The variables JAX's own Slurm and Open MPI detection reads (jax/_src/clusters/):
  # SLURM_STEP_NODELIST exists inside an `srun` step, OMPI_MCA_orte_hnp_uri under an Open
  # MPI 4 `mpirun`.
  if _count("SLURM_NTASKS") > 1 and {"SLURM_PROCID", "SLURM_STEP_NODELIST"} <= set(env):
    return f"Slurm ({env['SLURM_NTASKS']} tasks)"
  if _count("OMPI_COMM_WORLD_SIZE") > 1:
    if "OMPI_MCA_orte_hnp_uri" not in env:
      # Not silently N independent runs writing one workdir.
      raise ConfigError(
          f"OMPI_COMM_WORLD_SIZE={env['OMPI_COMM_WORLD_SIZE']} but JAX can only find the "
          f"coordinator under Open MPI 4 (OMPI_MCA_orte_hnp_uri): pass --coordinator_address, "
          f"--num_processes and --process_id (= $OMPI_COMM_WORLD_RANK)")
    return f"Open MPI ({env['OMPI_COMM_WORLD_SIZE']} ranks)"
  if _on_cloud_tpu_vm():
    return "Cloud TPU VM"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Starts JAX's distributed system if the flags or the environment describe a cluster.

  Must run before any JAX computation (the backends read the cluster at start-up). Returns
  whether it started one. Flags that are only partly given raise ConfigError naming them.
  """
  flags = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  given = {k: v for k, v in flags.items() if v is not None}
  if jax.distributed.is_initialized():
    return True
  if given and len(given) < len(flags):
    missing = sorted(set(flags) - set(given))
    raise ConfigError(f"--{' --'.join(sorted(given))} given without --{' --'.join(missing)}: "
                      f"a multi-process run needs all three (or none, where the environment "
                      f"describes the cluster: Cloud TPU, Slurm, Open MPI)")
  if given:
    if not (isinstance(num_processes, int) and num_processes >= 1):
      raise ConfigError(f"--num_processes={num_processes}: must be an integer >= 1")
    if not (isinstance(process_id, int) and 0 <= process_id < num_processes):
      raise ConfigError(f"--process_id={process_id}: must be in [0, --num_processes="
                        f"{num_processes})")
    if ":" not in coordinator_address:
      raise ConfigError(f"--coordinator_address={coordinator_address!r}: expected host:port "
                        f"of process 0 (e.g. 10.0.0.1:1234)")
    where = f"--coordinator_address={coordinator_address}"
  else:
    where = detected_cluster()
    if where is None:
      return False
  # gloo is the only CPU implementation that needs nothing installed (mpi needs an MPI
  # library); it is harmless where the devices are GPUs or TPUs. Respect an explicit choice.
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if given:
    # Everything is given: no probing of cluster environments.
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               cluster_detection_method="deactivate")
  else:
    jax.distributed.initialize()
  logging.info("JAX distributed system started (%s): process %d of %d, %d local of %d devices",
               where, jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
