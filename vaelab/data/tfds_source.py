"""Load a prepared TFDS split into memory, without TensorFlow.

Reads through `tfds.data_source` (ArrayRecord files + numpy decoding); never
`tfds.load`, which needs TensorFlow (and `tfds.load(..., batch_size=-1)` under
`tfds.testing.mock_data` crashes the interpreter). Nothing is ever downloaded or
prepared here: preparing an image data set needs TensorFlow and the network, so
an unprepared data set fails at once with a `DataError` that says what to do.

The data set must have been prepared in a random-access format:
  tfds build mnist --file_format=array_record [--data_dir=DIR]
"""
from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np

from vaelab.data.base import InMemorySource
from vaelab.errors import DataError

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Spec:
  label_key: str | None = None
  # TFDS ClassLabel features that form the ground-truth factors, in this order,
  # and the names the factors get (`SourceInfo.factor_names`).
  factor_keys: tuple[str, ...] = ()
  factor_names: tuple[str, ...] = ()
  # A constant factor (size 1, value 0) put first; TFDS has no field for it.
  constant_factor: str | None = None
  # TFDS stores these images as 0/1 uint8; they are scaled to 0/255 on load.
  binary_image: bool = False


SUPPORTED: dict[str, _Spec] = {
    "mnist": _Spec(label_key="label"),
    "fashion_mnist": _Spec(label_key="label"),
    "cifar10": _Spec(label_key="label"),
    # Same factors, order and names as the original dSprites npz and
    # `vaelab.data.dsprites` (procedural_dsprites): color 1 (constant; TFDS has
    # no field for it), shape 3, scale 6, orientation 40, pos_x 32, pos_y 32.
    "dsprites": _Spec(factor_keys=("label_shape", "label_scale", "label_orientation",
                                   "label_x_position", "label_y_position"),
                      factor_names=("color", "shape", "scale", "orientation", "pos_x",
                                    "pos_y"),
                      constant_factor="color", binary_image=True),
    # floor hue 10, wall hue 10, object hue 10, scale 8, shape 4, orientation 15.
    "shapes3d": _Spec(factor_keys=("label_floor_hue", "label_wall_hue", "label_object_hue",
                                   "label_scale", "label_shape", "label_orientation"),
                      factor_names=("floor_hue", "wall_hue", "object_hue", "scale", "shape",
                                    "orientation")),
}

# Records read per `__getitems__` call: array_record reads a batch of keys in
# parallel, which is faster than one `ds[i]` per record.
CHUNK = 1024


def _not_ready(name: str, split: str, data_dir: str | None, why: str) -> DataError:
  where = f"data_dir={data_dir!r}" if data_dir else "the default TFDS data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
  return DataError(
      f"TFDS data set {name!r} split {split!r} cannot be read from {where}: {why}. "
      f"Prepare it on a machine with TensorFlow and network access with "
      f"`tfds build {name} --file_format=array_record"
      f"{' --data_dir=' + data_dir if data_dir else ''}` (a set downloaded by hand, as "
      f"ImageNet is, also needs --manual_dir=DIR; this code never downloads), "
      f"or use an npz file instead: --config.data.name=npz "
      f"--config.data.train_path=PATH.npz (docs/data.md).")


def open_split(tfds, name: str, split: str, data_dir: str | None, decoders=None):
  """tfds.data_source of a prepared split (`decoders`: tfds's), or a DataError that says
  what is missing and how to prepare it."""
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            try_gcs=False, decoders=decoders)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # TFDS reports a missing data set in several misleading ways (a KeyError on
    # empty `splits`, or a NotImplementedError about TFRECORD when the default
    # info is used), so ask the builder whether anything was prepared.
    prepared = None
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
      path = str(builder.data_path)
    except Exception:  # pylint: disable=broad-except
      path = "?"
    if prepared is False:
      raise _not_ready(name, split, data_dir, f"it is not prepared (nothing valid at {path})") from e
    reason = f"{type(e).__name__}: {str(e).rstrip('.')}"
    if isinstance(e, NotImplementedError):  # prepared, but as tfrecord (no random access)
      raise _not_ready(name, split, data_dir, f"{reason}. It must be prepared in the "
                       f"array_record format") from e
    raise DataError(f"TFDS data set {name!r} split {split!r} (at {path}) cannot be read: "
                    f"{reason}") from e


def read_records(ds, keys: list[int], batched: list[bool]) -> list[dict]:
  """Reads the records `keys`; batched[0] says whether __getitems__ works."""
  if batched[0]:
    try:
      return list(ds.__getitems__(keys))
    except (TypeError, AttributeError) as e:
      # Under `tfds.testing.mock_data` (tfds 4.9.10) the mock installs
      # `functools.partial(_getitems, ...)` as a plain attribute of a MagicMock;
      # `__getitems__` is not a magic method MagicMock knows, so the partial is
      # never bound and the call fails with "_getitems() missing 1 required
      # positional argument: 'record_keys'". Real ArrayRecord sources work.
      # Fall back to one read per record, which any source supports.
      _log.info("%r: batched reads unavailable (%s); reading record by record", ds, e)
      batched[0] = False
  return [ds[i] for i in keys]


def load_tfds(name: str, split: str, data_dir: str | None = None) -> InMemorySource:
  """Reads a whole prepared TFDS split into memory.

  Args:
    name: one of `SUPPORTED` ("mnist", "fashion_mnist", "cifar10", "dsprites",
      "shapes3d").
    split: a TFDS split, slices included ("train", "test", "train[:10000]").
    data_dir: TFDS data_dir; None means $TFDS_DATA_DIR or ~/tensorflow_datasets.

  Returns:
    An `InMemorySource` named "NAME/SPLIT" with `image` uint8 (N, H, W, C)
    (0..255; dsprites' 0/1 pixels are scaled to 0/255 so batches come out
    binary in [0, 1]), `label` for the classification sets, and `factors`
    (N, F) with `factor_sizes` from the TFDS ClassLabels for dsprites
    (F=6, a constant color factor first, as `procedural_dsprites`) and
    shapes3d (F=6). Full dsprites is ~3 GB and shapes3d ~6 GB of uint8;
    use a split slice to load less.
  """
  spec = SUPPORTED.get(name)
  if spec is None:
    raise DataError(f"TFDS data set {name!r} is not supported; supported names: "
                    f"{sorted(SUPPORTED)}. For other data use --config.data.name=npz "
                    f"--config.data.train_path=PATH.npz.")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  ds = open_split(tfds, name, split, data_dir)
  features = ds.dataset_info.features
  n = len(ds)
  if n == 0:
    raise DataError(f"TFDS data set {name!r} split {split!r} holds no examples")
  image_shape = tuple(features["image"].shape)
  if len(image_shape) != 3 or None in image_shape:
    raise DataError(f"TFDS data set {name!r}: expected a fixed (H, W, C) image feature, "
                    f"got shape {image_shape}")

  image = np.empty((n,) + image_shape, np.uint8)
  label = np.empty((n,), np.int64) if spec.label_key else None
  first = 1 if spec.constant_factor else 0  # column of the first TFDS factor
  factors = np.zeros((n, first + len(spec.factor_keys)), np.int64) if spec.factor_keys else None
  batched = [True]
  for start in range(0, n, CHUNK):
    stop = min(start + CHUNK, n)
    records = read_records(ds, list(range(start, stop)), batched)
    image[start:stop] = np.stack([r["image"] for r in records])
    if label is not None:
      label[start:stop] = [r[spec.label_key] for r in records]
    if factors is not None:
      factors[start:stop, first:] = [[r[k] for k in spec.factor_keys] for r in records]

  if spec.binary_image and image.max() <= 1:
    np.multiply(image, 255, out=image)

  num_classes = features[spec.label_key].num_classes if spec.label_key else None
  factor_sizes = factor_names = None
  if spec.factor_keys:
    factor_sizes = (1,) * first + tuple(int(features[k].num_classes) for k in spec.factor_keys)
    factor_names = spec.factor_names
  _log.info("loaded TFDS %s/%s: %d examples of %s", name, split, n, image_shape)
  return InMemorySource(f"{name}/{split}", image, label=label, factors=factors,
                        num_classes=num_classes, factor_sizes=factor_sizes,
                        factor_names=factor_names)


def prepare(data_dir: str, name: str, splits: dict[str, list[dict]]) -> None:
  """Writes a TFDS ArrayRecord preparation of `name` into `data_dir` from records you give
  (per split, dicts of the set's features, "image" as encoded bytes, which TFDS stores as
  they are): a set of your own images in ImageNet's shape, and the tests' and benchmarks'
  small sets. Needs neither TensorFlow nor the network."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  base = type(tfds.builder(name))

  class Given(base, skip_registration=True):  # pylint: disable=too-few-public-methods

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._records(rows) for split, rows in splits.items()}

    def _records(self, rows):
      for i, row in enumerate(rows):
        yield i, dict(row, image=io.BytesIO(row["image"]))

  Given.name = name
  # TFDS looks for a builder's checksums beside its code, and for a class in a package it
  # asks importlib_resources, which vaelab does not install; a class it cannot place in a
  # file has no checksums, which a preparation from given records needs none of.
  Given.__module__ = "vaelab_given_records"
  Given(data_dir=data_dir, file_format="array_record").download_and_prepare()
