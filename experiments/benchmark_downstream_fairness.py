"""What the downstream task and the unfairness scores would cost in the default job's final
evaluation (they are not in its default metric set; this says whether they could be).

  .venv/bin/python experiments/benchmark_downstream_fairness.py [--steps 3000]
      [--config configs/default.py]

Trains the config for `--steps` steps in memory, then runs the Evaluator's final
disentanglement scoring with `eval.disentanglement_metrics` set to one metric at a time
("mig" as the yardstick, "downstream", "fairness"), at the config's sample sizes, as a
run's final evaluation does: rendering, encoding and the fits included. The downstream
task's training sizes are dlib's 10, 100, 1,000, 10,000 scaled by
eval.disentanglement_num_train / 10,000 (at least 10), its test set
eval.disentanglement_num_eval; fairness trains on num_train points and tests 100 x
num_eval / 5,000 points per sensitive value. Wall and CPU seconds, after one warm-up
encoding.
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
  p.add_argument("--config", default="configs/default.py")
  p.add_argument("--metrics", default="mig,downstream,fairness")
  args = p.parse_args()
  import vaelab
  from vaelab import spmd
  from vaelab.evaluate.disentanglement import downstream, fairness
  from vaelab.evaluate.evaluator import Evaluator

  run = vaelab.train(args.config, overrides={"num_train_steps": args.steps})
  exp = run.experiment
  state = spmd.replicate(exp.mesh, run.state)
  e = run.config.eval
  sizes = {k: int(e[f"disentanglement_{k}"]) for k in ("num_train", "num_eval")}
  exp.evaluator()._features(state)(np.zeros((256, 64, 64, 1), np.float32))
  rows, out = [], {}
  for metric in args.metrics.split(","):
    config = run.config.copy_and_resolve_references()
    config.eval.disentanglement_metrics = (metric,)
    evaluator = Evaluator(exp.family, config, exp.model, exp.mesh, exp.eval_source)
    wall, cpu = time.time(), time.process_time()
    scores = evaluator.disentanglement(state)
    out[metric] = {"wall_s": time.time() - wall, "cpu_s": time.process_time() - cpu,
                   "num_scores": len(scores)}
    headline = {"mig": "eval/mig",
                "downstream": "eval/downstream_logistic_regression_"
                              f"{downstream.scaled_train_sizes(sizes['num_train'])[-1]}"
                              "_mean_test_accuracy",
                "fairness": "eval/fairness_mean_fairness_mean_pred_mean_sens"}.get(metric)
    rows.append([metric, f"{out[metric]['wall_s']:.1f}", f"{out[metric]['cpu_s']:.1f}",
                 len(scores), f"{headline}={scores.get(headline, float('nan')):.3f}"])
  common.print_table(["metric", "wall s", "CPU s", "numbers", "headline"], rows,
                     title=f"{args.config} after {args.steps} steps, sizes {sizes}: downstream "
                           f"training sizes {downstream.scaled_train_sizes(sizes['num_train'])}"
                           f", fairness {fairness.scaled_points_per_class(sizes['num_eval'])} "
                           f"points per sensitive value")
  common.print_json({"experiment": "benchmark_downstream_fairness", "steps": args.steps,
                     "sizes": sizes, "metrics": out})


if __name__ == "__main__":
  main()
