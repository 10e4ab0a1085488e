"""VAE vs IWAE (Burda et al. 2016, Table 1) on MNIST at this machine's budget.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/iwae_mnist.py [--steps 8000] [--seeds 0]

Trains configs/vae_mnist.py twice, once on the ELBO (loss.objective=elbo, k = 1) and once
on the 5-sample importance-weighted bound (loss.objective=iwae, loss.iwae_k=5), and reports
L_1, L_5, L_50 and L_5000 on the evaluation split (eval.iwae_ks), with the number of active
units. Burda et al. trained a 784-200-200-50 tanh network for 3^8 passes over 60k binarized
images; this is 8000 steps of 100 on 4000 images with the vae_mnist network, so the bounds
are some nats lower; the paper's points are that L_K rises with K, that IWAE training gives
the better log-likelihood estimate (L_5000) and uses more active units.
"""
from __future__ import annotations

import common

# Burda et al. Table 1, MNIST, one stochastic layer, -log p(x) estimated with L_5000:
# VAE k=1: 86.76; IWAE k=50: 84.78 (the figures quoted from the paper's Table 1; the k=5 rows are not quoted).
PAPER = {"vae": -86.76, "iwae": -84.78}
KS = (1, 5, 50, 5000)


def main():
  args = common.parser(__doc__, "iwae_mnist").parse_args()
  common.setup_logging(args.verbose)
  common.check_data(args)
  runs = {"vae": {"loss.objective": "elbo"},
          "iwae": {"loss.objective": "iwae", "loss.iwae_k": 5}}
  results = {}
  for name, overrides in runs.items():
    per_seed = []
    for seed in common.seeds_of(args):
      config = common.load_config("vae_mnist", None, {
          **common.common_overrides(args, seed), **overrides, "eval.iwae_ks": KS,
          "eval.iwae_chunk": 100})
      common.note(f"training {name} seed {seed} ...")
      res, wall = common.train(config, common.workdir_for(args.workdir_root, name, config))
      per_seed.append({**res, "wall_s": wall})
    results[name] = {k: common.mean(r[k] for r in per_seed) for k in per_seed[0]}
  rows = []
  for name, r in results.items():
    rows.append([name] + [common.fmt(r[f"eval/iwae_k{k}"], ".2f") for k in KS] +
                [common.fmt(r["eval/active_units"], ".0f"), common.fmt(PAPER[name], ".2f"),
                 common.fmt(r["wall_s"], ".0f")])
  common.print_table(["objective"] + [f"L_{k}" for k in KS] +
                     ["active units", "paper L_5000", "wall s"], rows,
                     title="VAE vs IWAE (k=5) on a 4k/1k MNIST split, nats per image")
  common.print_json({"experiment": "iwae_mnist", "paper": PAPER,
                     "ours": {n: {f"iwae_k{k}": r[f"eval/iwae_k{k}"] for k in KS} |
                              {"active_units": r["eval/active_units"]}
                              for n, r in results.items()}})


if __name__ == "__main__":
  main()
