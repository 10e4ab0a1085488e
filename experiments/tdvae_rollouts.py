"""TD-VAE rollouts (Gregor et al. 2019): moving MNIST digits and the noisy harmonic oscillator.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz /tmp/mnist_train.npz \
      /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/tdvae_rollouts.py [--seeds 0,1] [--steps N] [--glyphs]

Trains configs/tdvae_moving_digits.py on sequences built from the training digits (a digit
moving one pixel per step left or right with wrap-around, from a random offset) and
configs/tdvae_oscillator.py, one workdir per run (running the script again resumes them; a
finished run is only evaluated again). Prints, per jump J, the mean squared error per pixel of
the frame predicted J steps after a 10-frame context (one jump of J, and J jumps of 1) beside
the two baselines scored on the same frames (repeat the last context frame; the mean training
frame) and the direction accuracy (0.5 = blind to the motion); then the same for the
oscillator's horizons after a 50-step context. Every prediction is the decoder mean of one
sampled rollout. The rollout pictures are each run's rollouts.png. The last line is JSON.
`--glyphs` uses the procedural digit glyphs instead of the MNIST files (offline).
"""
from __future__ import annotations

import os
import time

import common


def _digit_overrides(args) -> dict:
  if args.glyphs:
    return {"data.name": "moving_digits", "data.train_path": "", "data.eval_path": ""}
  return {"data.name": "moving_digits", "data.train_path": args.train,
          "data.eval_path": args.eval}


def _run(name: str, tag: str, overrides: dict, args, seed: int):
  o = dict(overrides, seed=seed)
  if args.steps is not None:
    o["num_train_steps"] = int(args.steps)
  config = common.load_config(name, None, o)
  workdir = common.workdir_for(args.workdir_root, tag, config)
  common.note(f"{tag}: training {int(config.num_train_steps)} steps in {workdir}")
  results, wall = common.train(config, workdir)
  common.note(f"{tag}: done in {wall:.0f} s")
  return config, results, wall, workdir


def _mean_over_seeds(runs: list[dict]) -> dict:
  return {k: common.mean(r[k] for r in runs) for k in runs[0]}


def main():
  p = common.parser(__doc__.splitlines()[0], "tdvae_rollouts")
  p.add_argument("--glyphs", action="store_true",
                 help="procedural digit glyphs instead of the MNIST npz files")
  args = p.parse_args()
  common.setup_logging(args.verbose)
  if not args.glyphs:
    common.check_data(args)
  seeds = common.seeds_of(args)
  start = time.perf_counter()
  out = {}
  for name, tag, overrides in (
      ("tdvae_moving_digits", "glyphs" if args.glyphs else "moving_mnist",
       _digit_overrides(args)),
      ("tdvae_oscillator", "oscillator", {})):
    runs, walls, pictures = [], [], []
    for seed in seeds:
      config, results, wall, workdir = _run(name, tag, overrides, args, seed)
      runs.append(results)
      walls.append(wall)
      pictures.append(os.path.join(workdir, "rollouts.png"))
    r = _mean_over_seeds(runs)
    jumps = [int(j) for j in config.eval.jumps]
    step = int(config.eval.rollout_step)
    digits = "eval/rollout_direction_accuracy" in r
    headers = ["J", "TD-VAE jump", f"TD-VAE {step}-steps", "last frame", "mean frame"]
    if digits:
      headers.append("direction acc.")
    rows = []
    for j in jumps + ["mean"]:
      sfx = "" if j == "mean" else f"_j{j}"
      row = [j, common.fmt(r[f"eval/rollout_mse{sfx}"], ".4f"),
             common.fmt(r.get(f"eval/rollout_mse_iter{sfx}"), ".4f"),
             common.fmt(r[f"eval/rollout_mse_last_frame{sfx}"], ".4f"),
             common.fmt(r[f"eval/rollout_mse_mean_frame{sfx}"], ".4f")]
      if digits:
        row.append(common.fmt(r[f"eval/rollout_direction_accuracy{sfx}"], ".3f"))
      rows.append(row)
    seeds_text = ",".join(str(s) for s in seeds)
    common.print_table(headers, rows, title=(
        f"{tag}: rollout MSE per value, {int(config.eval.context)}-step context, "
        f"{int(config.num_train_steps)} steps, seeds {seeds_text} (mean); eval/elbo "
        f"{r['eval/elbo']:.2f} nats per pair; {common.mean(walls):.0f} s per run; "
        f"pictures: {', '.join(pictures)}"))
    out[tag] = {k[len("eval/"):]: v for k, v in r.items() if "rollout" in k or k == "eval/elbo"}
    out[tag]["wall_s"] = common.mean(walls)
  out["total_wall_s"] = time.perf_counter() - start
  common.print_json(out)


if __name__ == "__main__":
  main()
