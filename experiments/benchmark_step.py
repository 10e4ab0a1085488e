"""Speed of vaelab's VAE train step against a minimal hand-written `jax.jit` step.

Both steps train the same MLP VAE (by default 784-512-512-32, Bernoulli likelihood, Adam,
batch 128; `--side 64 --hidden 512,256 --latent 10 --batch_size 64` is the runlocal
beta-VAE of configs/beta_vae_dsprites.py, whose 4.5M gradients once made vaelab's step 2x
slower through a 1-device all-reduce):
vaelab's is built by `vaelab.training.experiment.build` (the SPMD step the trainer runs: shard_map,
per-example keys, pmean, NaN guard, metrics); the other is the shortest jitted step a
researcher would write by hand (flax Dense layers, one `jax.random.normal` call, softplus
Bernoulli NLL + analytic KL, optax.adam, donated params and optimizer state). Steps are
timed in alternating rounds after warm-up (compile excluded) and the median round is kept,
so a noisy shared machine slows both alike. It also measures the machine's f32 matmul rate.

  .venv/bin/python experiments/benchmark_step.py [--steps 50 --rounds 5 --batch_size 128]
      [--side 28 --hidden 512,512 --latent 32]

Goals: vaelab/hand steps-per-second ratio >= 0.9, and vaelab's step GFLOP/s >= 55% of the
measured matmul rate. The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import common
from vaelab import config_base, spmd
from vaelab.data.base import InMemorySource
from vaelab.models import vae
from vaelab.training import experiment as experiment_lib

HIDDEN, LATENT, SIDE = (512, 512), 32, 28  # set from the command line in main()


def vaelab_step(batch_size: int):
  """vaelab's compiled step, its replicated state and a device batch, built from a config."""
  c = config_base.base_config()
  vae.config_keys(c, likelihood="bernoulli")
  c.model.hidden, c.model.latent_dim, c.batch_size = HIDDEN, LATENT, batch_size
  c.data.name, c.data.binarize = "npz", "none"
  images = np.random.default_rng(0).integers(0, 256, (4 * batch_size, SIDE, SIDE, 1), np.uint8)
  src = InMemorySource("synthetic_mnist", images)
  exp = experiment_lib.build(c, sources=(src, src))
  state = spmd.replicate(exp.mesh, exp.init_state())
  batch = spmd.shard_batch(exp.mesh, exp.batcher().batch(0))
  return (lambda s: exp.train_step(s, batch, exp.hparams)[0]), state, batch, exp


class HandVAE(nn.Module):

  @nn.compact
  def __call__(self, x, eps):
    h = x.reshape(x.shape[0], -1)
    for f in HIDDEN:
      h = nn.relu(nn.Dense(f)(h))
    mean, logvar = jnp.split(nn.Dense(2 * LATENT)(h), 2, axis=-1)
    h = mean + jnp.exp(0.5 * logvar) * eps
    for f in reversed(HIDDEN):  # the decoder mirrors the encoder, as vaelab's MLP does
      h = nn.relu(nn.Dense(f)(h))
    return nn.Dense(SIDE * SIDE)(h), mean, logvar


def hand_step(image):
  model, tx = HandVAE(), optax.adam(1e-3)
  x = image.reshape(image.shape[0], -1)
  params = model.init(jax.random.key(0), x, jnp.zeros((x.shape[0], LATENT)))["params"]

  def loss_fn(params, x, key):
    logits, mean, logvar = model.apply({"params": params}, x,
                                       jax.random.normal(key, (x.shape[0], LATENT)))
    nll = jnp.sum(jax.nn.softplus(logits) - x * logits, -1)
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, -1)
    return jnp.mean(nll + kl)

  def step(params, opt_state, i, x):
    grads = jax.grad(loss_fn)(params, x, jax.random.fold_in(jax.random.key(1), i))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, i + 1

  step = jax.jit(step, donate_argnums=(0, 1))
  return lambda s: step(*s, x), (params, tx.init(params), jnp.zeros((), jnp.int32))


run = common.timed_steps


def matmul_timer(n: int, repeats: int = 3):
  """Returns a function timing one jitted (n, n) f32 matmul: best of `repeats`, in seconds."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  jax.block_until_ready(f(a, a))
  return lambda: min(run(lambda out: f(a, a), a, 1)[1] for _ in range(repeats))


def step_flops(batch_size: int, compiled) -> tuple[float, float | None]:
  """(analytic, XLA cost_analysis) FLOPs of one train step; the latter is None if missing."""
  dims = [SIDE * SIDE, *HIDDEN, 2 * LATENT], [LATENT, *reversed(HIDDEN), SIDE * SIDE]
  macs = sum(a * b for d in dims for a, b in zip(d[:-1], d[1:]))
  analytic = 3 * 2 * batch_size * macs  # backward ~ 2x forward
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla = float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None
  except Exception:  # cost analysis is best-effort and backend-dependent
    xla = None
  return analytic, xla


def main():
  global HIDDEN, LATENT, SIDE
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=50, help="steps per timed round")
  p.add_argument("--rounds", type=int, default=5, help="alternating rounds per step")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--matmul_n", type=int, default=2048, help="size of the square matmul")
  p.add_argument("--side", type=int, default=SIDE, help="image side (square, 1 channel)")
  p.add_argument("--hidden", default=",".join(map(str, HIDDEN)), help="encoder widths")
  p.add_argument("--latent", type=int, default=LATENT)
  args = p.parse_args()
  HIDDEN, LATENT, SIDE = tuple(int(h) for h in args.hidden.split(",")), args.latent, args.side
  t0 = time.perf_counter()

  v_fn, v_state, batch, exp = vaelab_step(args.batch_size)
  h_fn, h_state = hand_step(batch["image"])
  compiled = exp.train_step.lower(v_state, batch, exp.hparams).compile()
  analytic, xla = step_flops(args.batch_size, compiled)
  # XLA also counts elementwise work (Adam, softplus) but skips the gradient with respect to
  # the input images, which the analytic 3x counts: a sane count lies near the analytic one.
  sane = xla is not None and 0.5 <= xla / analytic <= 2.0
  flops = xla if sane else analytic

  benches = {"vaelab": [v_fn, run(v_fn, v_state, 5)[0]],  # compile + warm-up, excluded
             "hand": [h_fn, run(h_fn, h_state, 5)[0]]}
  matmul = matmul_timer(args.matmul_n)
  times = {"vaelab": [], "hand": [], "matmul": []}
  # Alternating rounds (and the matmul in each) see the same background load on a shared CPU.
  for r in range(args.rounds):
    for name in (("vaelab", "hand") if r % 2 == 0 else ("hand", "vaelab")):
      fn, state = benches[name]
      benches[name][1], dt = run(fn, state, args.steps)
      times[name].append(dt)
    times["matmul"].append(matmul())
  peak = 2 * args.matmul_n**3 / statistics.median(times["matmul"]) / 1e9

  v_s, h_s = statistics.median(times["vaelab"]), statistics.median(times["hand"])
  device = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} x{jax.device_count()}"
  print(f"device {device}; MLP VAE {SIDE * SIDE}-{'-'.join(map(str, HIDDEN))}-{LATENT}; batch "
        f"{args.batch_size}; {args.rounds} rounds x {args.steps} steps")
  print(f"step FLOPs: analytic {analytic / 1e9:.3f} G, XLA cost_analysis "
        f"{'n/a' if xla is None else f'{xla / 1e9:.3f} G'} -> using "
        f"{'XLA' if sane else 'analytic'}")
  print(f"f32 matmul {args.matmul_n}^3 (median round of best-of-3): {peak:.1f} GFLOP/s")
  print(f"{'name':<8}{'ms/step':>10}{'steps/s':>10}{'GFLOP/s':>10}{'vs hand':>9}")
  for name, s in (("vaelab", v_s), ("hand", h_s)):
    print(f"{name:<8}{s * 1e3:>10.3f}{1 / s:>10.1f}{flops / s / 1e9:>10.1f}{h_s / s:>9.3f}")
  print(f"vaelab/hand {h_s / v_s:.3f} (goal >= 0.9); vaelab fraction of matmul peak "
        f"{flops / v_s / 1e9 / peak:.1%} (goal >= 55%); took {time.perf_counter() - t0:.0f}s")
  print(json.dumps({
      "vaelab_ms": round(v_s * 1e3, 4), "hand_ms": round(h_s * 1e3, 4),
      "vaelab_steps_per_sec": round(1 / v_s, 2), "hand_steps_per_sec": round(1 / h_s, 2),
      "ratio_vs_hand": round(h_s / v_s, 4), "matmul_gflops": round(peak, 2),
      "step_gflops": round(flops / 1e9, 4), "step_gflops_analytic": round(analytic / 1e9, 4),
      "step_gflops_xla": None if xla is None else round(xla / 1e9, 4),
      "vaelab_gflops_per_sec": round(flops / v_s / 1e9, 2),
      "fraction_of_matmul_peak": round(flops / v_s / 1e9 / peak, 4),
      "batch_size": args.batch_size, "side": SIDE, "hidden": list(HIDDEN), "latent": LATENT,
      "device": device}))


if __name__ == "__main__":
  main()
