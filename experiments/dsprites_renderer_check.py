"""Checks that procedural dSprites renders the same pixels everywhere, and how fast.

  .venv/bin/python experiments/dsprites_renderer_check.py [--limit N] [--no-reference]

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--limit", type=int, default=dsprites.NUM_IMAGES)
  parser.add_argument("--no-reference", action="store_true",
                      help="skip the numpy reference (the slow part)")
  args = parser.parse_args()
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
