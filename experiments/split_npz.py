"""Splits one npz file (DESIGN.md format) into random train and eval files.

  python experiments/split_npz.py ../shared/data/mnist_5k.npz /tmp/mnist_train.npz \
      /tmp/mnist_eval.npz --eval 1000

The rows are shuffled with a fixed seed first: files such as mnist_5k.npz are sorted by label.
"""
import argparse

import numpy as np


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("source")
  p.add_argument("train_out")
  p.add_argument("eval_out")
  p.add_argument("--eval", type=int, default=1000, help="examples in the eval file")
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  with np.load(a.source, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  n = len(arrays["image"])
  if not 0 < a.eval < n:
    raise SystemExit(f"--eval={a.eval}: must be between 1 and {n - 1} for {a.source}")
  perm = np.random.default_rng(a.seed).permutation(n)
  np.savez(a.train_out, **{k: v[perm[a.eval:]] for k, v in arrays.items()})
  np.savez(a.eval_out, **{k: v[perm[:a.eval]] for k, v in arrays.items()})
  print(f"{a.train_out}: {n - a.eval} examples, {a.eval_out}: {a.eval} examples")


if __name__ == "__main__":
  main()
