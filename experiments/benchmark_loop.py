"""vaelab's whole training loop against a bare jitted loop of the same model, side by side.

The bare loop is what a researcher writes in twenty lines: the same Flax module, Adam, a
jitted step with donated parameters and optimizer state, and random batches indexed from a
numpy array on the host each step. vaelab's loop is `vaelab.training.loop.train` on the same
images (an npz source, placed on the device: `data.placement=auto`), as `python -m
vaelab.main` runs it: metrics logged every `--steps / 10` steps, a checkpoint at the end,
no evaluation. Both are timed after compilation, per log interval (a tenth of the steps):
the bare loop from its 21st step, vaelab from its second interval (the first holds the
compilation); each figure is the median over the intervals of `--repeats` runs, bare and
vaelab alternating, so that both see the machine's drift.

Models:
  small    MLP AE 784-32-30, batch 32
  large    MLP AE 784-500-50, batch 100
  pythae   VAE 784-200-200-50 tanh, Bernoulli, batch 100 (pythae's own trainer, measured by
           experiments/benchmark_pythae.py)
`--default_job` also runs `make run`'s job (configs/default.py) and reports its split
between training (compilation included) and the final evaluation. `--one_core` pins the
process to one core with single-threaded XLA (the pythae comparison).

  .venv/bin/python experiments/benchmark_loop.py [--steps 3000] [--models small,large,pythae]
      [--default_job] [--one_core]

Runs unchanged on a GPU or TPU (it prints the device). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist_5k.npz")


def _args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--models", default="small,large,pythae")
  p.add_argument("--default_job", action="store_true")
  p.add_argument("--one_core", action="store_true")
  p.add_argument("--repeats", type=int, default=2,
                 help="bare and vaelab runs alternate this many times (the machine's speed "
                      "drifts; both see the same drift)")
  return p.parse_args()


ARGS = _args()
if ARGS.one_core:  # before jax starts its thread pools
  os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from vaelab import config_base  # noqa: E402
from vaelab.losses import reconstruction  # noqa: E402
from vaelab.models import ae, vae as vae_lib  # noqa: E402
from vaelab.training import loop  # noqa: E402
from vaelab.training import experiment as experiment_lib

MODELS = {
    "small": dict(family="ae", hidden=(32,), latent=30, batch=32, activation="relu"),
    "large": dict(family="ae", hidden=(500,), latent=50, batch=100, activation="relu"),
    "pythae": dict(family="vae", hidden=(200, 200), latent=50, batch=100, activation="tanh"),
}


def images(workdir: str) -> tuple[str, np.ndarray]:
  """The npz vaelab reads and the same uint8 images for the bare loop."""
  if os.path.exists(MNIST):
    x = np.load(MNIST)["image"]
  else:  # no real digits here: random strokes of the same shape
    x = (np.random.default_rng(0).random((5000, 28, 28, 1)) > 0.8).astype(np.uint8) * 255
  x = x.reshape(-1, 28, 28, 1).astype(np.uint8)
  path = os.path.join(workdir, "train.npz")
  np.savez(path, image=x)
  return path, x


def config_for(spec: dict, npz: str, steps: int):
  c = config_base.base_config()
  if spec["family"] == "vae":
    vae_lib.config_keys(c)
  else:
    ae.config_keys(c)
  c.data.name, c.data.train_path, c.data.eval_path = "npz", npz, npz
  c.model.hidden, c.model.latent_dim = spec["hidden"], spec["latent"]
  c.model.activation = spec["activation"]
  c.batch_size, c.num_train_steps = spec["batch"], steps
  c.log_every = max(steps // 10, 1)
  c.eval_every = c.checkpoint_every = steps
  return c


def vaelab_rates(config, workdir: str) -> tuple[list, float]:
  """(steps/s of each log interval after compilation, wall seconds of the whole call)."""
  t = time.perf_counter()
  _, _, _, history = loop.train(config, workdir, evaluate=False)
  wall = time.perf_counter() - t
  rates = [h["steps_per_sec"] for h in history if "steps_per_sec" in h]
  return rates[1:], wall


def bare_rates(config, x: np.ndarray, steps: int) -> list:
  """The twenty-line loop: same module, Adam, host-indexed batches, donated jitted step."""
  exp = experiment_lib.build(config)
  model, vae = exp.model, config.model.name == "vae"
  params = exp.init_state().params
  tx = optax.adam(float(config.optimizer.learning_rate))
  opt_state = tx.init(params)

  def loss_fn(params, batch, key):
    if vae:
      logits, mean, logvar = model.apply({"params": params}, batch,
                                         jax.random.split(key, batch.shape[0]))
      kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1 - logvar, -1)
      return (reconstruction.bernoulli_nll(logits, batch) + kl).mean()
    return reconstruction.bernoulli_nll(model.apply({"params": params}, batch), batch).mean()

  def step(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  rng, key, b = np.random.default_rng(0), jax.random.key(0), int(config.batch_size)

  def run(n):
    nonlocal params, opt_state
    for i in range(n):
      batch = x[rng.integers(0, len(x), b)].astype(np.float32) / 255.0
      params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(loss)

  run(20)  # compile and warm up
  interval, rates = max(steps // 10, 1), []
  for _ in range(steps // interval):  # the intervals vaelab logs at
    t = time.perf_counter()
    run(interval)
    rates.append(interval / (time.perf_counter() - t))
  return rates


def default_job(workdir: str) -> dict:
  config = config_base.load_config(os.path.join(ROOT, "configs", "default.py"))
  t = time.perf_counter()
  loop.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    times = [r for r in map(json.loads, f) if "time/train_s" in r][-1]
  return {"wall_s": wall, "train_s": times["time/train_s"], "eval_s": times["time/eval_s"]}


def main():
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  print(f"devices: {jax.devices()}{' (one core)' if ARGS.one_core else ''}")
  figures = {"device": str(jax.devices()[0]), "one_core": ARGS.one_core, "steps": ARGS.steps}
  with tempfile.TemporaryDirectory() as tmp:
    npz, x = images(tmp)
    print(f"{'model':8s} {'bare steps/s':>13s} {'vaelab steps/s':>15s} {'ratio':>6s} "
          f"{'vaelab wall s':>14s}")
    for name in ARGS.models.split(","):
      config = config_for(MODELS[name], npz, ARGS.steps)
      bare, ours, walls = [], [], []
      for r in range(ARGS.repeats):
        bare += bare_rates(config, x, ARGS.steps)
        rates, wall = vaelab_rates(config, os.path.join(tmp, f"{name}{r}"))
        ours, walls = ours + rates, walls + [wall]
      # Medians over every log interval of every repeat: steps/s after compilation.
      bare, ours, wall = float(np.median(bare)), float(np.median(ours)), float(np.median(walls))
      print(f"{name:8s} {bare:13.1f} {ours:15.1f} {ours / bare:6.2f} {wall:14.1f}")
      figures[name] = {"bare_steps_per_sec": bare, "vaelab_steps_per_sec": ours,
                       "ratio": ours / bare, "vaelab_wall_s": wall}
    if ARGS.default_job:
      job = default_job(os.path.join(tmp, "default"))
      print(f"default job: {job['wall_s']:.1f} s wall, training {job['train_s']:.1f} s "
            f"(compilation included), final evaluation {job['eval_s']:.1f} s "
            f"({job['eval_s'] / job['wall_s']:.0%})")
      figures["default_job"] = job
  print(json.dumps(figures))


if __name__ == "__main__":
  main()
