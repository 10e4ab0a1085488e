"""DCI's boosted trees: vaelab.evaluate.disentanglement.gbt against sklearn's
GradientBoostingClassifier() (disentanglement_lib's model), speed and agreement.

  .venv/bin/python experiments/benchmark_dci.py [--points 2000] [--stages 100] [--threads 1]

Codes: 10 dimensions, five of them a noisy function of dSprites-sized factors (3, 6, 40, 32,
32 values), five noise. Times are CPU seconds of this process (time.process_time: robust to
other jobs sharing the machine) and wall seconds; sklearn fits one factor after another as
disentanglement_lib does, vaelab fits all five with `gbt.fit_many`. `--stages` below 100
times a shorter ensemble (both scale linearly in it). Then DCI of rotated codes at 3,000
points (factors 3, 6, 10): vaelab's default against disentanglement_lib's code with the same
seed and unseeded (as disentanglement_lib runs it: its own run-to-run spread), and the
20-tree forest that was vaelab's default before.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.stats

import common  # noqa: F401  (puts the repository on sys.path)


def codes(n, sizes, seed=0):
  rng = np.random.default_rng(seed)
  y = np.stack([rng.integers(0, s, n) for s in sizes], 1)
  z = rng.normal(size=(n, 10))
  z[:, :len(sizes)] += y / np.array(sizes) * 3
  return z, y


def dlib_dci(z_train, y_train, seed):
  """disentanglement_lib's compute_importance_gbt + disentanglement, on (n, d) / (n, F)."""
  from sklearn.ensemble import GradientBoostingClassifier
  imp = np.zeros((z_train.shape[1], y_train.shape[1]))
  for i in range(y_train.shape[1]):
    model = GradientBoostingClassifier(random_state=seed).fit(z_train, y_train[:, i])
    imp[:, i] = np.abs(model.feature_importances_)
  per_code = 1. - scipy.stats.entropy(imp.T + 1e-11, base=imp.shape[1])
  return float(np.sum(per_code * imp.sum(1) / imp.sum()))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--points", type=int, default=2000)
  p.add_argument("--stages", type=int, default=100)
  p.add_argument("--threads", type=int, default=0, help="vaelab's threads (0: all cores)")
  p.add_argument("--skip_sklearn", action="store_true")
  args = p.parse_args()
  if args.threads:
    os.environ["VAELAB_GBT_THREADS"] = str(args.threads)
  from sklearn.ensemble import GradientBoostingClassifier

  from vaelab.evaluate import disentanglement
  from vaelab.evaluate.disentanglement import gbt

  sizes = (3, 6, 40, 32, 32)
  z, y = codes(args.points, sizes)
  cpu, wall = time.process_time(), time.time()
  models = gbt.fit_many(z, list(y.T), [0] * len(sizes), n_stages=args.stages)
  ours = {"cpu_s": time.process_time() - cpu, "wall_s": time.time() - wall}
  rows, ref = [], {"cpu_s": 0.0, "wall_s": 0.0}
  worst = 0.0
  for j, s in enumerate(sizes):
    if args.skip_sklearn:
      break
    cpu, wall = time.process_time(), time.time()
    model = GradientBoostingClassifier(random_state=0, n_estimators=args.stages).fit(z, y[:, j])
    dc, dw = time.process_time() - cpu, time.time() - wall
    ref["cpu_s"] += dc
    ref["wall_s"] += dw
    diff = float(np.abs(model.feature_importances_ - models[j].feature_importances_).max())
    same = bool((model.predict(z) == models[j].predict(z)).all())
    worst = max(worst, diff)
    rows.append([f"{s} values", f"{dc:.1f}", f"{diff:.1e}", same])
  if rows:
    common.print_table(["factor", "sklearn CPU s", "max |importance diff|", "same predictions"],
                       rows, title=f"{args.points} points, {args.stages} stages")
  print(f"vaelab fit_many: {ours['cpu_s']:.1f} CPU s ({ours['wall_s']:.1f} wall); sklearn: "
        f"{ref['cpu_s']:.1f} CPU s ({ref['wall_s']:.1f} wall)")

  # DCI of rotated codes: vaelab's default vs disentanglement_lib's own code.
  rng = np.random.default_rng(0)
  fs = (3, 6, 10)
  yr = np.stack([rng.integers(0, s, 4500) for s in fs], 1)
  zr = np.concatenate([yr / np.array(fs) + 0.15 * rng.normal(size=(4500, 3)),
                       rng.normal(size=(4500, 3))], 1) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
  tr, te = slice(0, 3000), slice(3000, None)
  dci = {"vaelab_gbt": disentanglement.dci_from_codes(
      zr[tr], yr[tr], zr[te], yr[te], random_state=0).disentanglement,
         "forest": disentanglement.dci_from_codes(
      zr[tr], yr[tr], zr[te], yr[te], importance="forest").disentanglement}
  if not args.skip_sklearn:
    dci["dlib_seed0"] = dlib_dci(zr[tr], yr[tr], 0)
    dci["dlib_unseeded"] = [dlib_dci(zr[tr], yr[tr], None) for _ in range(2)]
  print("rotated codes, 3,000 points: DCI " + ", ".join(f"{k} {v}" for k, v in dci.items()))
  common.print_json({"experiment": "benchmark_dci", "points": args.points,
                     "stages": args.stages, "vaelab": ours, "sklearn": ref,
                     "max_importance_diff": worst, "dci_rotated": dci})


if __name__ == "__main__":
  main()
