"""The disentanglement study at the machine's speed: its training against a bare jitted step of
the same trunk, and what its evaluations add, measured side by side.

  .venv/bin/python experiments/benchmark_study.py [--arch mlp] [--steps 400] [--rounds 2]
      [--betas 1,4,16] [--seeds 0,1,2] [--study_steps 30000] [--curve_every 5000]

The study is experiments/beta_vae_disentanglement.py's: configs/beta_vae_dsprites.py:runlocal
with the trunk `--arch`, beta x seed members on procedural dSprites. Measured, in
alternating rounds (medians), as seconds per member-step after compilation:
  bare:  a hand-written jitted beta-VAE step (flax Dense layers, optax.adam, donated state)
         of the same trunk, cycling through dSprites batches already on the device;
  bare_loop: the same step over one state per member, stepped in turn (the floor of a
         "loop" population: what holding nine states costs the machine itself);
  alone: vaelab's run of one member (its loop, its input pipeline, its metrics);
  weak_alone: the same run of an Ada-GVAE member (k = 1) of the same trunk, optimizer,
         batch, beta and seed, on pairs rendered on the device: two images per example
         (goal: <= 2.2x alone);
  loop / vmap: the whole study as one population of each implementation;
  and a run's parts outside its loop (render: the device feed's batch; step_on_ready_batch:
  vaelab's train step on one batch already made; render_then_step: the two in turn).
Then, with a population trained `--steps` steps, the cost of its evaluations: one periodic
evaluation with the curve's disentanglement scores, and the final evaluation of every
member (IWAE bounds, analyses, every disentanglement score at the study's sizes, pictures),
each as a fraction of the training it accompanies in a study of `--study_steps` steps with a
curve point every `--curve_every`. Goals: training >= 0.8x the bare step; curves
<= 10% of training; the final evaluation <= 25% of training.

The last line of stdout is JSON.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import tempfile
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

import benchmark_step
import beta_vae_disentanglement as study


def _args():
  p = common.parser(__doc__, "benchmark_study", seeds="0,1,2")
  p.add_argument("--betas", default="1,4,16")
  p.add_argument("--arch", default="mlp", choices=sorted(study.ARCHS))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--num_train", type=int, default=2000, help="final scores' sample size")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--skip_evaluations", action="store_true",
                 help="training only (a study's own metrics.jsonl has its evaluations' "
                      "time/periodic_eval_s and time/eval_s)")
  p.add_argument("--study_steps", type=int, default=30000)
  p.add_argument("--curve_every", type=int, default=5000)
  args = p.parse_args()
  args.steps = args.steps or 400
  return args


def _configs(args, steps: int, curve_every: int) -> list:
  configs = [study.config_for(args, float(b), s, args.arch, steps, curve_every)
             for b in args.betas.split(",") for s in common.seeds_of(args)]
  for c in configs:  # rates over eight intervals, the first (compilation) left out
    c.log_every = max(steps // 8, 1)
  return configs


def weak_config(config):
  """The Ada-GVAE member beside beta-VAE member `config`: every key they share taken from
  `config` (trunk, optimizer, batch, steps, beta, seed), pairs that change one factor."""
  from vaelab import config_base
  weak = common.load_config("ada_gvae_dsprites", "runlocal")
  keys = config_base.flat(weak)
  same = {k: v for k, v in config_base.flat(config).items() if k in keys and k != "model.name"}
  return common.set_overrides(weak, {**same, "data.pair_k": 1})


def bare_step_seconds(config, steps: int, members: int = 1) -> float:
  """Seconds per (member-)step of a hand-written jitted step of the same trunk (experiments/
  benchmark_step.py's HandVAE, Bernoulli NLL + KL, optax.adam), cycling through 16
  dSprites batches already on the device; with `members`, that many states (own
  parameters and Adam moments) stepped in turn, as a "loop" population steps its members."""
  import optax
  from vaelab.data.dsprites import DSpritesSource
  benchmark_step.HIDDEN = tuple(config.model.hidden)
  benchmark_step.LATENT, benchmark_step.SIDE = int(config.model.latent_dim), 64
  source, b = DSpritesSource(), int(config.batch_size)
  rng = np.random.default_rng(0)
  batches = jnp.asarray(np.stack([source.get(rng.integers(0, len(source), b))["image"]
                                  .reshape(b, -1) for _ in range(16)]))
  model, tx = benchmark_step.HandVAE(), optax.adam(float(config.optimizer.learning_rate))
  params = model.init(jax.random.key(0), batches[0], jnp.zeros((b, benchmark_step.LATENT)))

  def loss_fn(params, x, key):
    logits, mean, logvar = model.apply(params, x, jax.random.normal(
        key, (b, benchmark_step.LATENT)))
    nll = jnp.sum(jax.nn.softplus(logits) - x * logits, -1)
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, -1)
    return jnp.mean(nll + float(config.loss.beta) * kl)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, i):
    grads = jax.grad(loss_fn)(params, batches[i % 16], jax.random.fold_in(jax.random.key(1), i))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, i + 1

  states = [(p, tx.init(p), jnp.zeros((), jnp.int32)) for p in
            [params] + [jax.tree.map(jnp.copy, params) for _ in range(members - 1)]]
  in_turn = lambda states: [step(*s) for s in states]
  states, _ = benchmark_step.run(in_turn, states, 5)  # compiled
  return benchmark_step.run(in_turn, states, max(steps // members, 1))[1] / members


def step_parts_seconds(config, steps: int) -> dict:
  """Seconds per step of the parts of a run alone, outside its loop: the device feed's batch
  (procedural dSprites renders it), vaelab's train step on one batch already made, and the
  two in turn (the train steps at most 2 in flight, as the loop keeps them)."""
  from vaelab import spmd
  from vaelab.data import pipeline
  from vaelab.training import experiment as experiment_lib
  exp = experiment_lib.build(config)
  state = spmd.replicate(exp.mesh, exp.init_state())
  feed = pipeline.DeviceFeed([exp.batcher()], exp.train_form, exp.mesh)
  batch = feed.batch(0)
  state, _ = exp.train_step(state, batch, exp.hparams)  # compiled

  def timed(fn):
    nonlocal state
    window = spmd.Window(spmd.CHAINED_IN_FLIGHT)
    jax.block_until_ready(state)
    began = time.perf_counter()
    for s in range(steps):
      window.add(fn(s))
    jax.block_until_ready((state, window.pending))
    return (time.perf_counter() - began) / steps

  def step(batch):
    nonlocal state
    state, metrics = exp.train_step(state, batch, exp.hparams)
    return metrics

  return {"render": timed(feed.batch), "step_on_ready_batch": timed(lambda s: step(batch)),
          "render_then_step": timed(lambda s: step(feed.batch(s)))}


def _member_step_seconds(history: list, members: int) -> float:
  """Median seconds per member-step over the logged intervals after the first (compile)."""
  rates = [h["steps_per_sec"] for h in history if "steps_per_sec" in h][1:]
  return 1.0 / (statistics.median(rates) * members)


def vaelab_seconds(configs: list, root: str, impl: str | None) -> float:
  """Seconds per member-step of one run alone (impl None) or of the population."""
  from vaelab.training import loop, population
  shutil.rmtree(root, ignore_errors=True)
  if impl is None:
    _, _, _, history = loop.train(configs[0], None, evaluate=False)
    return _member_step_seconds(history, 1)
  dirs = [os.path.join(root, str(i)) for i in range(len(configs))]
  population.train_population(configs, dirs, impl, evaluate=False)
  with open(os.path.join(dirs[0], "metrics.jsonl")) as f:
    return _member_step_seconds(list(map(json.loads, f)), len(configs))


def evaluation_seconds(args, root: str) -> dict:
  """(one periodic evaluation with curve scores, the final evaluation) of the population."""
  from vaelab.training import population
  configs = _configs(args, 2 * args.steps, args.steps)
  dirs = [os.path.join(root, str(i)) for i in range(len(configs))]
  shutil.rmtree(root, ignore_errors=True)
  population.train_population(configs, dirs, "loop")
  with open(os.path.join(dirs[-1], "metrics.jsonl")) as f:
    timing = [r for r in map(json.loads, f) if "time/eval_s" in r][-1]
  return {"periodic_eval_s": timing["time/periodic_eval_s"],
          "final_eval_s": timing["time/eval_s"]}


def main():
  args = _args()
  common.setup_logging(args.verbose)
  root = tempfile.mkdtemp(prefix="benchmark_study_")
  configs = _configs(args, args.steps, 10 * args.steps)
  members = len(configs)
  common.note(f"{members} members, {args.arch} trunk, {args.steps} steps per measurement")
  rounds: dict[str, list] = {"bare": [], "alone": [], "weak_alone": [], "loop": [], "vmap": [],
                             "bare_loop": []}
  for r in range(args.rounds):
    common.note(f"round {r + 1}: bare")
    rounds["bare"].append(bare_step_seconds(configs[0], args.steps))
    common.note(f"round {r + 1}: bare, {members} states in turn")
    rounds["bare_loop"].append(bare_step_seconds(configs[0], args.steps, members))
    common.note(f"round {r + 1}: alone")
    rounds["alone"].append(vaelab_seconds(configs, os.path.join(root, "alone"), None))
    common.note(f"round {r + 1}: alone, Ada-GVAE")
    rounds["weak_alone"].append(vaelab_seconds([weak_config(configs[0])],
                                               os.path.join(root, "weak"), None))
    common.note(f"round {r + 1}: a run's parts")
    for k, v in step_parts_seconds(configs[0], args.steps).items():
      rounds.setdefault(k, []).append(v)
    for impl in ("loop", "vmap"):
      common.note(f"round {r + 1}: {impl} population")
      rounds[impl].append(vaelab_seconds(configs, os.path.join(root, impl), impl))
  ms = {k: 1e3 * statistics.median(v) for k, v in rounds.items()}
  member_step = min(ms["loop"], ms["vmap"]) / 1e3
  curve_train_s = members * args.curve_every * member_step
  study_train_s = members * args.study_steps * member_step
  out = {"device": str(jax.devices()[0]), "arch": args.arch, "members": members,
         **{f"{k}_ms_per_member_step": v for k, v in ms.items()},
         **{f"{k}_vs_bare": ms["bare"] / v for k, v in ms.items() if k != "bare"},
         "weak_alone_vs_alone": ms["weak_alone"] / ms["alone"],
         "study_steps": args.study_steps, "curve_every": args.curve_every,
         "study_training_minutes": study_train_s / 60}
  rows = [[k, f"{v:.2f} ms", f"{ms['bare'] / v:.2f}x bare"] for k, v in ms.items()]
  rows.append(["weak_alone / alone", "", f"{out['weak_alone_vs_alone']:.2f}x (goal <= 2.2)"])
  if not args.skip_evaluations:
    common.note("evaluations")
    ev = evaluation_seconds(args, os.path.join(root, "evaluations"))
    out.update(ev, curve_fraction=ev["periodic_eval_s"] / curve_train_s,
               final_fraction=ev["final_eval_s"] / study_train_s)
    rows += [["periodic evaluation (curve scores)", f"{ev['periodic_eval_s']:.1f} s",
              f"{100 * out['curve_fraction']:.1f}% of {args.curve_every} steps' training"],
             ["final evaluation, every member", f"{ev['final_eval_s']:.1f} s",
              f"{100 * out['final_fraction']:.1f}% of {args.study_steps} steps' training"]]
  common.print_table(["what", "time", "ratio"], rows)
  shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
