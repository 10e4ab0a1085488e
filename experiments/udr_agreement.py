"""Why UDR does or does not pick the disentangled seeds: how much the models agree pairwise,
grouped by their MIG, and how much of each active latent the data's top principal
components explain (linearly) against the factors.

  .venv/bin/python experiments/udr_agreement.py WORKDIR [WORKDIR ...] [--num_points 1000]

The workdirs are runs that differ only in the seed (as for experiments/udr_selection.py),
with results.json. UDR (Lasso) is computed on `--num_points` shared procedural dSprites
images. Printed: the mean pairwise UDR among the three highest-MIG runs, among the three
lowest, and across the two groups; per run, the R² of each active latent (KL > 0.01) from
the images' top five principal components and from the factors (one-hot shape, the other
factors as numbers). Last line JSON.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import common
import udr_selection


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--num_points", type=int, default=1000)
  args = p.parse_args()
  import vaelab
  from vaelab.data import dsprites
  runs = [vaelab.load(d) for d in args.workdirs]
  mig = np.array([json.load(open(f"{d}/results.json"))["eval/mig"] for d in args.workdirs])
  factors = dsprites.index_to_factors(np.random.default_rng(0).choice(
      dsprites.NUM_IMAGES, args.num_points, replace=False))
  images = dsprites.render(factors)
  codes = [udr_selection._codes(r, images, 500) for r in runs]
  pairwise = np.asarray(vaelab.udr([m for m, _ in codes], [k for _, k in codes],
                                   correlation="lasso").pairwise)
  order = np.argsort(-mig)
  hi, lo = order[:3], order[-3:]
  mean = lambda a, b: float(np.mean([pairwise[i, j] for i in a for j in b if i != j]))
  groups = {"high_mig": mean(hi, hi), "low_mig": mean(lo, lo), "high_vs_low": mean(hi, lo)}
  common.print_table(["pairs", "mean pairwise UDR (Lasso)"],
                     [[k, common.fmt(v)] for k, v in groups.items()])
  x = images.reshape(len(images), -1)
  u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
  pcs = np.c_[u[:, :5] * s[:5], np.ones(len(x))]
  facs = np.c_[np.eye(3)[factors[:, 1]], factors[:, 2:].astype(float), np.ones(len(x))]

  def r2(design, z):
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    return 1 - ((z - design @ coef) ** 2).sum(0) / ((z - z.mean(0)) ** 2).sum(0)

  rows, per_run = [], []
  for d, (m, kl), g in zip(args.workdirs, codes, mig):
    z = m[:, kl > 0.01]
    from_pcs, from_factors = r2(pcs, z), r2(facs, z)
    per_run.append({"workdir": d, "mig": float(g), "r2_pcs": from_pcs.tolist(),
                    "r2_factors": from_factors.tolist()})
    rows.append([d.rstrip("/").split("/")[-1], common.fmt(g),
                 " ".join(f"{v:.2f}" for v in from_pcs),
                 " ".join(f"{v:.2f}" for v in from_factors)])
  common.print_table(["run", "MIG", "R² from top-5 PCs", "R² from factors"], rows,
                     title="each active latent, linearly")
  common.print_json({"groups": groups, "runs": per_run})


if __name__ == "__main__":
  main()
