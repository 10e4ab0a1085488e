"""Codebook usage of the tokenizer quantizers at 2^14 codes: LFQ, BSQ and SimVQ against the
plain VQ, all without dead-code restarts, on MNIST.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/tokenizer_codebooks.py \
      [--variants vq,lfq,bsq,simvq --grid 7 --entropy_weight W --entropy_temperature T \
       --steps N --seeds 0]

Every run is configs/vqvae_mnist.py (Bernoulli pixels, Adam 2e-3 cosine, batch 64, 16-d
encoder outputs) with its preset (vqvae.apply_preset) and K = 16,384 = 2^14 codes, i.e.

  python -m vaelab.main --config=configs/vqvae_mnist.py:quantizer=VARIANT --workdir=DIR \
      --config.data.name=npz --config.data.train_path=TRAIN --config.data.eval_path=EVAL \
      --config.num_train_steps=STEPS --config.model.num_codes=16384 \
      --config.model.dead_code_steps=0 [--config.model.conv_channels=(64,)]

  vq     nearest of 16,384 EMA codes, straight-through: 14 bits per latent position
  lfq    the signs of 14 channels (a learned projection 16 -> 14 -> 16), entropy penalty 0.1
  bsq    the same on the unit sphere, its factorised entropy penalty 0.1
  simvq  a frozen random 16,384 x 16 codebook times a learned 16 x 16 map

So every quantizer stores 14 bits per latent position. --grid 7 is the config's 7x7 latent
map (49 positions per image, 49,000 over the 1,000 evaluation images: if all 16,384 codes
were equally likely, 1 - exp(-49000 / 16384) = 95% of them would be drawn at all); --grid
14 drops the second stride-2 convolution for a 14x14 map (196 positions per image, 196,000
in all: 99.9998% at uniform use), a finer grid at the same bits per position.
--entropy_weight and --entropy_temperature replace the presets' loss.entropy_weight (0.1)
and loss.entropy_temperature (1) for lfq and bsq. The
penalty is in nats per image, like the reconstruction term summed over its pixels
(losses/vqvae.py), where MAGVIT-v2's 0.1 weighs it against a per-pixel mean: on 28x28
images with 7x7 latents the same balance is 0.1 * 784 / 49 = 1.6.

The figures are results.json's eval/codebook_usage (the fraction of the 16,384 codes that
the evaluation set's latent positions use), eval/perplexity and eval/recon_sse; the claim
(`goal`): each new quantizer uses >= 90% of its codes, plain VQ <= 10%, and each new
quantizer's recon_sse is at most the VQ's. The last line of stdout is JSON.
"""
from __future__ import annotations

import math
import os
import time

import common

K = 16384
VARIANTS = {"vq": "VQ (EMA, straight-through)", "lfq": "LFQ (MAGVIT-v2)",
            "bsq": "BSQ", "simvq": "SimVQ"}
NEW = ("lfq", "bsq", "simvq")
GRIDS = {7: (32, 64), 14: (64,)}
DEFAULT_STEPS = 500


def overrides_for(grid: int) -> dict:
  return {"model.num_codes": K, "model.dead_code_steps": 0,
          "model.conv_channels": GRIDS[grid]}


def main():
  p = common.parser(__doc__.split("\n\n")[0], "tokenizer_codebooks")
  p.set_defaults(steps=DEFAULT_STEPS)
  p.add_argument("--variants", default="vq,lfq,bsq,simvq",
                 help=f"comma-separated, from {sorted(VARIANTS)}")
  p.add_argument("--grid", type=int, default=7, choices=sorted(GRIDS),
                 help="latent map side: 7 (the config's) or 14 (one stride-2 layer fewer)")
  p.add_argument("--entropy_weight", type=float, default=None,
                 help="loss.entropy_weight of lfq and bsq (default: the preset's 0.1)")
  p.add_argument("--entropy_temperature", type=float, default=None,
                 help="loss.entropy_temperature of lfq and bsq (default: the preset's 1)")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  names = [v.strip() for v in args.variants.split(",") if v.strip()]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}")
  seeds = common.seeds_of(args)
  t0 = time.perf_counter()
  out = {"steps": args.steps, "seeds": seeds, "codes": K, "grid": args.grid,
         "entropy_weight": args.entropy_weight,
         "entropy_temperature": args.entropy_temperature, "runs": {}}
  for name in names:
    per_seed = []
    for seed in seeds:
      overrides = {**common.common_overrides(args, seed), **overrides_for(args.grid),
                   "eval_every": args.steps, "checkpoint_every": args.steps}
      tag = f"{name}_grid{args.grid}"
      if args.entropy_weight is not None and name in ("lfq", "bsq"):
        overrides["loss.entropy_weight"] = args.entropy_weight
        tag += f"_ew{args.entropy_weight:g}"
      if args.entropy_temperature is not None and name in ("lfq", "bsq"):
        overrides["loss.entropy_temperature"] = args.entropy_temperature
        tag += f"_tau{args.entropy_temperature:g}"
      config = common.load_config("vqvae_mnist", f"quantizer={name}", overrides)
      workdir = common.workdir_for(args.workdir_root, tag, config)
      common.note(f"{VARIANTS[name]}, grid {args.grid}, seed {seed}: "
                  f"{config.num_train_steps} steps in {workdir}")
      results, wall = common.train(config, workdir)
      common.note(f"  usage {100 * results['eval/codebook_usage']:.1f}%, perplexity "
                  f"{results['eval/perplexity']:.0f}, recon_sse "
                  f"{results['eval/recon_sse']:.2f}, {wall:.0f} s")
      per_seed.append((results, wall))
    figures = {m: common.mean(r.get(f"eval/{m}", float("nan")) for r, _ in per_seed)
               for m in ("codebook_usage", "perplexity", "recon_sse", "commitment",
                         "pca_recon_sse")}
    figures["wall_s"] = common.mean(w for _, w in per_seed)
    out["runs"][name] = figures

  positions = args.grid**2 * 1000
  rows = [[VARIANTS[n], common.pct(f["codebook_usage"]),
           common.fmt(round(f["codebook_usage"] * K), "d"), common.fmt(f["perplexity"], ".0f"),
           common.fmt(f["recon_sse"], ".2f"), common.fmt(f["wall_s"], ".0f")]
          for n, f in out["runs"].items()]
  common.print_table(
      ["quantizer", "usage", "codes used", "perplexity", "recon_sse", "wall s"], rows,
      title=(f"2^14 = {K} codes (14 bits per position) on MNIST ({args.eval}), "
             f"{args.grid}x{args.grid} latents ({positions} positions; uniform use would "
             f"draw {100 * (1 - math.exp(-positions / K)):.1f}% of the codes), "
             f"{args.steps} steps of batch 64, no restarts, seeds {seeds}; lfq/bsq entropy "
             f"weight {args.entropy_weight if args.entropy_weight is not None else 0.1}, "
             f"tau {args.entropy_temperature if args.entropy_temperature is not None else 1}"))
  goal = {}
  if "vq" in names:
    base = out["runs"]["vq"]
    for name in (n for n in names if n in NEW):
      f = out["runs"][name]
      goal[name] = {"usage_at_least_90pct": f["codebook_usage"] >= 0.9,
                    "vq_at_most_10pct": base["codebook_usage"] <= 0.1,
                    "recon_no_worse": f["recon_sse"] <= base["recon_sse"]}
    print("goal (usage >= 90%, plain VQ <= 10%, recon_sse <= plain VQ's):")
    for name, g in goal.items():
      print(f"  {VARIANTS[name]}: " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                               for k, v in g.items()))
    out["goal_met_by"] = [n for n, g in goal.items() if all(g.values())]
  os.makedirs(args.workdir_root, exist_ok=True)
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  out.update(goal=goal, wall_s=total)
  common.print_json(out)


if __name__ == "__main__":
  main()
