"""Speed of the streamed ImageNet input (vaelab/data/tfds_stream.py): a training batch's
reads, JPEG decoding, resizing and random crops, with 1 thread and with every CPU.

The images are written here (no ImageNet needed): smooth random colour fields at
ImageNet's typical 500x375 and 375x500, JPEG quality 90, prepared as a TFDS ArrayRecord
imagenet2012 split. A batch's time is the median over rounds of `source.get(indices,
keys)` for a fresh global batch per round (the pipeline's call on the host path).

  .venv/bin/python experiments/benchmark_stream.py [--images 512 --batch 256 --size 256]

The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

import numpy as np

import common
from vaelab.data import pipeline, tfds_source, tfds_stream


def _images(n: int, seed: int = 0) -> list[dict]:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    w, h = (500, 375) if i % 2 else (375, 500)
    coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
    field = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    noise = rng.integers(-12, 13, (h, w, 3))
    a = np.clip(np.asarray(field, np.int16) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    rows.append({"image": buf.getvalue(), "label": int(rng.integers(1000)),
                 "file_name": f"bench{i:05d}.JPEG"})
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--images", type=int, default=512)
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--rounds", type=int, default=5)
  args = ap.parse_args()
  cpus = os.cpu_count() or 1
  with tempfile.TemporaryDirectory() as data_dir:
    rows = _images(args.images)
    mean_kb = statistics.mean(len(r["image"]) for r in rows) / 1024
    tfds_source.prepare(data_dir, "imagenet2012", {"train": rows})
    results, table = {}, []
    for threads in sorted({1, cpus}):
      src = tfds_stream.StreamingTfdsSource("imagenet2012", "train", args.size, "random",
                                            data_dir=data_dir, threads=threads)
      batcher = pipeline.Batcher(src, args.batch, seed=0)
      batcher.batch(0)  # the crop draws' compilation and the pool's start
      times = []
      for step in range(1, args.rounds + 1):
        t = time.perf_counter()
        batcher.batch(step)
        times.append(time.perf_counter() - t)
      s = statistics.median(times)
      results[f"threads_{threads}"] = {"batch_s": s, "images_per_s": args.batch / s}
      table.append([threads, f"{1e3 * s:.0f}", f"{args.batch / s:.0f}",
                    f"{args.batch / s / threads:.0f}"])
  common.print_table(["threads", "ms per batch", "images/s", "images/s per thread"], table,
                     f"streamed imagenet2012: batch {args.batch} at {args.size}x{args.size} "
                     f"from 500x375 JPEGs ({mean_kb:.0f} KiB mean), {cpus} CPUs")
  common.print_json({"batch": args.batch, "size": args.size, "cpus": cpus,
                     "jpeg_kib": mean_kb, **results})


if __name__ == "__main__":
  main()
