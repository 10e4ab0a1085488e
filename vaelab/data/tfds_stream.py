"""A TFDS image set too large to hold in memory (ImageNet), read batch by batch and cropped.

`load_tfds` (tfds_source.py) reads a whole split into memory at the size it is stored. A
source here keeps only the open ArrayRecord files: each `get(indices)` reads those records
(ArrayRecord's parallel batched reads), decodes their encoded images with Pillow in a
thread pool (the decoder releases the GIL), and makes each a square of `image_size`:

  - the shorter side is resized to `image_size` (Pillow's bicubic, antialiased when it
    shrinks), as taming-transformers' ImageNet sets and MaskGIT's evaluation do;
  - a training source (`crop="random"`) takes a uniform random square of that size, and
    with `flip` mirrors it left-right with probability 1/2; an evaluation source
    (`crop="center"`) takes the centre, so eval/rfid reads the images as papers do.

A random crop is a function of the example's key (`spmd.example_keys(seed, step, row)`, the
stream `CROP_STREAM`, apart from the step's binarization and sampling streams): the pipeline
passes every row's key (`keyed`), so the batch a step sees does not depend on the device or
process count, on a population, or on where a run was resumed. A `get` without keys (the
pictures, probes) takes the centre crop.

There is no device form: the batches take the host path, prefetched in a thread while the
devices train. Nothing is downloaded; the split must have been prepared as ArrayRecord
(`tfds build imagenet2012 --manual_dir=DIR --file_format=array_record`).
"""
from __future__ import annotations

import concurrent.futures
import functools
import io
import os

import jax
import numpy as np

from vaelab.data import tfds_source
from vaelab.data.base import SourceInfo
from vaelab.errors import ConfigError, DataError

# Streamed TFDS sets: name -> the label feature (None: no labels).
SUPPORTED = {"imagenet2012": "label"}
CROPS = ("random", "center")
# The stream of an example's key that draws its crop and flip (the step uses streams 0 and 1,
# weakly-supervised pairs stream 2).
CROP_STREAM = 3


@functools.partial(jax.jit, static_argnames="flip")
def _crop_draws(keys, flip: bool):
  """(n, 3) float32 uniforms in [0, 1): the crop's row and column fractions and the flip."""
  draw = lambda k: jax.random.uniform(jax.random.fold_in(k, CROP_STREAM), (3,))
  u = jax.vmap(draw)(keys)
  return u if flip else u.at[:, 2].set(1.0)


def square(encoded: bytes, size: int, where: tuple[float, float, float] | None,
           name: str = "image") -> np.ndarray:
  """An encoded image as uint8 (size, size, 3): shorter side resized to `size`, then the
  crop at fractions `where` = (row, column, flip uniform) of the free range, or the centre
  (None). A flip uniform below 1/2 mirrors the crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(encoded)) as im:
      im = im.convert("RGB")
      w, h = im.size
      scale = size / min(w, h)
      # Rounded as torchvision's Resize(size) rounds the longer side; never below `size`.
      nw, nh = max(size, int(w * scale)), max(size, int(h * scale))
      if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
      if where is None:
        top, left = (nh - size) // 2, (nw - size) // 2
      else:
        top = min(int(where[0] * (nh - size + 1)), nh - size)
        left = min(int(where[1] * (nw - size + 1)), nw - size)
      out = np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)
  except (OSError, ValueError) as e:  # Pillow's UnidentifiedImageError is an OSError
    raise DataError(f"{name}: cannot decode its image ({type(e).__name__}: {e})") from e
  if where is not None and where[2] < 0.5:
    out = out[:, ::-1]
  return out


class StreamingTfdsSource:
  """A prepared TFDS split read on demand (`ArraySource`): "image" float32 (n, S, S, 3) in
  [0, 1] and "label" int32 where the set has labels."""

  def __init__(self, name: str, split: str, image_size: int, crop: str = "center",
               flip: bool = False, data_dir: str | None = None, threads: int = 0):
    if name not in SUPPORTED:
      raise DataError(f"TFDS data set {name!r} cannot be streamed; streamed names: "
                      f"{sorted(SUPPORTED)}")
    if crop not in CROPS:
      raise ConfigError(f"data.train_crop={crop!r}: expected one of {CROPS}")
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._ds = tfds_source.open_split(
        tfds, name, split, data_dir, decoders={"image": tfds.decode.SkipDecoding()})
    features = self._ds.dataset_info.features
    if "image" not in features or len(features["image"].shape) != 3:
      raise DataError(f"TFDS data set {name!r}: expected an (H, W, C) image feature")
    self._n = len(self._ds)
    if self._n == 0:
      raise DataError(f"TFDS data set {name!r} split {split!r} holds no examples")
    self.name = f"{name}/{split}"
    self.size, self.crop, self.flip = int(image_size), crop, bool(flip)
    self._label = SUPPORTED[name]
    self.keyed = crop == "random"  # the pipeline passes each row's key (Batcher.batch)
    self._threads = int(threads) or min(32, os.cpu_count() or 1)
    self._pool = None
    self._batched = [True]
    num_classes = features[self._label].num_classes if self._label else None
    self.info = SourceInfo(image_shape=(self.size, self.size, 3),
                           has_label=self._label is not None, num_classes=num_classes)

  def __len__(self) -> int:
    return self._n

  def get(self, indices: np.ndarray, keys=None) -> dict[str, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= self._n):
      raise IndexError(f"{self.name}: indices outside [0, {self._n})")
    records = []
    for start in range(0, len(indices), tfds_source.CHUNK):
      chunk = [int(i) for i in indices[start:start + tfds_source.CHUNK]]
      records += tfds_source.read_records(self._ds, chunk, self._batched)
    where = [None] * len(indices)
    if keys is not None and self.keyed:
      where = [tuple(u) for u in np.asarray(_crop_draws(keys, self.flip)).tolist()]
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(self._threads)
    images = list(self._pool.map(
        lambda args: square(args[0]["image"], self.size, args[1],
                            f"{self.name} record {args[2]}"),
        zip(records, where, indices.tolist())))
    out = {"image": np.stack(images).astype(np.float32) / 255.0 if images
           else np.zeros((0, self.size, self.size, 3), np.float32)}
    if self._label:
      out["label"] = np.asarray([r[self._label] for r in records], np.int32)
    return out


def load(data_cfg, split: str, crop: str) -> StreamingTfdsSource:
  return StreamingTfdsSource(data_cfg.name, split, data_cfg.image_size, crop=crop,
                             flip=data_cfg.random_flip and crop == "random",
                             data_dir=data_cfg.data_dir or None,
                             threads=data_cfg.decode_threads)


def config_keys(c, image_size: int) -> None:
  """The data.* keys of a streamed set, added by its configs."""
  c.data.image_size = image_size  # the side of the square every image is made into
  c.data.train_crop = "random"  # random | center: the training split's crop
  c.data.random_flip = False  # mirror training crops left-right with probability 1/2
  c.data.decode_threads = 0  # threads decoding a batch's images; 0: one per CPU (at most 32)


def check(data_cfg) -> None:
  """The keys a streamed set needs, before anything is built."""
  for key in ("image_size", "train_crop", "random_flip", "decode_threads"):
    if key not in data_cfg:
      raise ConfigError(f"data.name={data_cfg.name!r} needs data.{key} (a streamed set's "
                        f"keys: tfds_stream.config_keys, as in configs/vqgan_imagenet.py)")
  size = data_cfg.image_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ConfigError(f"data.image_size={size!r}: expected a positive integer (pixels)")
  if data_cfg.train_crop not in CROPS:
    raise ConfigError(f"data.train_crop={data_cfg.train_crop!r}: expected one of {CROPS}")
  if not isinstance(data_cfg.random_flip, bool):
    raise ConfigError(f"data.random_flip={data_cfg.random_flip!r}: expected True or False")
  threads = data_cfg.decode_threads
  if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
    raise ConfigError(f"data.decode_threads={threads!r}: expected an integer >= 0 "
                      f"(0: one per CPU)")

