"""Load one split of a data set from a `.npz` file (the `npz` data set).

Format (DESIGN.md, "Contracts"): one `.npz` file per split holding
  image:   (N, H, W, C) uint8 in [0, 255], or float (float32/float64) in [0, 1]
  label:   (N,) integer >= 0                 optional
  factors: (N, F) integer >= 0               optional, ground-truth generative factors

Everything is checked once, at load time, with whole-array numpy operations, so
a malformed file fails before training starts with a `DataError` naming the
file, the field and what was expected.
"""
from __future__ import annotations

import logging
import os
import zipfile

import numpy as np

from vaelab.data.base import InMemorySource
from vaelab.errors import DataError

_KNOWN_KEYS = ("image", "label", "factors")
# Labels and factors are stored as int32 by InMemorySource.
_INT32_MAX = np.iinfo(np.int32).max


def _fail(path: str, field: str | None, message: str) -> DataError:
  where = f"npz file {path!r}" + (f", field {field!r}" if field else "")
  return DataError(f"{where}: {message}")


def _read_field(npz, path: str, key: str) -> np.ndarray:
  try:
    return npz[key]
  except ValueError as e:  # object arrays need pickle, which we never allow
    raise _fail(path, key, f"cannot be read without pickle ({e}); expected a plain "
                "numeric array, not dtype=object") from e
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise _fail(path, key, f"cannot be read, the file looks truncated or corrupt ({e})") from e


def _check_image(path: str, image: np.ndarray) -> np.ndarray:
  # MNIST-style files often store grayscale images as (N, H, W) without a
  # channel axis: accept them and add C=1.
  if image.ndim == 3:
    image = image[..., None]
  if image.ndim != 4:
    raise _fail(path, "image", f"expected shape (N, H, W, C) or (N, H, W), got "
                f"{image.shape} (rank {image.ndim})")
  n, h, w, c = image.shape
  if n == 0:
    raise _fail(path, "image", f"the file holds no examples (N=0, shape {image.shape})")
  if h == 0 or w == 0:
    raise _fail(path, "image", f"expected H, W >= 1, got shape {image.shape}")
  if not 1 <= c <= 4:
    hint = (" It looks channels-first; transpose it to (N, H, W, C)."
            if image.shape[1] in (1, 3, 4) else "")
    raise _fail(path, "image", f"expected 1 to 4 channels in the last axis of "
                f"(N, H, W, C), got shape {image.shape}.{hint}")

  if image.dtype == np.uint8:
    return image  # Kept as uint8; InMemorySource converts each batch to [0, 1].
  if not np.issubdtype(image.dtype, np.floating):
    hint = ""
    if np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_:
      hint = " If the values are 0..255, store image.astype(np.uint8)."
    raise _fail(path, "image", f"expected dtype uint8 (values 0..255) or float32/float64 "
                f"(values in [0, 1]), got dtype {image.dtype}.{hint}")

  finite = np.isfinite(image)
  if not finite.all():
    bad = np.flatnonzero(~finite.reshape(n, -1).all(axis=1))
    raise _fail(path, "image", f"expected finite values in [0, 1], found NaN or Inf in "
                f"{bad.size} image(s), the first at index {int(bad[0])}")
  lo, hi = float(image.min()), float(image.max())
  if lo < 0.0 or hi > 1.0:
    hint = (" The values look like 0..255: divide the image by 255."
            if hi > 1.0 and lo >= 0.0 and hi <= 255.0 else "")
    raise _fail(path, "image", f"expected float values in [0, 1], found min {lo:g} and "
                f"max {hi:g}.{hint}")
  return image.astype(np.float32, copy=False)


def _check_int_array(path: str, field: str, arr: np.ndarray, n: int, rank: int,
                     shape_text: str) -> None:
  if arr.ndim != rank:
    raise _fail(path, field, f"expected shape {shape_text}, got {arr.shape} (rank {arr.ndim})")
  if arr.shape[0] != n:
    raise _fail(path, field, f"expected length N={n} (the number of images), got "
                f"{arr.shape[0]} (shape {arr.shape})")
  if not np.issubdtype(arr.dtype, np.integer):
    hint = " Store it as an integer array, e.g. .astype(np.int32)." if arr.dtype.kind == "f" else ""
    raise _fail(path, field, f"expected an integer dtype, got dtype {arr.dtype}.{hint}")
  if arr.size == 0:
    return
  lo, hi = int(arr.min()), int(arr.max())
  if lo < 0:
    first = np.argwhere(arr < 0)[0]
    raise _fail(path, field, f"expected values >= 0, found min {lo} (first at index "
                f"{tuple(int(i) for i in first) if rank > 1 else int(first[0])})")
  if hi > _INT32_MAX:
    raise _fail(path, field, f"expected values that fit in int32, found max {hi}")


def load_npz(path: str, split_name: str = "train") -> InMemorySource:
  """Reads and validates one split stored as `.npz`; raises `DataError` on bad input.

  Returns an `InMemorySource` named "npz/<split_name>". uint8 images stay uint8
  in memory (converted to float32 in [0, 1] per batch); float images become
  float32. `num_classes` is max(label)+1 when labels exist, and `factor_sizes`
  is max(factors, axis=0)+1 when factors exist.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise _fail(path, None, "file does not exist")
  if os.path.isdir(path):
    raise _fail(path, None, "is a directory, expected a .npz file")
  try:
    with open(path, "rb") as f:
      magic = f.read(6)
  except OSError as e:
    raise _fail(path, None, f"cannot be opened ({type(e).__name__}: {e})") from e
  if not magic.startswith(b"PK") and magic != b"\x93NUMPY":
    # np.load would call anything else "pickled data", which misleads.
    raise _fail(path, None, f"is not a .npz (zip) archive (it starts with {magic!r}); "
                "write it with np.savez(path, image=..., label=...)")
  try:
    npz = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise _fail(path, None, f"is not a readable .npz file ({type(e).__name__}: {e})") from e
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise _fail(path, None, "holds a single array (.npy format), expected a .npz archive "
                "with an 'image' array (np.savez(path, image=..., label=...))")

  with npz:
    keys = list(npz.files)
    if "image" not in keys:
      raise _fail(path, "image", f"missing: expected an 'image' array of shape (N, H, W, C); "
                  f"keys found: {keys}")
    unknown = [k for k in keys if k not in _KNOWN_KEYS]
    if unknown:
      logging.getLogger(__name__).warning(
          "npz file %r: ignoring unknown keys %s (known: %s)", path, unknown, list(_KNOWN_KEYS))
    image = _check_image(path, _read_field(npz, path, "image"))
    n = image.shape[0]

    label = num_classes = None
    if "label" in keys:
      label = _read_field(npz, path, "label")
      _check_int_array(path, "label", label, n, rank=1, shape_text=f"(N,) = ({n},)")
      num_classes = int(label.max()) + 1

    factors = factor_sizes = None
    if "factors" in keys:
      factors = _read_field(npz, path, "factors")
      _check_int_array(path, "factors", factors, n, rank=2, shape_text=f"(N, F) = ({n}, F)")
      if factors.shape[1] == 0:
        raise _fail(path, "factors", f"expected at least one factor column, got shape "
                    f"{factors.shape}")
      factor_sizes = tuple(int(m) + 1 for m in factors.max(axis=0))

  return InMemorySource(f"npz/{split_name}", image, label=label, factors=factors,
                        num_classes=num_classes, factor_sizes=factor_sizes)
