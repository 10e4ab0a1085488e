"""Binarization of pixel intensities, run on device inside the step (`data.binarize`)."""
from __future__ import annotations

import jax

MODES = ("none", "threshold", "dynamic")


def binarize(mode: str, image, keys):
  """`keys` are per-example: a dynamic draw depends on the example and step, not on the device."""
  if mode == "none":
    return image
  if mode == "threshold":
    return (image > 0.5).astype(image.dtype)
  if mode == "dynamic":
    u = jax.vmap(lambda k: jax.random.uniform(k, image.shape[1:], image.dtype))(keys)
    return (u < image).astype(image.dtype)
  raise ValueError(f"data.binarize={mode!r}: expected one of {MODES}")
