"""Code maps of a frozen VQ model as a source: what a prior over codes trains on.

A batch of a CodeSource holds "codes" (VQ-VAE) or "codes_top" and "codes_bottom"
(VQ-VAE-2), named by `code_key(level)`, and no "image": the train step then binarizes
nothing. The frozen model itself and the extraction of the code maps from images are the
models layer's (vaelab/models/frozen_vq.py).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vaelab.data.base import DeviceForm, SourceInfo


def code_key(level: str) -> str:
  return f"codes_{level}" if level else "codes"


class CodeSource:
  """In-memory code maps (and labels) addressed by index, like any other source."""

  def __init__(self, name: str, codes: dict[str, np.ndarray], image_shape,
               label: np.ndarray | None = None, num_classes: int | None = None):
    self.name = name
    self._arrays = dict(codes)
    if label is not None:
      self._arrays["label"] = np.asarray(label, np.int32)
    self.code_keys = tuple(codes)
    self.info = SourceInfo(image_shape=tuple(image_shape), has_label=label is not None,
                           num_classes=num_classes)

  def __len__(self) -> int:
    return len(self._arrays[self.code_keys[0]])

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self._arrays.items()}

  def codes(self, key: str) -> np.ndarray:
    return self._arrays[key]

  def device_form(self) -> DeviceForm:
    get = lambda arrays, indices: {k: jnp.take(v, indices, axis=0) for k, v in arrays.items()}
    return DeviceForm(dict(self._arrays), get)
