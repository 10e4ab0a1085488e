"""The adversarial term of a VQGAN tokenizer (Esser et al. 2021): the same tokenizer trained
with and without its patch discriminator, on MNIST, every seed.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/vqgan_adversarial.py [--seeds 0,1,2 --steps N --quantizer vq]
      [--full]

Each pair of runs is configs/vqgan_mnist.py:runlocal (VQ-VAE's narrow MNIST trunk, 2^10
codes, hinge loss, the adaptive weight times loss.disc_weight, the discriminator from
loss.disc_start, half the steps; --full: the config's own size, 2^14 codes) and the same
config with `adversarial=False` (loss.gan = "none"), i.e.

  python -m vaelab.main --config=configs/vqgan_mnist.py:runlocal[,adversarial=False] --workdir=DIR \
      --config.data.name=npz --config.data.train_path=TRAIN --config.data.eval_path=EVAL

Before disc_start the two runs of a seed are the same run; after it only the adversarial term
separates them. The figures are results.json's eval/probe_fid (the Frechet distance between
the evaluation images and their reconstructions in the features of a small classifier
trained on MNIST's labels: offline, and not comparable to an Inception rFID), eval/psnr and
eval/ssim (dm-pix), eval/recon_sse. The claim (`goal`): on each seed, the adversarial term
lowers probe_fid, with PSNR within 1 dB of the run without it. The figure
(vqgan_adversarial.png under --workdir_root) shows the first evaluation images, their
reconstructions without and with the discriminator, seed by seed. The last line of stdout is
JSON.
"""
from __future__ import annotations

import os
import time

import numpy as np

import common

RUNS = (("without", "adversarial=False"), ("with", "adversarial=True"))
METRICS = ("eval/probe_fid", "eval/psnr", "eval/ssim", "eval/recon_sse")
PSNR_TOLERANCE_DB = 1.0
PICTURE_IMAGES = 12


def reconstructions(config, workdir: str, count: int):
  """(the first `count` evaluation images, their reconstructions) of the run's checkpoint."""
  exp, state = common.restore(config, workdir)
  images = common.eval_images(exp)[:count]
  import jax
  variables = jax.device_get(state.variables())
  return images, common.apply_batched(exp, variables, "reconstruct", images)


def save_figure(rows: list[tuple[str, np.ndarray]], path: str) -> str:
  """One row of images per (label, images (N, H, W, C))."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  n = len(rows[0][1])
  fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.7, len(rows) * 0.85))
  for ax, (label, images) in zip(np.atleast_1d(axes), rows):
    strip = np.concatenate([np.pad(im[..., 0], 1, constant_values=1.0) for im in images], 1)
    ax.imshow(strip, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main():
  p = common.parser(__doc__.split("\n\n")[0], "vqgan_adversarial", seeds="0,1,2")
  p.add_argument("--quantizer", default="vq", help="the config variant quantizer=NAME")
  p.add_argument("--full", action="store_true",
                 help="the config's own size (default: its runlocal variant)")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  seeds = common.seeds_of(args)
  t0 = time.perf_counter()
  out = {"seeds": seeds, "quantizer": args.quantizer, "runs": {}}
  rows, figure_rows = [], []
  for seed in seeds:
    per_run = {}
    for tag, variant in RUNS:
      overrides = common.common_overrides(args, seed)
      size = "" if args.full else "runlocal,"
      config = common.load_config("vqgan_mnist", f"{size}quantizer={args.quantizer},{variant}",
                                  overrides)
      workdir = common.workdir_for(
          args.workdir_root, f"{'full' if args.full else 'runlocal'}_{args.quantizer}_{tag}",
          config)
      common.note(f"seed {seed}, {tag} the discriminator: {config.num_train_steps} steps "
                  f"in {workdir}")
      results, wall = common.train(config, workdir)
      per_run[tag] = {**{m: results.get(m) for m in METRICS}, "wall_s": wall,
                      "steps": int(config.num_train_steps),
                      "disc_start": int(config.loss.disc_start)}
      images, recon = reconstructions(config, workdir, PICTURE_IMAGES)
      if tag == "without":
        figure_rows.append((f"seed {seed}: images", images))
      figure_rows.append((f"{tag} discriminator", recon))
    fid_lower = per_run["with"]["eval/probe_fid"] < per_run["without"]["eval/probe_fid"]
    psnr_gap = per_run["with"]["eval/psnr"] - per_run["without"]["eval/psnr"]
    holds = bool(fid_lower and abs(psnr_gap) <= PSNR_TOLERANCE_DB)
    out["runs"][seed] = {**per_run, "probe_fid_lower": bool(fid_lower),
                         "psnr_gap_db": psnr_gap, "holds": holds}
    for tag, _ in RUNS:
      r = per_run[tag]
      rows.append([seed, tag, common.fmt(r["eval/probe_fid"], ".2f"),
                   common.fmt(r["eval/psnr"], ".2f"), common.fmt(r["eval/ssim"], ".3f"),
                   common.fmt(r["eval/recon_sse"], ".2f"),
                   ("yes" if holds else "no") if tag == "with" else ""])
  common.print_table(["seed", "discriminator", "probe_fid", "PSNR dB", "SSIM", "recon_sse",
                      "claim holds"], rows,
                     title="VQGAN's adversarial term: probe-FID lower, PSNR within 1 dB "
                           "(paper: adversarial training sharpens reconstructions)")
  os.makedirs(args.workdir_root, exist_ok=True)
  out["figure"] = save_figure(figure_rows,
                              os.path.join(args.workdir_root, "vqgan_adversarial.png"))
  out["goal"] = all(r["holds"] for r in out["runs"].values())
  out["wall_s"] = time.perf_counter() - t0
  common.write_page()
  common.print_json(out)


if __name__ == "__main__":
  main()
