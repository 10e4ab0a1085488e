"""The one interface every data source implements.

A source is an indexable, finite collection of examples held (or generated) on
the host. The pipeline (`vaelab.data.pipeline`) decides which indices form each
global batch, so a source never shuffles and never knows about devices.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Protocol

import jax.numpy as jnp
import numpy as np

from vaelab import spmd


class ArraySource(Protocol):
  """Examples addressed by integer index.

  `get(indices)` returns a dict of numpy arrays with leading axis len(indices):
    "image":   float32 (n, H, W, C) in [0, 1]
    "label":   int32 (n,)           optional
    "factors": int32 (n, F)         optional, ground-truth generative factors
  """

  name: str
  info: "SourceInfo"

  def __len__(self) -> int:
    ...

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    ...


class DeviceForm(NamedTuple):
  """A source as the train step can read it on the device (`source.device_form()`).

  arrays: dict of numpy arrays, placed once on every device (replicated) by the pipeline.
  get:    pure jax function (arrays, int32 indices (n,)) -> the dict `source.get(indices)`
          returns on the host: same keys, dtypes, shapes and values. Traced inside the step,
          so a batch costs the host nothing but the step's dispatch.
  fuse:   whether a run alone compiles `get` into its train step (one dispatch per step).
          A gather is cheap to fuse; a renderer is not (see dsprites.device_form).
  keyed:  whether an example also depends on randomness of its own (data/pairs.py's
          second image): `get` then takes (arrays, indices, keys), the per-example keys
          `spmd.example_keys(seed, step, row)` of the batch's rows, and the host source's
          `get(indices, keys=...)` the same keys.
  A source without a device form (None) keeps the host path, prefetched in a thread.
  """
  arrays: dict
  get: Callable[..., dict]
  fuse: bool = True
  keyed: bool = False


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  # The shape of one example: (H, W, C) for images, (T, H, W, C) or (T, D) for sequences.
  image_shape: tuple[int, ...]
  has_label: bool = False
  num_classes: int | None = None
  # Number of values each ground-truth factor takes (dSprites: 1, 3, 6, 40, 32, 32).
  factor_sizes: tuple[int, ...] | None = None
  factor_names: tuple[str, ...] | None = None
  # Examples in the split (set by `described`): what an objective that estimates a
  # population quantity from a minibatch needs (beta-TCVAE's minibatch-weighted sampling).
  num_examples: int | None = None


def described(source) -> SourceInfo:
  """The source's info with its size: what `make_model` and `make_loss` are given."""
  return dataclasses.replace(source.info, num_examples=len(source))


class InMemorySource:
  """A source backed by numpy arrays already in memory (npz files, TFDS splits)."""

  def __init__(self, name: str, image: np.ndarray, label: np.ndarray | None = None,
               factors: np.ndarray | None = None, num_classes: int | None = None,
               factor_sizes: tuple[int, ...] | None = None,
               factor_names: tuple[str, ...] | None = None):
    self.name = name
    if image.dtype != np.uint8:  # what `get` returns and the device holds (no float64 on it)
      image = image.astype(np.float32)
    self._arrays = {"image": image}
    if label is not None:
      self._arrays["label"] = label.astype(np.int32)
    if factors is not None:
      self._arrays["factors"] = factors.astype(np.int32)
    self.info = SourceInfo(image_shape=tuple(image.shape[1:]), has_label=label is not None,
                           num_classes=num_classes, factor_sizes=factor_sizes,
                           factor_names=factor_names)

  def __len__(self) -> int:
    return len(self._arrays["image"])

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    out = {k: v[indices] for k, v in self._arrays.items()}
    if out["image"].dtype == np.uint8:
      out["image"] = out["image"].astype(np.float32) / 255.0
    return out

  def device_form(self) -> DeviceForm:
    """The arrays as they are (uint8 images stay uint8: a quarter of the device memory) and
    the same gather and scaling on the device. The scaling is a lookup of numpy's own
    x / 255 values: XLA computes the division as a multiplication by 1/255, which is one
    ulp off for some intensities."""
    scale = np.arange(256, dtype=np.float32) / 255.0

    def get(arrays, indices):
      out = {k: jnp.take(v, indices, axis=0) for k, v in arrays.items()}
      if out["image"].dtype == jnp.uint8:
        out["image"] = jnp.take(scale, out["image"].astype(jnp.int32))
      return out

    return DeviceForm(dict(self._arrays), get)


class SubsetSource:
  """A fixed subset of another source (e.g. a held-out sample of a procedural set)."""

  def __init__(self, source, indices: np.ndarray, name: str | None = None):
    self._source = source
    self._indices = np.asarray(indices)
    self.name = name or source.name
    self.info = source.info

  def __len__(self) -> int:
    return len(self._indices)

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return self._source.get(self._indices[indices])

  def device_form(self) -> DeviceForm | None:
    parent = self._source.device_form() if hasattr(self._source, "device_form") else None
    if parent is None:
      return None
    get = lambda arrays, indices: parent.get(arrays["parent"],
                                             jnp.take(arrays["indices"], indices))
    # A subset fuses as its parent does: the dSprites train split is a renderer too.
    return DeviceForm({"parent": parent.arrays, "indices": self._indices.astype(np.int32)}, get,
                      fuse=parent.fuse)


class ModelInputSource:
  """A source whose images are those the model is fed (`spmd.model_input`, with the
  evaluation's fixed draw of dynamic binarization, keyed by each example's index), for the
  paths outside the step that encode a split: probes, analyses, code extraction."""

  def __init__(self, source, binarize_mode: str, seed: int):
    self._source, self.mode, self.seed = source, binarize_mode, int(seed)
    self.name, self.info = source.name, source.info

  def __len__(self) -> int:
    return len(self._source)

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    out = self._source.get(indices)
    if "image" in out:
      out["image"] = spmd.eval_input(self.mode, self.seed, out["image"], indices)
    return out
