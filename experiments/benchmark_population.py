"""Speed of populations, of the input pipeline and of compilation, measured side by side.

  .venv/bin/python experiments/benchmark_population.py [--steps 300] [--skip compile]
      [--config default]

1. population: configs/beta_vae_dsprites.py:runlocal's sweep (beta 1, 2, 4, 8 x seeds 0, 1:
   eight members, each its own data order) trained as one population, vmapped and looped
   (the one-run step on each member in turn), against the same eight runs one after the
   other, each `--steps` steps, with the light final evaluation of a benchmark (no
   disentanglement metrics, L_1 only). Wall time of the whole runs (compilation included:
   what a sweep costs), and the largest difference between a member's final eval/elbo and
   its run alone's. Goal: population >= 2x faster.
2. input: steps/s of the runlocal beta-VAE with batches from the real pipeline
   (procedural dSprites rendered on the host, prefetched, sharded) against the same step
   fed one synthetic batch already on the device. Goal: ratio >= 0.9.
3. compile: seconds to compile the train step of every config's runlocal variant (image
   data replaced by random npz files of the right shape where the config reads TFDS; the
   prior over VQ codes by a VQ run initialised here). Goal: <= 10 s each.

The last line of stdout is JSON.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time

import common
import jax
import numpy as np

from vaelab import spmd
from vaelab.training import step as step_lib

LIGHT_EVAL = {"eval.disentanglement": False, "eval.iwae_ks": (1,), "data.num_eval": 500,
              "eval.num_pictures": 8}


def bench_population(steps: int, root: str, config_name: str) -> dict:
  from vaelab.training import loop, population, sweep
  name, _, arg = config_name.partition(":")
  base = common.load_config(name, arg or None, {
      **LIGHT_EVAL, "num_train_steps": steps, "eval_every": 10 * steps,
      "checkpoint_every": steps, "log_every": max(steps // 4, 1)})
  trials = sweep.trial_configs(base, sweep.load_sweep(
      os.path.join(common.ROOT, "configs", "beta_vae_dsprites.py")))
  configs = [c for _, _, c in trials]
  shutil.rmtree(root, ignore_errors=True)
  out = {"members": len(configs), "steps": steps, "config": config_name}
  results = {}
  for impl in step_lib.POPULATION_IMPLS:
    common.note(f"population of {len(configs)} ({impl}): {steps} steps")
    t = time.perf_counter()
    results[impl] = population.train_population(
        configs, [os.path.join(root, impl, n) for n, _, _ in trials], impl)
    out[f"population_{impl}_s"] = time.perf_counter() - t
  common.note("one by one")
  t = time.perf_counter()
  alone = [loop.train_and_evaluate(c, os.path.join(root, "sequential", n))
           for n, _, c in trials]
  out["sequential_s"] = time.perf_counter() - t
  for impl in step_lib.POPULATION_IMPLS:
    out[f"speedup_{impl}"] = out["sequential_s"] / out[f"population_{impl}_s"]
    out[f"max_elbo_difference_{impl}"] = max(
        abs(a["eval/elbo"] - b["eval/elbo"]) for a, b in zip(results[impl], alone))
  out["elbo_alone"] = [r["eval/elbo"] for r in alone]
  return out


def bench_input(steps: int) -> dict:
  from vaelab.training import experiment as experiment_lib
  from vaelab.data import pipeline
  config = common.load_config("beta_vae_dsprites", "runlocal", LIGHT_EVAL)
  exp = experiment_lib.build(config)
  state = spmd.replicate(exp.mesh, exp.init_state())
  batcher = exp.batcher()
  fixed = spmd.shard_batch(exp.mesh, batcher.batch(0))
  state, m = exp.train_step(state, fixed, exp.hparams)  # compile
  jax.block_until_ready(m)

  def timed(batches):
    nonlocal state
    t = time.perf_counter()
    for b in batches:
      state, metrics = exp.train_step(state, b, exp.hparams)
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - t)

  rates = {"synthetic": [], "real": []}
  for _ in range(2):  # alternated, so that a change in the machine's load hits both
    rates["synthetic"].append(timed(fixed for _ in range(steps)))
    rates["real"].append(timed(pipeline.prefetch(
        spmd.shard_batch(exp.mesh, batcher.batch(s)) for s in range(1, steps + 1))))
  real, synthetic = max(rates["real"]), max(rates["synthetic"])
  return {"steps_per_sec_real": real, "steps_per_sec_synthetic": synthetic,
          "ratio": real / synthetic, "batch_size": int(config.batch_size)}


def _random_npz(path: str, shape, n: int = 64) -> str:
  rng = np.random.default_rng(0)
  np.savez(path, image=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
           label=rng.integers(0, 10, n))
  return path


def bench_compile(tmp: str) -> dict:
  from vaelab import checkpoint
  from vaelab.training import experiment as experiment_lib
  from vaelab.training import workdir as workdir_lib
  from vaelab.data import TFDS_NAMES
  shapes = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3),
            "dsprites": (64, 64, 1), "shapes3d": (64, 64, 3)}
  vq_dir = None
  out = {}
  for path in sorted(glob.glob(os.path.join(common.ROOT, "configs", "*.py"))):
    name = os.path.basename(path)[:-3]
    config = common.load_config(name, "runlocal")
    if config.data.name in TFDS_NAMES:
      shape = shapes[config.data.name]
      config.data.name = "npz"
      config.data.train_path = _random_npz(os.path.join(tmp, f"{name}.npz"), shape)
      config.data.eval_path = config.data.train_path
    if "vq_workdir" in config:
      if vq_dir is None:  # an initialised VQ-VAE of configs/vqvae_mnist.py:runlocal
        vq_config = common.load_config("vqvae_mnist", "runlocal", {
            "data.name": "npz", "data.train_path": _random_npz(os.path.join(tmp, "vq.npz"),
                                                               shapes["mnist"]),
            "data.eval_path": os.path.join(tmp, "vq.npz")})
        vq_exp = experiment_lib.build(vq_config)
        vq_dir = os.path.join(tmp, "vq_run")
        ckpt = checkpoint.Checkpointer(vq_dir, 1)
        ckpt.save(vq_exp.init_state())
        ckpt.close()
        workdir_lib._save_config(vq_config, vq_dir)
      config.vq_workdir = vq_dir
      config.data.name = "npz"
      config.data.train_path = config.data.eval_path = os.path.join(tmp, "vq.npz")
    config.batch_size = min(int(config.batch_size), 64)
    exp = experiment_lib.build(config)
    state = spmd.replicate(exp.mesh, exp.init_state())
    batch = spmd.shard_batch(exp.mesh, exp.batcher().batch(0))
    jax.clear_caches()
    t = time.perf_counter()
    exp.train_step.lower(state, batch, exp.hparams).compile()
    out[name] = time.perf_counter() - t
    common.note(f"  {name}: {out[name]:.1f} s")
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=300, help="steps of each population member")
  p.add_argument("--config", default="beta_vae_dsprites:runlocal",
                 help="NAME[:variant] of the members' model; the sweep is always "
                      "beta_vae_dsprites.py's get_sweep (loss.beta x seed)")
  p.add_argument("--input_steps", type=int, default=200)
  p.add_argument("--skip", default="", help="comma-separated: population,input,compile")
  p.add_argument("--workdir_root", default="/tmp/vaelab_experiments/benchmark_population")
  p.add_argument("--verbose", action="store_true")
  args = p.parse_args()
  common.setup_logging(args.verbose)
  skip = set(filter(None, args.skip.split(",")))
  out = {"devices": [str(d) for d in jax.devices()]}
  if "population" not in skip:
    out["population"] = bench_population(args.steps, args.workdir_root, args.config)
  if "input" not in skip:
    out["input"] = bench_input(args.input_steps)
  if "compile" not in skip:
    with tempfile.TemporaryDirectory() as tmp:
      out["compile_s"] = bench_compile(tmp)
  if "population" in out:
    r = out["population"]
    common.print_table(["", "wall s", "speed-up", "max |elbo diff|"], [
        [f"{r['members']} runs one by one", common.fmt(r["sequential_s"], ".1f"), "1.00x", "-"],
        *[[f"population of {r['members']} ({impl})",
           common.fmt(r[f"population_{impl}_s"], ".1f"),
           common.fmt(r[f"speedup_{impl}"], ".2f") + "x",
           common.fmt(r[f"max_elbo_difference_{impl}"], ".2g")] for impl in step_lib.POPULATION_IMPLS]],
        title=f"beta-VAE ({r['config']}) on procedural dSprites, {r['steps']} steps each "
              f"(goal >= 2x); eval/elbo difference to the run alone, nats")
  if "input" in out:
    r = out["input"]
    print(f"input pipeline: {r['steps_per_sec_real']:.1f} steps/s real vs "
          f"{r['steps_per_sec_synthetic']:.1f} synthetic = {r['ratio']:.2f} (goal >= 0.9)")
  if "compile_s" in out:
    common.print_table(["config (runlocal)", "compile s"],
                       [[k, common.fmt(v, ".1f")] for k, v in out["compile_s"].items()],
                       title="train step compile time (goal <= 10 s)")
  common.print_json(out)


if __name__ == "__main__":
  main()
