"""disentanglement_lib's six unsupervised models, the VAE and the two weakly-supervised
models (Ada-GVAE, Ada-ML-VAE), on one protocol and the same seeds (Locatello et al. 2019,
unsupervised_study_v1, and 2020, at a size this machine affords).

  .venv/bin/python experiments/disentanglement_study.py [--seeds 0,1,2] [--steps 10000]
      [--arch mlp] [--lr 1e-3] [--num_train 2000] [--models beta_vae,factor_vae,...]
      [--dataset NAME [--data_path PATH] [--scream_path IMAGE]]

--dataset is any data set with ground-truth factors: procedural_dsprites (the default),
color_dsprites, noisy_dsprites, scream_dsprites (with --scream_path, dlib's scream.jpg), or
the official files dsprites_file, shapes3d_file, mpi3d_file, smallnorb_file, cars3d_file
read from --data_path (vaelab/data/ground_truth_files.py says which file each reads).

Each model trains at one strong setting of disentanglement_lib's grid (`MODELS`), every
model over the same seeds, trunk, learning rate, length and data (procedural dSprites,
Bernoulli pixels, 10 latents, batch 64); the runs of a model train as one population
(bitwise their runs alone). Every run is scored with every disentanglement_lib score on
the same draws (eval.disentanglement_seed), at `--num_train` / half of it points (a fifth
of disentanglement_lib's sizes by default). It prints each score's mean ± std over seeds
and each seed's value, draws Locatello et al.'s figure (each score's distribution per
model, one point per seed: `study_scores.png` under --workdir_root), and states each
model's claim: its mean MIG above the VAE's. Runs resume from their checkpoints.

Papers: Locatello et al. 2019 (Fig. 7 / Table 4, dSprites, 300k steps, 50 seeds): median
MIG roughly 0.1-0.3 for the regularized models against ~0.05 for beta = 1, with seeds
spreading as much as models.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

import beta_vae_disentanglement as bvd
import common

# model: (config file, variant, overrides, what it is in disentanglement_lib's grid)
MODELS = {
    "vae": ("beta_vae_dsprites", "beta=1", {}, "beta-VAE at beta = 1"),
    "beta_vae": ("beta_vae_dsprites", "beta=16", {}, "beta in {1, 2, 4, 6, 8, 16}: 16"),
    "annealed_vae": ("capacity_vae_dsprites", None, {"loss.capacity_max": 25.0},
                     "C_max in {5, 10, 25, 50, 75, 100}: 25, gamma 1000, C reached at a "
                     "third of training (dlib: 100k of 300k steps)"),
    "factor_vae": ("factor_vae_dsprites", "gamma=40", {}, "gamma in {10, 20, 30, 40, 50, "
                                                           "100}: 40"),
    "beta_tcvae": ("beta_tcvae_dsprites", None, {"loss.beta": 6.0},
                   "beta in {1, 2, 4, 6, 8, 10}: 6"),
    "dip_vae_i": ("dip_vae_dsprites", "dip_type=i,lambda_od=10", {},
                  "lambda_od in {1, 2, 5, 10, 20, 50}: 10, lambda_d = 10 lambda_od"),
    "dip_vae_ii": ("dip_vae_dsprites", "dip_type=ii,lambda_od=10", {},
                   "lambda_od in {1, 2, 5, 10, 20, 50}: 10, lambda_d = lambda_od"),
    # Weakly supervised (Locatello et al. 2020): pairs that share all but k factors.
    "ada_gvae": ("ada_gvae_dsprites", "beta=1,k=1", {},
                 "weakly supervised, k = 1; beta in {1, 2, 4, 6, 8, 16}: 1"),
    "ada_mlvae": ("ada_mlvae_dsprites", "beta=1,k=1", {},
                  "weakly supervised, k = 1; beta in {1, 2, 4, 6, 8, 16}: 1"),
}
DATASETS = ("procedural_dsprites", "color_dsprites", "noisy_dsprites", "scream_dsprites",
            "dsprites_file", "shapes3d_file", "mpi3d_file", "smallnorb_file", "cars3d_file")
SCORES = ("eval/betavae_score", "eval/factorvae_score", "eval/mig", "eval/dci_disentanglement",
          "eval/sap_score", "eval/modularity_score", "eval/irs",
          "eval/gaussian_total_correlation", "eval/mutual_info_score")


def _args():
  p = common.parser(__doc__, "disentanglement_study", seeds="0,1,2")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--arch", default="mlp", choices=sorted(bvd.ARCHS))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--num_train", type=int, default=2000)
  p.add_argument("--curve_every", type=int, default=None, help="default: steps / 5")
  p.add_argument("--population", default="loop", choices=("loop", "vmap", "off"))
  p.add_argument("--dataset", default="procedural_dsprites", choices=DATASETS)
  p.add_argument("--data_path", default="", help="the file or folder of a *_file data set")
  p.add_argument("--scream_path", default="", help="scream_dsprites' background image")
  p.add_argument("--num_heldout", type=int, default=None,
                 help="data.num_eval, the images held out (default: the config's)")
  args = p.parse_args()
  args.steps = args.steps or 10000
  args.curve_every = args.curve_every or max(args.steps // 5, 1)
  return args


def config_for(args, model: str, seed: int):
  name, variant, extra, _ = MODELS[model]
  overrides = {"seed": seed, "num_train_steps": args.steps, "optimizer.learning_rate": args.lr,
               "eval_every": args.curve_every, "checkpoint_every": args.curve_every,
               "log_every": min(500, args.curve_every),
               "eval.disentanglement_every": args.curve_every, "keep_checkpoints": 2,
               "eval.disentanglement_num_train": args.num_train,
               "eval.disentanglement_num_eval": args.num_train // 2, **bvd.ARCHS[args.arch],
               "data.name": args.dataset, "data.path": args.data_path,
               "data.scream_path": args.scream_path, **extra}
  if args.num_heldout:
    overrides["data.num_eval"] = args.num_heldout
  if model == "annealed_vae":
    overrides["loss.capacity_steps"] = max(args.steps // 3, 1)
  if model == "factor_vae":
    overrides["discriminator_optimizer.learning_rate"] = args.lr
  return common.load_config(name, ",".join(filter(None, ["runlocal", variant])), overrides)


def save_figure(by_model: dict, path: str) -> str:
  """Each score's values per model, one point per seed (Locatello et al.'s Fig. 7)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  models = list(by_model)
  cols = 5
  rows = -(-len(SCORES) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.2 * rows), squeeze=False)
  for ax in axes.flat[len(SCORES):]:
    ax.axis("off")
  for ax, score in zip(axes.flat, SCORES):
    for i, m in enumerate(models):
      v = by_model[m][score]
      ax.boxplot([v], positions=[i], widths=0.6, showfliers=False)
      ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, s=10)
    ax.set_xticks(range(len(models)), models, rotation=90, fontsize=7)
    ax.set_title(score.split("/")[-1], fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main():
  args = _args()
  common.setup_logging(args.verbose)
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = set(models) - set(MODELS)
  if unknown:
    raise SystemExit(f"--models: unknown {sorted(unknown)}; known: {list(MODELS)}")
  seeds = common.seeds_of(args)
  tag = f"{args.arch}_lr{args.lr:g}_steps{args.steps}"
  if args.dataset != "procedural_dsprites":
    tag = f"{args.dataset}_{tag}"
  walls, by_model, per_seed = {}, {}, {}
  for model in models:
    configs = [config_for(args, model, s) for s in seeds]
    dirs = [os.path.join(args.workdir_root, f"{tag}_{model}_seed{s}") for s in seeds]
    common.note(f"{model}: {len(seeds)} seeds, {args.steps} steps")
    walls[model] = bvd.train_all(configs, dirs, args.population)
    results = [bvd.results_of(d) for d in dirs]
    by_model[model] = {k: [r.get(k, float("nan")) for r in results] for k in SCORES}
    per_seed[model] = {d: bvd.factors_of(d) for d in dirs}
  rows = [[m] + [f"{np.mean(v[k]):.3f} ± {np.std(v[k]):.3f}" for k in SCORES]
          for m, v in by_model.items()]
  common.print_table(["model"] + [k.split("/")[-1] for k in SCORES], rows,
                     title=f"{args.dataset}, {args.arch} trunk, {args.steps} steps, lr "
                           f"{args.lr:g}, seeds "
                           f"{args.seeds}: mean ± std over seeds")
  common.print_table(["model", "MIG per seed", "FactorVAE per seed"],
                     [[m, " / ".join(f"{x:.3f}" for x in v["eval/mig"]),
                       " / ".join(f"{x:.3f}" for x in v["eval/factorvae_score"])]
                      for m, v in by_model.items()])
  claims = {}
  if "vae" in by_model:
    vae_mig = float(np.mean(by_model["vae"]["eval/mig"]))
    claims = {m: {"mean_mig": float(np.mean(v["eval/mig"])), "vae_mean_mig": vae_mig,
                  "above_vae": bool(np.mean(v["eval/mig"]) > vae_mig)}
              for m, v in by_model.items() if m != "vae"}
  figure = save_figure(by_model, os.path.join(args.workdir_root, f"{tag}_study_scores.png"))
  common.note(f"figure: {figure}")
  common.print_json({
      "experiment": "disentanglement_study", "dataset": args.dataset,
      "data_path": args.data_path, "arch": args.arch, "steps": args.steps,
      "lr": args.lr, "seeds": seeds, "num_train": args.num_train,
      "settings": {m: MODELS[m][3] for m in models}, "wall_s": walls,
      "ours": {m: {k: {"mean": float(np.mean(v[k])), "std": float(np.std(v[k])),
                       "values": v[k]} for k in SCORES} for m, v in by_model.items()},
      "claims": claims, "figure": figure, "time": time.strftime("%Y-%m-%d %H:%M")})


if __name__ == "__main__":
  main()
