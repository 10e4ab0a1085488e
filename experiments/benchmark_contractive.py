"""Speed of the contractive train step, for each penalty path, against the plain AE step.

All steps train the same 784-1000 sigmoid autoencoder (cross-entropy, Adam, batch 128)
through `vaelab.training.experiment_lib.build` (the SPMD step the trainer runs): `ae` is the family `ae`
with no penalty; `cae:<path>` is the family `cae` with `loss.penalty=<path>` (closed_form:
exact, one matmul; estimator: `--num_projections` jvps; jacfwd: the full 1000x784 Jacobian per
example, the reference). Steps are timed in alternating rounds after warm-up (compile
excluded) and the median round is kept, so a noisy shared machine slows all alike.

  .venv/bin/python experiments/benchmark_contractive.py [--steps 20 --rounds 5]

Goal: closed_form and estimator at most 2x the AE step. The last line of stdout is one JSON
object with the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

import common
from vaelab import config_base, spmd
from vaelab.data.base import InMemorySource
from vaelab.models import ae
from vaelab.training import experiment as experiment_lib

LATENT = 1000


def build_step(name: str, batch_size: int, num_projections: int, src):
  c = config_base.base_config()
  ae.config_keys(c)
  c.model.hidden, c.model.latent_dim, c.model.code_activation = (), LATENT, "sigmoid"
  c.batch_size, c.data.name, c.data.binarize = batch_size, "npz", "none"
  if name != "ae":
    c.model.name = "cae"
    c.loss.contractive_weight = 0.1
    c.loss.penalty = name.split(":")[1]
    c.loss.num_projections = num_projections
  exp = experiment_lib.build(c, sources=(src, src))
  state = spmd.replicate(exp.mesh, exp.init_state())
  batch = spmd.shard_batch(exp.mesh, exp.batcher().batch(0))
  return (lambda s: exp.train_step(s, batch, exp.hparams)[0]), state


run = common.timed_steps


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=20, help="steps per timed round (fast paths)")
  p.add_argument("--jacfwd_steps", type=int, default=1, help="steps per round for jacfwd")
  p.add_argument("--rounds", type=int, default=5, help="alternating rounds")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--num_projections", type=int, default=1)
  p.add_argument("--skip_jacfwd", action="store_true")
  args = p.parse_args()
  t0 = time.perf_counter()
  images = np.random.default_rng(0).integers(0, 256, (4 * args.batch_size, 28, 28, 1), np.uint8)
  src = InMemorySource("synthetic_mnist", images)
  names = ["ae", "cae:closed_form", "cae:estimator"] + ([] if args.skip_jacfwd else ["cae:jacfwd"])
  benches = {}
  for name in names:
    fn, state = build_step(name, args.batch_size, args.num_projections, src)
    benches[name] = [fn, run(fn, state, 2)[0]]  # compile + warm-up, excluded
  times = {name: [] for name in names}
  for r in range(args.rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      fn, state = benches[name]
      steps = args.jacfwd_steps if name == "cae:jacfwd" else args.steps
      benches[name][1], dt = run(fn, state, steps)
      times[name].append(dt)
  med = {name: statistics.median(t) for name, t in times.items()}
  ae_s = med["ae"]
  device = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} x{jax.device_count()}"
  print(f"device {device}; 784-{LATENT} sigmoid, batch {args.batch_size}; {args.rounds} rounds; "
        f"estimator with {args.num_projections} projection(s)")
  print(f"{'step':<18}{'ms/step':>10}{'steps/s':>10}{'x AE':>8}")
  for name in names:
    print(f"{name:<18}{med[name] * 1e3:>10.2f}{1 / med[name]:>10.2f}{med[name] / ae_s:>8.2f}")
  ok = all(med[n] <= 2 * ae_s for n in ("cae:closed_form", "cae:estimator"))
  print(f"goal closed_form and estimator <= 2x AE: {'met' if ok else 'NOT met'}; "
        f"took {time.perf_counter() - t0:.0f}s")
  out = {f"{n.replace('cae:', '')}_ms": round(med[n] * 1e3, 3) for n in names}
  out.update({f"{n.replace('cae:', '')}_vs_ae": round(med[n] / ae_s, 3) for n in names[1:]})
  out.update(goal_met=ok, batch_size=args.batch_size, num_projections=args.num_projections,
             device=device)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
