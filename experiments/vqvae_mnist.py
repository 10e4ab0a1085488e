"""VQ-VAE on MNIST with and without the EMA codebook, dead-code restarts and k-means
initialisation: reconstruction error against PCA, perplexity and codebook usage.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/vqvae_mnist.py \
      [--variants ema_restart,ema,gradient,ema_kmeans --steps N --seeds 0,1]

Every run is configs/vqvae_mnist.py (7x7 latents, K = 256 codes of 16 dims) with the
variant's overrides, i.e.

  python -m vaelab.main --config=configs/vqvae_mnist.py --workdir=DIR \
      --config.data.name=npz --config.data.train_path=TRAIN --config.data.eval_path=EVAL \
      [--config.model.dead_code_steps=0] [--config.model.ema_decay=0] \
      [--config.model.kmeans_init=True]

ema_restart is the config as it is (EMA, gamma = 0.99, codes unused for 20 steps restart
at encoder outputs); ema drops the restarts; gradient learns the codebook by the codebook
loss ||sg(z_e) - e||^2 (ema_decay = 0; restarts need the EMA codebook); ema_kmeans starts
from k-means centroids of the first batch, without restarts. The figures are results.json's:
eval/recon_sse, the PCA baseline with 49 components (one per latent position, the number
of code indices an image is stored as), and the set-level eval/perplexity and
eval/codebook_usage of the evaluation split. The last line of stdout is JSON.
"""
from __future__ import annotations

import time

import common

VARIANTS = {
    "ema_restart": ("EMA + dead-code restart", {}),
    "ema": ("EMA", {"model.dead_code_steps": 0}),
    "gradient": ("codebook loss (no EMA)", {"model.ema_decay": 0.0,
                                            "model.dead_code_steps": 0}),
    "ema_kmeans": ("EMA + k-means init", {"model.dead_code_steps": 0,
                                          "model.kmeans_init": True}),
}
METRICS = ("recon_sse", "pca_recon_sse", "perplexity", "codebook_usage", "commitment",
           "image_perplexity", "probe_error")


def main():
  p = common.parser(__doc__.split("\n\n")[0], "vqvae_mnist")
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help=f"comma-separated, from {sorted(VARIANTS)}")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  names = [v.strip() for v in args.variants.split(",") if v.strip()]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}")
  t0 = time.perf_counter()
  seeds = common.seeds_of(args)
  runs = {}
  for name in names:
    label, overrides = VARIANTS[name]
    for seed in seeds:
      config = common.load_config("vqvae_mnist", None,
                                  {**common.common_overrides(args, seed), **overrides})
      workdir = common.workdir_for(args.workdir_root, name, config)
      common.note(f"{label} seed={seed}: training {config.num_train_steps} steps in {workdir}")
      results, wall = common.train(config, workdir)
      common.note(f"  recon_sse {results['eval/recon_sse']:.2f} (PCA "
                  f"{results['eval/pca_recon_sse']:.2f}), perplexity "
                  f"{results['eval/perplexity']:.1f}, usage "
                  f"{100 * results['eval/codebook_usage']:.0f}%, {wall:.0f} s")
      runs[(name, seed)] = dict(results=results, wall_s=wall,
                                steps=int(config.num_train_steps),
                                num_codes=int(config.model.num_codes))

  out = {"seeds": seeds, "variants": {}}
  for name in names:
    per_seed = [runs[(name, s)] for s in seeds]
    figures = {m: common.mean(r["results"].get(f"eval/{m}", float("nan")) for r in per_seed)
               for m in METRICS}
    figures["wall_s"] = common.mean(r["wall_s"] for r in per_seed)
    figures["steps"] = per_seed[0]["steps"]
    out["variants"][name] = figures
  first = runs[(names[0], seeds[0])]
  num_codes = first["num_codes"]
  pca = out["variants"][names[0]]["pca_recon_sse"]
  out.update(num_codes=num_codes, pca_components=first["results"].get("eval/pca_components"),
             pca_recon_sse=pca)

  rows = []
  for name in names:
    f = out["variants"][name]
    rows.append([VARIANTS[name][0], common.fmt(f["recon_sse"], ".2f"),
                 common.fmt(pca / f["recon_sse"], ".1f") + "x",
                 common.fmt(f["perplexity"], ".1f"), common.pct(f["codebook_usage"]),
                 common.fmt(round(f["codebook_usage"] * num_codes), "d"),
                 common.fmt(f["commitment"], ".2f"), common.pct(f["probe_error"]),
                 common.fmt(f["wall_s"], ".0f")])
  common.print_table(
      ["variant", "recon_sse", "PCA/VQ", "perplexity", "usage", "codes used", "commitment",
       "probe err", "wall s"], rows,
      title=(f"VQ-VAE on MNIST ({args.eval}), 7x7 latents, K = {num_codes}, "
             f"{first['steps']} steps, seeds {seeds}; PCA with "
             f"{common.fmt(out['pca_components'], '.0f')} components: recon_sse "
             f"{common.fmt(pca, '.2f')}"))
  checks = {name: {"recon_below_half_pca": f["recon_sse"] < 0.5 * pca,
                   "perplexity_above_10": f["perplexity"] > 10,
                   "usage_above_25pct": f["codebook_usage"] > 0.25}
            for name, f in out["variants"].items()}
  print("checks (recon_sse < PCA/2, perplexity > 10, > 25% of codes used on the eval split):")
  for name, c in checks.items():
    print(f"  {VARIANTS[name][0]}: " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                                 for k, v in c.items()))
  print("perplexity = exp(entropy) of the code frequencies over all 49 positions of all "
        "evaluation images;\nimage_perplexity (JSON) is the mean of each image's own.")
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  out.update(checks=checks, wall_s=total)
  common.print_json(out)


if __name__ == "__main__":
  main()
