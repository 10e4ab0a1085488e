"""How a tokenizer's measured codebook usage depends on how many latent positions are read.

eval/codebook_usage counts the codes that the evaluation set's positions draw at all, so it
is bounded by the number of positions: n draws from K equally likely codes reach
1 - exp(-n / K) of them. This reads trained runs (experiments/tokenizer_codebooks.py's
workdirs) and counts usage over the first n positions of the evaluation images, then of the
training images, against that bound and against the code distribution's perplexity.

  .venv/bin/python experiments/tokenizer_usage_positions.py \
      --train /tmp/mnist_train.npz --eval /tmp/mnist_eval.npz WORKDIR [WORKDIR ...]

The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np

import common
import vaelab


def _images(path: str) -> np.ndarray:
  with np.load(path) as f:
    x = f["image"]
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  return x[..., None] if x.ndim == 3 else x


def codes_of(run, images: np.ndarray, batch: int = 500) -> np.ndarray:
  """The code index of every latent position, image by image: (N * positions,)."""
  out = [np.asarray(run.encode(images[i:i + batch])).reshape(-1)
         for i in range(0, len(images), batch)]
  return np.concatenate(out)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("workdirs", nargs="+")
  ap.add_argument("--train", default="/tmp/mnist_train.npz")
  ap.add_argument("--eval", default="/tmp/mnist_eval.npz")
  args = ap.parse_args()
  images = {"eval": _images(args.eval), "train": _images(args.train)}
  rows, out = [], {}
  for workdir in args.workdirs:
    run = vaelab.load(workdir)
    k = int(run.config.model.num_codes)
    name = os.path.basename(os.path.normpath(workdir))
    codes = {split: codes_of(run, x) for split, x in images.items()}
    order = np.concatenate([codes["eval"], codes["train"]])  # evaluation positions first
    per = len(codes["eval"]) // len(images["eval"])
    counts = np.bincount(order, minlength=k)
    p = counts / counts.sum()
    perplexity = math.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))
    n_eval = len(codes["eval"])
    # The training images' first positions, as many as the evaluation set's: whether images
    # the model was trained on draw more codes than unseen ones.
    figures = {"codes": k, "positions_per_image": per, "perplexity_all": perplexity,
               "train_only_usage": len(np.unique(codes["train"])) / k,
               "train_first_usage": len(np.unique(codes["train"][:n_eval])) / k}
    for n in (n_eval // 2, n_eval, 2 * n_eval, 4 * n_eval, len(order)):
      used = len(np.unique(order[:n])) / k
      bound = 1 - math.exp(-n / k)
      figures[f"usage_{n}"] = used
      rows.append([name, f"{n:,}", common.pct(used), common.pct(bound), f"{used / bound:.2f}"])
    rows.append([name, f"{n_eval:,} (training images)", common.pct(figures["train_first_usage"]),
                 common.pct(1 - math.exp(-n_eval / k)), ""])
    out[name] = figures
  common.print_table(["run", "positions", "usage", "uniform bound", "usage / bound"], rows,
                     "codebook usage against the positions read (evaluation images first)")
  common.print_json(out)


if __name__ == "__main__":
  main()
