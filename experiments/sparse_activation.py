"""Sparse autoencoder (Ng's "Sparse autoencoder" lecture notes): does each hidden unit's mean
activation rho_hat_j on held-out images sit near the target rho? Against the same network
trained without the sparsity penalty.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/sparse_activation.py [--weights 10,3,0 --steps N --seeds 0,1]

Each run is configs/sparse_ae_mnist.py (784-196 sigmoid, rho = 0.05, cross-entropy) with
loss.sparsity_weight set to each weight (default: the config's own, then 0):

  python -m vaelab.main --config=configs/sparse_ae_mnist.py --workdir=DIR \
      --config.data.name=npz --config.data.train_path=TRAIN --config.data.eval_path=EVAL \
      --config.loss.sparsity_weight=W

The restored model's `encode` is applied to every evaluation image; rho_hat_j is unit j's mean
activation over them. The table gives their mean (which must equal results.json's
eval/mean_activation), their 5/25/50/75/95% quantiles, the fraction of units within a factor
2 of rho, and reconstruction error. rho_hat_hist.png (in each run's workdir, and both runs
overlaid in --workdir_root) shows the distribution. The last line of stdout is JSON.
"""
from __future__ import annotations

import os
import time

import numpy as np

import common

QUANTILES = (5, 25, 50, 75, 95)


def save_histogram(path: str, series: dict, rho: float) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  lo = max(min(float(v.min()) for v in series.values()), 1e-6)
  bins = np.logspace(np.log10(lo), 0, 50)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for label, values in series.items():
    ax.hist(np.clip(values, lo, 1), bins=bins, alpha=0.6, label=label)
  ax.axvline(rho, color="k", ls="--", lw=1, label=f"rho = {rho:g}")
  ax.axvspan(rho / 2, min(2 * rho, 1), color="k", alpha=0.08, label="within x2 of rho")
  ax.set_xscale("log")
  ax.set_xlabel("rho_hat_j (mean activation of hidden unit j on the evaluation images)")
  ax.set_ylabel("units")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main():
  p = common.parser(__doc__.split("\n\n")[0], "sparse_activation")
  p.add_argument("--weights", default=None,
                 help="comma-separated loss.sparsity_weight values (default: config's, 0)")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  import jax
  from vaelab.data import make_sources
  t0 = time.perf_counter()
  seeds = common.seeds_of(args)
  default_weight = float(common.load_config("sparse_ae_mnist").loss.sparsity_weight)
  weights = ([float(w) for w in args.weights.split(",")] if args.weights
             else [default_weight, 0.0])
  sources, runs, rho = None, {}, None
  for w in weights:
    for seed in seeds:
      config = common.load_config("sparse_ae_mnist", None,
                                  {**common.common_overrides(args, seed),
                                   "loss.sparsity_weight": w})
      rho = float(config.model.rho)
      workdir = common.workdir_for(args.workdir_root, f"weight{w:g}", config)
      common.note(f"sparsity_weight={w:g} seed={seed}: training {config.num_train_steps} "
                  f"steps in {workdir}")
      results, wall = common.train(config, workdir)
      sources = sources or make_sources(config.data)
      exp, state = common.restore(config, workdir, sources)
      codes = common.apply_batched(exp, jax.device_get(state.variables()), "encode",
                                   common.eval_images(exp))
      rho_hat = codes.reshape(len(codes), -1).mean(0)
      save_histogram(os.path.join(workdir, "rho_hat_hist.png"), {f"weight {w:g}": rho_hat}, rho)
      runs[(w, seed)] = dict(results=results, rho_hat=rho_hat, wall_s=wall,
                             steps=int(config.num_train_steps),
                             per_image=float(np.mean((codes > 0.5).mean(-1))))
      common.note(f"  mean rho_hat {rho_hat.mean():.4f} (eval/mean_activation "
                  f"{results['eval/mean_activation']:.4f}), recon_sse "
                  f"{results['eval/recon_sse']:.2f}, {wall:.0f} s")

  out = {"rho": rho, "seeds": seeds, "weights": {}}
  rows = []
  for w in weights:
    rs = [runs[(w, s)] for s in seeds]
    rh = np.stack([r["rho_hat"] for r in rs])  # (seeds, units)
    q = np.percentile(rh, QUANTILES, axis=1).mean(1)  # quantiles per seed, then their mean
    within = float(np.mean((rh >= rho / 2) & (rh <= 2 * rho)))
    m = {"mean_rho_hat": float(rh.mean()),
         "eval_mean_activation": common.mean(r["results"]["eval/mean_activation"] for r in rs),
         "quantiles": {f"p{k}": float(v) for k, v in zip(QUANTILES, q)},
         "fraction_within_2x": within,
         "fraction_below_0.005": float(np.mean(rh < 0.005)),
         "fraction_active_per_image": common.mean(r["per_image"] for r in rs),
         "recon_sse": common.mean(r["results"]["eval/recon_sse"] for r in rs),
         "probe_error": common.mean(r["results"].get("eval/probe_error", float("nan"))
                                    for r in rs),
         "wall_s": common.mean(r["wall_s"] for r in rs)}
    out["weights"][f"{w:g}"] = m
    rows.append([f"{w:g}", f"{rho:g}", common.fmt(m["mean_rho_hat"], ".4f"),
                 common.fmt(m["eval_mean_activation"], ".4f")]
                + [common.fmt(v, ".4f") for v in q]
                + [common.pct(within), common.pct(m["fraction_below_0.005"]),
                   common.fmt(m["recon_sse"], ".2f"), common.pct(m["probe_error"]),
                   common.fmt(m["wall_s"], ".0f")])
  steps = runs[(weights[0], seeds[0])]["steps"]
  common.print_table(
      ["sparsity_weight", "rho", "mean rho_hat", "eval/mean_act"]
      + [f"p{k}" for k in QUANTILES]
      + ["within x2", "rho_hat<.005", "recon_sse", "probe err", "wall s"], rows,
      title=(f"784-196 sigmoid sparse AE, {steps} steps, seeds {seeds}: per-unit mean "
             f"activation rho_hat_j on {args.eval}"))
  print(f"paper (Ng's notes): the KL penalty drives every unit's rho_hat_j to rho = {rho:g}; "
        f"Ng's exercise uses beta = 3 with the squared error (here cross-entropy, see the config).")
  overlay = save_histogram(os.path.join(args.workdir_root, "rho_hat_hist.png"),
                           {f"weight {w:g}": runs[(w, seeds[0])]["rho_hat"] for w in weights},
                           rho)
  print(f"histogram: {overlay}")
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  out.update(steps=steps, wall_s=total, histogram=overlay)
  common.print_json(out)


if __name__ == "__main__":
  main()
