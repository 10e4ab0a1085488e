"""Unsupervised model selection (UDR, Duan et al. 2020) over runs that differ only in the
seed: does the model UDR ranks first disentangle, without a label?

  .venv/bin/python experiments/udr_selection.py WORKDIR [WORKDIR ...] [--num_points 1000]
      [--image_seed 0] [--recompute] [--plot PATH]

Every run is loaded (`vaelab.load`); their configs must agree but for `seed` (and the
workdir-related keys), or the script stops naming the keys that differ. The same
`--num_points` images are drawn for all (procedural dSprites, or the runs' data set's
ground truth; dlib's UDR study uses 1,000), each model encodes them (posterior means as
the representation, the mean KL per latent from its posterior variances), and both UDR
variants are computed (`vaelab.udr`, Lasso and Spearman, dlib's defaults: alpha 0.1, KL
threshold 0.01). Each model's UDR is printed beside its MIG and FactorVAE score (from its
results.json, or recomputed with `--recompute` or where results.json lacks them, at the
run's own eval.disentanglement_* sizes and seed), with the Spearman rank correlation of
each UDR with each score over the models, and whether the top-UDR model's MIG is at least
the median's. A scatter plot of UDR against both scores goes to `--plot` (default:
udr_selection.png beside the first workdir); the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import scipy.stats

import common

# Keys that name where a run lives or how often it reports, not what it is.
IGNORED = ("seed", "workdir", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints")


def _args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdirs", nargs="+", help="workdirs of runs that differ only in the seed")
  p.add_argument("--num_points", type=int, default=1000, help="images every model encodes")
  p.add_argument("--image_seed", type=int, default=0, help="seed of the images' draw")
  p.add_argument("--kl_filter_threshold", type=float, default=0.01)
  p.add_argument("--recompute", action="store_true",
                 help="recompute MIG and FactorVAE even where results.json has them")
  p.add_argument("--plot", default=None, help="the scatter plot's path")
  p.add_argument("--batch", type=int, default=500, help="images per encoder call")
  p.add_argument("--verbose", action="store_true")
  return p.parse_args()


def _check_same_but_seed(runs, workdirs):
  from vaelab import config_base
  flats = [config_base.flat(r.config) for r in runs]
  differing = sorted({k for f in flats for k in set(f) | set(flats[0])
                      if k.split(".")[-1] not in IGNORED and f.get(k) != flats[0].get(k)})
  if differing:
    raise SystemExit(f"the runs differ in {differing} (not only in the seed): "
                     f"{', '.join(workdirs)}")
  seeds = [int(r.config.seed) for r in runs]
  if len(set(seeds)) != len(seeds):
    raise SystemExit(f"two runs share a seed: {seeds}")


def _codes(run, images, batch):
  """(posterior means (N, d), mean KL per latent (d,)) of `images`."""
  from vaelab import spmd
  means, logvars = [], []
  for i in range(0, len(images), batch):
    x = images[i:i + batch]
    m, lv = spmd.apply(run.model, run.variables, run._inputs(x), method="encode")
    means.append(np.asarray(m, np.float64))
    logvars.append(np.asarray(lv, np.float64))
  from vaelab.evaluate.disentanglement.udr import gaussian_kl_per_latent
  mean, logvar = np.concatenate(means), np.concatenate(logvars)
  return mean, gaussian_kl_per_latent(mean, logvar)


def _scores(run, workdir, ground_truth, recompute):
  """{"mig", "factorvae"}: results.json's, or recomputed at the run's own sizes."""
  path = os.path.join(workdir, "results.json")
  results = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
  have = {"mig": results.get("eval/mig"), "factorvae": results.get("eval/factorvae_score")}
  if not recompute and all(v is not None for v in have.values()):
    return {k: float(v) for k, v in have.items()}, "results.json"
  import vaelab
  e = run.config.eval
  sizes = {k: int(e[f"disentanglement_{k}"]) for k in
           ("num_train", "num_eval", "batch_size", "num_variance_estimate")}
  s = vaelab.disentanglement_scores(represent=lambda x: np.asarray(run.encode(x)),
                                    ground_truth=ground_truth, metrics=("mig", "factorvae"),
                                    sizes=sizes, rng=int(e.get("disentanglement_seed", 0)))
  return {"mig": float(s.mig.mig), "factorvae": float(s.factorvae["factorvae_score"])}, \
      "recomputed"


def _rank(x, y) -> float:
  rho = scipy.stats.spearmanr(x, y)[0]
  return float(rho) if np.isfinite(rho) else float("nan")


def _plot(path, udr_l, udr_s, mig, fvae, seeds):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 2, figsize=(9, 8))
  for row, (name, u) in enumerate((("UDR (Lasso)", udr_l), ("UDR (Spearman)", udr_s))):
    for col, (score, v) in enumerate((("MIG", mig), ("FactorVAE score", fvae))):
      ax = axes[row, col]
      ax.scatter(u, v)
      for s, a, b in zip(seeds, u, v):
        ax.annotate(f"seed {s}", (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
      ax.set_xlabel(name)
      ax.set_ylabel(score)
      ax.set_title(f"Spearman {_rank(u, v):+.2f}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main():
  args = _args()
  common.setup_logging(args.verbose)
  import vaelab
  from vaelab.evaluate import disentanglement
  workdirs = [os.path.abspath(w) for w in args.workdirs]
  if len(workdirs) < 2:
    raise SystemExit("UDR compares models: give at least two workdirs")
  runs = [vaelab.load(w) for w in workdirs]
  _check_same_but_seed(runs, workdirs)
  ground_truth = disentanglement.ground_truth_from_source(runs[0].experiment.eval_source)
  if ground_truth is None:
    raise SystemExit("the runs' data has no ground-truth factors to draw images from")
  _, images = ground_truth.sample(args.num_points, np.random.default_rng(args.image_seed))
  reps, kls = zip(*(_codes(r, images, args.batch) for r in runs))
  common.note(f"encoded {args.num_points} images with {len(runs)} models")
  lasso = vaelab.udr(reps, kls, correlation="lasso",
                     kl_filter_threshold=args.kl_filter_threshold)
  spearman = vaelab.udr(reps, kls, correlation="spearman",
                        kl_filter_threshold=args.kl_filter_threshold)
  scored = [_scores(r, w, ground_truth, args.recompute) for r, w in zip(runs, workdirs)]
  mig = np.array([s["mig"] for s, _ in scored])
  fvae = np.array([s["factorvae"] for s, _ in scored])
  seeds = [int(r.config.seed) for r in runs]
  informative = [int(m.sum()) for m in lasso.informative]
  rows = [[os.path.basename(w), s, common.fmt(a), common.fmt(b), common.fmt(m), common.fmt(f),
           n, src]
          for w, s, a, b, m, f, n, (_, src) in zip(workdirs, seeds, lasso.model_scores,
                                                   spearman.model_scores, mig, fvae,
                                                   informative, scored)]
  common.print_table(["run", "seed", "UDR lasso", "UDR spearman", "MIG", "FactorVAE",
                      "latents KL>thr", "scores from"], rows,
                     title=f"UDR over {len(runs)} seeds, {args.num_points} images "
                           f"(image seed {args.image_seed})")
  ranks = {f"{u}_vs_{s}": _rank(uv, sv)
           for u, uv in (("udr_lasso", lasso.model_scores), ("udr_spearman",
                                                            spearman.model_scores))
           for s, sv in (("mig", mig), ("factorvae", fvae))}
  top = int(np.argmax(lasso.model_scores))
  common.print_table(["pair", "Spearman rho"], [[k, common.fmt(v)] for k, v in ranks.items()],
                     title="rank correlation over the models")
  print(f"top UDR (Lasso): seed {seeds[top]}, MIG {mig[top]:.3f} against the median "
        f"{np.median(mig):.3f} ({'at or above' if mig[top] >= np.median(mig) else 'below'})")
  plot = args.plot or os.path.join(os.path.dirname(workdirs[0]), "udr_selection.png")
  _plot(plot, lasso.model_scores, spearman.model_scores, mig, fvae, seeds)
  common.print_json({
      "experiment": "udr_selection", "num_points": args.num_points,
      "image_seed": args.image_seed, "workdirs": workdirs, "seeds": seeds,
      "udr_lasso": lasso.model_scores.tolist(), "udr_spearman": spearman.model_scores.tolist(),
      "mig": mig.tolist(), "factorvae": fvae.tolist(), "informative_latents": informative,
      "spearman": ranks, "top_udr_seed": seeds[top],
      "top_udr_mig_at_or_above_median": bool(mig[top] >= np.median(mig)), "plot": plot})


if __name__ == "__main__":
  main()
