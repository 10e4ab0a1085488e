"""What each disentanglement metric costs in the default job's final evaluation.

  .venv/bin/python experiments/benchmark_disentanglement_metrics.py [--steps 3000] [--repeats 2]

Trains configs/default.py (a VAE on procedural dSprites) for `--steps` steps in memory,
then runs the Evaluator's final disentanglement scoring once per metric
(`eval.disentanglement_metrics` = that one metric) at the config's sample sizes and DCI
importance, as a run's final evaluation does: rendering, encoding and scoring included.
Times are wall seconds and CPU seconds of this process (all its threads), the best of
`--repeats`, after one warm-up encoding (the encoder's compilation is not counted).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import common


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=3000, help="training steps (the job's 3000)")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--config", default="configs/default.py")
  args = p.parse_args()
  import vaelab
  from vaelab import spmd
  from vaelab.evaluate import disentanglement
  from vaelab.evaluate.evaluator import Evaluator

  run = vaelab.train(args.config, overrides={"num_train_steps": args.steps})
  exp = run.experiment
  state = spmd.replicate(exp.mesh, run.state)
  e = run.config.eval
  sizes = {k: int(e[f"disentanglement_{k}"]) for k in
           ("num_train", "num_eval", "batch_size", "num_variance_estimate")}
  exp.evaluator()._features(state)(np.zeros((256, 64, 64, 1), np.float32))
  rows, out = [], {}
  for metric in disentanglement.METRICS:
    config = run.config.copy_and_resolve_references()
    config.eval.disentanglement_metrics = (metric,)
    evaluator = Evaluator(exp.family, config, exp.model, exp.mesh, exp.eval_source)
    best = None
    for _ in range(args.repeats):
      wall, cpu = time.time(), time.process_time()
      scores = evaluator.disentanglement(state)
      took = (time.time() - wall, time.process_time() - cpu)
      best = took if best is None or took[0] < best[0] else best
    out[metric] = {"wall_s": best[0], "cpu_s": best[1], "scores": scores}
  total = sum(v["wall_s"] for v in out.values())
  for metric, v in out.items():
    rows.append([metric, f"{v['wall_s']:.2f}", f"{v['cpu_s']:.2f}",
                 f"{100 * v['wall_s'] / total:.1f}%",
                 ", ".join(f"{k[5:]}={x:.3f}" for k, x in v["scores"].items()
                           if k[5:] in sum(disentanglement.HEADLINE.values(), ()))])
  common.print_table(["metric", "wall s", "CPU s", "share", "scores"], rows,
                     title=f"{args.config} after {args.steps} steps, sizes {sizes}, "
                           f"dci_importance={e.dci_importance}")
  common.print_json({"experiment": "benchmark_disentanglement_metrics", "steps": args.steps,
                     "sizes": sizes, "dci_importance": e.dci_importance,
                     "metrics": {k: {"wall_s": v["wall_s"], "cpu_s": v["cpu_s"]}
                                 for k, v in out.items()}})


if __name__ == "__main__":
  main()
