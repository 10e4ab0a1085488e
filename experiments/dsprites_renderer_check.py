"""Checks that procedural dSprites renders the same pixels everywhere, and how fast.

  .venv/bin/python experiments/dsprites_renderer_check.py [--limit N] [--no-reference]
  .venv/bin/python experiments/dsprites_renderer_check.py --npz PATH [--limit N]

With --npz (the real dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz, read as data.name=
dsprites_file reads it): how many of its images the procedural renderer reproduces exactly
(each rendered from the file's latents_classes), the largest pixel difference, the mean
fraction of pixels that differ, and the exact images per shape. Nothing else runs.

Over the whole factor grid (or the first --limit indices), in blocks of 8,192:
  * reference: the host path (`dsprites.render`) against the float32 numpy renderer the module
    had before (`tests/test_dsprites.py:_numpy_render`): pixels that differ;
  * fused: the device form rendered inside larger jitted programs (per-image pixel counts and
    weighted pixel sums, with the tables as arguments and closed over as constants) against
    the host path's images: mismatching images.
Then the speed in images/s of the test's numpy reference (it evaluates all three shapes for
every image, so it is ~2x slower than the module's old numpy code was), the host path and the
device form in a jit, at batch 64 and 4096. Run it on every backend that trains (on a GPU the host path renders on
the GPU too). The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from vaelab.data import dsprites  # noqa: E402


def _hashes(image, weights):
  flat = image.reshape(image.shape[0], -1)
  return flat.sum(1), (flat.astype(jnp.int32) * weights).sum(1)


def _rate(fn, n, reps):
  fn()
  start = time.perf_counter()
  for _ in range(reps):
    fn()
  return n * reps / (time.perf_counter() - start)


def compare_with_file(path: str, limit: int | None = None, block: int = 8192) -> dict:
  """The real file's images against the renderer's for the same factors."""
  from vaelab.data import ground_truth_files
  import ml_collections
  cfg = ml_collections.ConfigDict({"name": "dsprites_file", "path": path, "verify": True})
  source = ground_truth_files.load(cfg)
  n = len(source) if limit is None else min(limit, len(source))
  exact, largest, differing = 0, 0.0, 0
  exact_per_shape = [0] * dsprites.FACTOR_SIZES[1]
  for s in range(0, n, block):
    batch = source.get(np.arange(s, min(n, s + block)))
    rendered = dsprites.render(batch["factors"])
    diff = np.abs(batch["image"] - rendered).reshape(len(rendered), -1)
    same = (diff == 0).all(axis=1)
    exact += int(same.sum())
    largest = max(largest, float(diff.max(initial=0.0)))
    differing += int((diff > 0).sum())
    for shape in range(len(exact_per_shape)):
      exact_per_shape[shape] += int(same[batch["factors"][:, 1] == shape].sum())
  return {"file": path, "images": n, "exact_images": exact,
          "largest_pixel_difference": largest,
          "mean_fraction_of_pixels_differing": differing / max(n * 64 * 64, 1),
          "exact_images_per_shape": dict(zip(dsprites.SHAPE_NAMES, exact_per_shape))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--limit", type=int, default=dsprites.NUM_IMAGES)
  parser.add_argument("--no-reference", action="store_true",
                      help="skip the numpy reference (the slow part)")
  parser.add_argument("--npz", default="", help="the real dSprites npz to compare with")
  args = parser.parse_args()
  if args.npz:
    out = compare_with_file(args.npz, args.limit)
    print(f"{out['exact_images']} of {out['images']} images of {args.npz} rendered exactly "
          f"(per shape: {out['exact_images_per_shape']}); largest pixel difference "
          f"{out['largest_pixel_difference']:g}, {100 * out['mean_fraction_of_pixels_differing']:.2f}% "
          f"of pixels differ")
    print(json.dumps(out))
    return
  from test_dsprites import _numpy_render  # the reference lives with the tests

  form = dsprites.DSpritesSource().device_form()
  arrays = jax.device_put(form.arrays)
  weights = jnp.asarray(np.random.default_rng(0).integers(1, 1 << 20, 64 * 64), jnp.int32)
  fused = jax.jit(lambda a, i: _hashes(form.get(a, i)["image"], weights))
  const = jax.jit(lambda i: _hashes(form.get(form.arrays, i)["image"], weights))
  n = min(args.limit, dsprites.NUM_IMAGES)
  out = {"images": n, "backend": jax.default_backend(), "reference_pixels_differing": None,
         "fused_images_mismatching": 0, "constant_images_mismatching": 0}
  start = time.time()
  for s in range(0, n, 8192):
    idx = np.arange(s, min(n, s + 8192))
    factors = dsprites.index_to_factors(idx)
    host = dsprites.render(factors)
    if not args.no_reference:
      out["reference_pixels_differing"] = (out["reference_pixels_differing"] or 0) + int(
          np.sum(host != _numpy_render(factors)))
    expected = [np.asarray(h) for h in _hashes(jnp.asarray(host), weights)]
    i32 = jnp.asarray(idx, jnp.int32)
    for key, got in (("fused_images_mismatching", fused(arrays, i32)),
                     ("constant_images_mismatching", const(i32))):
      bad = np.zeros(len(idx), bool)
      for g, e in zip(got, expected):
        bad |= np.asarray(g) != e
      out[key] += int(bad.sum())
  out["check_s"] = round(time.time() - start, 1)
  print(f"{n} images on {out['backend']}: {out['reference_pixels_differing']} pixels differ "
        f"from the numpy renderer; {out['fused_images_mismatching']} / "
        f"{out['constant_images_mismatching']} images differ inside fused programs "
        f"(tables as arguments / as constants); {out['check_s']} s")

  get = jax.jit(lambda a, i: form.get(a, i)["image"])
  rng = np.random.default_rng(0)
  print(f"{'batch':>6} {'numpy ref':>10} {'host path':>10} {'in jit':>10}   (images/s)")
  for batch in (64, 4096):
    idx = rng.integers(0, dsprites.NUM_IMAGES, batch)
    factors, i32 = dsprites.index_to_factors(idx), jnp.asarray(idx, jnp.int32)
    reps = 200 if batch == 64 else 5
    rates = (_rate(lambda: _numpy_render(factors), batch, reps),
             _rate(lambda: dsprites.render(factors), batch, reps),
             _rate(lambda: get(arrays, i32).block_until_ready(), batch, reps))
    print(f"{batch:>6} " + " ".join(f"{r:>10.0f}" for r in rates))
    out[f"images_per_s_b{batch}"] = dict(zip(("numpy_reference", "host", "jit"),
                                                   map(round, rates)))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
