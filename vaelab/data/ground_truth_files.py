"""The official files of disentanglement_lib's data sets, read with dlib's factors.

  data.name       data.path                        factors (dlib's order and sizes)
  dsprites_file   dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz
                                                   color 1, shape 3, scale 6, orientation 40,
                                                   pos_x 32, pos_y 32
  shapes3d_file   dlib's 3dshapes npz, or DeepMind's 3dshapes.h5
                                                   floor_hue 10, wall_hue 10, object_hue 10,
                                                   scale 8, shape 4, orientation 15
  mpi3d_file      mpi3d_toy.npz / mpi3d_realistic.npz / mpi3d_real.npz
                                                   object_color 4 (real: 6), object_shape 4
                                                   (6), object_size 2, camera_height 3,
                                                   background_color 3, first_dof 40,
                                                   second_dof 40
  smallnorb_file  the folder of the six smallnorb-*.mat files
                                                   category 5, elevation 9, azimuth 18,
                                                   lighting 6 (the instance is drawn with
                                                   the row, as dlib draws it)
  cars3d_file     the folder of Cars3D's .mat files elevation 4, azimuth 24, object 183

Every file is checked before anything compiles (`check`, called by vaelab.validation):
a missing file names the file expected and the page it comes from; a field of the wrong
shape or dtype, or a file cut short, names the field and what was expected; a file whose
name is that of an official file with a published checksum (`KNOWN_SHA256`) must match it
unless data.verify=False. A file's checksum is computed once and cached beside it
(FILE.sha256, with the size and mtime it was computed for; under ~/.cache/vaelab where the
file's folder is read-only, as the inflated copies below).

Large arrays are not read at start: an uncompressed npz member is read where it lies in the
zip file, a batch's rows one pread each (`RowFile`); a compressed one (the dSprites npz) is
inflated once into FILE.KEY.npy beside it (a stream, never whole in memory) and read from
there the same way; an h5 data set is read per batch through h5py. SmallNORB (96x96 images resized to 64x64) and Cars3D
(128x128, shrunk to 64x64) are resized at start as dlib resizes them (PIL's Lanczos filter,
which dlib calls ANTIALIAS) and held as uint8 (200 MB and 216 MB).

A file may hold fewer images than the official one where it says which factors each image
has (dSprites' latents_classes, Shapes3D's grid or labels, SmallNORB's cat and info, a
Cars3D folder with fewer cars): small files of the official format are read the same way.
MPI3D's npz holds images only, in grid order, so it must have one of the official counts.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import struct

import jax.numpy as jnp
import numpy as np

from vaelab.data.base import DeviceForm, SourceInfo
from vaelab.data.file_reading import (RowFile, _H5Images, _fail, _field, _missing,
                                      _shape_fail, member_array, npz_members, sha256)
from vaelab.errors import ConfigError, DataError

NAMES = ("dsprites_file", "shapes3d_file", "mpi3d_file", "smallnorb_file", "cars3d_file")

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_PAGE = ("https://github.com/deepmind/dsprites-dataset (https://github.com/deepmind/"
                 "dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz)")
SHAPES3D_NPZ = ("look-at-object-room_floor-hueXwall-hueXobj-hueXobj-sizeXobj-shapeXview-"
                "azi.npz")
SHAPES3D_H5 = "3dshapes.h5"
SHAPES3D_PAGE = ("https://github.com/deepmind/3d-shapes (3dshapes.h5 from "
                 "https://storage.googleapis.com/3d-shapes/3dshapes.h5; dlib_download_data "
                 "fetches none, and the npz disentanglement_lib reads holds the same images "
                 "as images (10, 10, 10, 8, 4, 15, 64, 64, 3) and labels (..., 6))")
MPI3D_FILES = ("mpi3d_toy.npz", "mpi3d_realistic.npz", "mpi3d_real.npz")
MPI3D_PAGE = ("https://github.com/rr-learning/disentanglement_dataset (toy: https://"
              "storage.googleapis.com/disentanglement_dataset/data_npz/"
              "sim_toy_64x_ordered_without_heldout_factors.npz, saved as mpi3d_toy.npz)")
SMALLNORB_FILES = tuple(f"smallnorb-{chunk}-{kind}.mat"
                        for chunk in ("5x46789x9x18x6x2x96x96-training",
                                      "5x01235x9x18x6x2x96x96-testing")
                        for kind in ("dat", "cat", "info"))
SMALLNORB_PAGE = ("https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ (gunzip the six "
                  "smallnorb-*.mat.gz files into one folder)")
CARS3D_PAGE = ("http://www.scottreed.info/ (nips2015-analogy-data.tar.gz: the folder "
               "data/cars of 183 car_*_mesh.mat files)")

# Published checksums, by file name (TFDS's record of DeepMind's file).
KNOWN_SHA256 = {
    SHAPES3D_H5: "0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
}


@dataclasses.dataclass(frozen=True)
class Spec:
  factor_names: tuple[str, ...]
  factor_sizes: tuple[int, ...]
  image_shape: tuple[int, ...]


DSPRITES = Spec(("color", "shape", "scale", "orientation", "pos_x", "pos_y"),
                (1, 3, 6, 40, 32, 32), (64, 64, 1))
SHAPES3D = Spec(("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
                (10, 10, 10, 8, 4, 15), (64, 64, 3))
_MPI3D_NAMES = ("object_color", "object_shape", "object_size", "camera_height",
                "background_color", "first_dof", "second_dof")
MPI3D_SIM = Spec(_MPI3D_NAMES, (4, 4, 2, 3, 3, 40, 40), (64, 64, 3))  # toy, realistic
MPI3D_REAL = Spec(_MPI3D_NAMES, (6, 6, 2, 3, 3, 40, 40), (64, 64, 3))
SMALLNORB = Spec(("category", "elevation", "azimuth", "lighting"), (5, 9, 18, 6), (64, 64, 1))
SMALLNORB_INSTANCES = 10
CARS3D = Spec(("elevation", "azimuth", "object"), (4, 24, 183), (64, 64, 3))
CARS3D_RAW = (128, 128, 3, 24, 4)  # each file's "im": rows, cols, rgb, azimuth, elevation

# The device path takes a file's images when they are at most this large (the pipeline's
# own budget decides after that); a larger set stays on the host, read per batch.
_DEVICE_BYTES = 1 << 30


# --- the source ------------------------------------------------------------------------------

# uint8 -> float32 lookups: intensities 0..255 (numpy's x / 255, exactly as InMemorySource
# scales), or dSprites' 0 / 1 pixels taken as they are (dlib: images.astype(np.float32)).
BYTES = np.arange(256, dtype=np.float32) / 255.0
AS_IS = np.arange(256, dtype=np.float32)


class FileSource:
  """A data set of images with their factors; implements ArraySource. The images (uint8,
  (N, H, W, C), possibly memory-mapped or in an h5 file) are read per request."""

  def __init__(self, name: str, images, factors: np.ndarray, spec: Spec,
               levels: np.ndarray = BYTES):
    self.name = name
    self._images = images
    self._levels = levels
    self.table_factors = np.asarray(factors, np.int32)  # the ground truth's whole table
    self.info = SourceInfo(image_shape=spec.image_shape, has_label=False,
                           factor_sizes=spec.factor_sizes, factor_names=spec.factor_names)
    self._channel_axis = len(images.shape) == 3  # (N, H, W): grey images without a channel
    self._form = None

  def __len__(self) -> int:
    return len(self.table_factors)

  def _raw(self, rows: np.ndarray) -> np.ndarray:
    x = np.asarray(self._images[rows])
    return x[..., None] if self._channel_axis else x

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    rows = np.asarray(indices).reshape(-1)
    return {"image": self._levels[self._raw(rows)], "factors": self.table_factors[rows]}

  def device_form(self):
    """The uint8 images and the factors on the device, the same lookup there."""
    if self._images.nbytes > _DEVICE_BYTES:
      return None  # a large set is read per batch on the host
    if self._form is None:  # read once, however many runs place it
      arrays = {"image": self._raw(np.arange(len(self))), "factors": self.table_factors,
                "levels": self._levels}

      def get(arrays, indices):
        image = jnp.take(arrays["image"], indices, axis=0).astype(jnp.int32)
        return {"image": jnp.take(arrays["levels"], image),
                "factors": jnp.take(arrays["factors"], indices, axis=0)}

      self._form = DeviceForm(arrays, get)
    return self._form


def _grid(sizes) -> np.ndarray:
  """Every factor vector of a grid in row-major order (the last factor fastest)."""
  sizes = tuple(int(s) for s in sizes)
  return np.indices(sizes).reshape(len(sizes), -1).T.astype(np.int32)


def _check_factor_values(path, key, factors, spec: Spec):
  too_big = factors >= np.array(spec.factor_sizes)
  if (factors < 0).any() or too_big.any():
    col = int(np.argwhere((factors < 0) | too_big)[0][1])
    raise _fail(path, key, f"factor {spec.factor_names[col]!r} takes values "
                f"{int(factors[:, col].min())}..{int(factors[:, col].max())}; expected "
                f"0..{spec.factor_sizes[col] - 1}")


# --- dSprites ---------------------------------------------------------------------------------

def _dsprites(path: str, load: bool):
  if not os.path.isfile(path):
    raise _missing(path, f"the dSprites file {DSPRITES_FILE}", DSPRITES_PAGE)
  members = npz_members(path)
  imgs = _field(path, members, "imgs", "ub", "(N, 64, 64) uint8 images of 0 / 1")
  classes = _field(path, members, "latents_classes", "iu", "(N, 6) integer factor values")
  if len(imgs.shape) != 3 or imgs.shape[1:] != (64, 64):
    raise _shape_fail(path, "imgs", imgs.shape, "(N, 64, 64) uint8")
  if imgs.dtype != np.uint8:
    raise _fail(path, "imgs", f"dtype {imgs.dtype}; expected uint8")
  n = imgs.shape[0]
  if classes.shape != (n, 6):
    raise _shape_fail(path, "latents_classes", classes.shape, f"({n}, 6): one row per image")
  if not 0 < n <= int(np.prod(DSPRITES.factor_sizes)):
    raise _shape_fail(path, "imgs", imgs.shape, "1 to 737280 images")
  if not load:
    return None
  with np.load(path) as f:
    factors = np.asarray(f["latents_classes"])
  _check_factor_values(path, "latents_classes", factors, DSPRITES)
  images = member_array(path, "imgs", imgs)
  first = images[np.arange(min(64, len(images)))]
  if first.max(initial=0) > 1:
    raise _fail(path, "imgs", f"values up to {int(first.max())}; expected the 0 / 1 pixels "
                f"of the dSprites file")
  return FileSource("dsprites_file", images, factors, DSPRITES, levels=AS_IS)


# --- Shapes3D ---------------------------------------------------------------------------------

def _shapes3d(path: str, load: bool):
  if not os.path.isfile(path):
    raise _missing(path, f"Shapes3D's {SHAPES3D_H5} or disentanglement_lib's {SHAPES3D_NPZ}",
                   SHAPES3D_PAGE)
  if path.endswith((".h5", ".hdf5")):
    return _shapes3d_h5(path, load)
  members = npz_members(path)
  images = _field(path, members, "images", "u", "(10, 10, 10, 8, 4, 15, 64, 64, 3) uint8")
  labels = _field(path, members, "labels", "fiu", "(10, 10, 10, 8, 4, 15, 6) factor values")
  grid = images.shape[:6]
  if (len(images.shape) != 9 or images.shape[6:] != (64, 64, 3)
      or any(not 0 < g <= s for g, s in zip(grid, SHAPES3D.factor_sizes))):
    raise _shape_fail(path, "images", images.shape, "(10, 10, 10, 8, 4, 15, 64, 64, 3) (a "
                      "smaller grid at most that size in each factor)")
  if images.dtype != np.uint8:
    raise _fail(path, "images", f"dtype {images.dtype}; expected uint8")
  if labels.shape != tuple(grid) + (6,):
    raise _shape_fail(path, "labels", labels.shape, f"{tuple(grid) + (6,)}: the images' grid")
  if not load:
    return None
  grid_rows = member_array(path, "images", images)  # (*grid, 64, 64, 3): one row per image
  flat = RowFile(grid_rows.path, grid_rows.offset, (int(np.prod(grid)), 64, 64, 3), np.uint8)
  return FileSource("shapes3d_file", flat, _grid(grid), SHAPES3D)


def _shapes3d_h5(path: str, load: bool):
  import h5py
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise _fail(path, None, f"not a readable h5 file, it looks truncated or corrupt ({e})"
                ) from e
  with f:
    for key in ("images", "labels"):
      if key not in f:
        raise _fail(path, key, f"missing; expected images (480000, 64, 64, 3) uint8 and "
                    f"labels (480000, 6) float (the file has {sorted(f.keys())})")
    images, labels = f["images"], f["labels"]
    if len(images.shape) != 4 or images.shape[1:] != (64, 64, 3) or images.shape[0] == 0:
      raise _shape_fail(path, "images", images.shape, "(480000, 64, 64, 3)")
    if images.dtype != np.uint8:
      raise _fail(path, "images", f"dtype {images.dtype}; expected uint8")
    n = images.shape[0]
    if labels.shape != (n, 6):
      raise _shape_fail(path, "labels", labels.shape, f"({n}, 6): one row per image")
    if labels.dtype.kind not in "fiu":
      raise _fail(path, "labels", f"dtype {labels.dtype}; expected float factor values")
    if not load:
      return None
    try:
      values = np.asarray(labels[:])
      images[n - 1]  # the last row: a file cut short fails here, not in training
    except (OSError, ValueError) as e:
      raise _fail(path, "images", f"cannot be read, the file looks truncated ({e})") from e
  # Each column's distinct values in increasing order are the factor's values 0..size-1.
  factors = np.stack([np.unique(np.round(col, 6), return_inverse=True)[1].reshape(-1)
                      for col in values.T], axis=1)
  _check_factor_values(path, "labels", factors, SHAPES3D)
  return FileSource("shapes3d_file", _H5Images(path, "images"), factors, SHAPES3D)


# --- MPI3D ------------------------------------------------------------------------------------

def _mpi3d(path: str, load: bool):
  if not os.path.isfile(path):
    raise _missing(path, f"one of {MPI3D_FILES}", MPI3D_PAGE)
  members = npz_members(path)
  images = _field(path, members, "images", "u", "(1036800 or 460800, 64, 64, 3) uint8")
  counts = {int(np.prod(s.factor_sizes)): s for s in (MPI3D_SIM, MPI3D_REAL)}
  if len(images.shape) != 4 or images.shape[1:] != (64, 64, 3) or images.shape[0] not in counts:
    raise _shape_fail(path, "images", images.shape, "(460800, 64, 64, 3) (toy, realistic) or "
                      "(1036800, 64, 64, 3) (real)")
  if images.dtype != np.uint8:
    raise _fail(path, "images", f"dtype {images.dtype}; expected uint8")
  if not load:
    return None
  spec = counts[images.shape[0]]
  return FileSource("mpi3d_file", member_array(path, "images", images),
                    _grid(spec.factor_sizes), spec)


# --- SmallNORB --------------------------------------------------------------------------------

_NORB_DTYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32, 0x1E3D4C51: np.float32,
                0x1E3D4C53: np.float64}


def _norb_header(path: str):
  """(dtype, shape, data offset) of a NORB binary matrix, checked against the file size."""
  with open(path, "rb") as f:
    head = f.read(20)
  if len(head) < 20:
    raise _fail(path, None, "the file is truncated (no complete header)")
  magic, ndim = struct.unpack("<ii", head[:8])
  if magic not in _NORB_DTYPES or not 1 <= ndim <= 8:
    raise _fail(path, None, f"not a NORB binary matrix (magic {magic:#x}, {ndim} dims)")
  stored = max(3, ndim)
  with open(path, "rb") as f:
    f.seek(8)
    dims = np.frombuffer(f.read(4 * stored), "<i4")
  shape = tuple(int(d) for d in dims[:ndim])
  dtype = np.dtype(_NORB_DTYPES[magic])
  offset = 8 + 4 * stored
  need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if os.path.getsize(path) < need:
    raise _fail(path, None, f"the file is truncated: its header says {need} bytes, the file "
                f"has {os.path.getsize(path)}")
  return dtype, shape, offset


def _smallnorb(path: str, load: bool):
  if not os.path.isdir(path):
    raise _missing(path, "the folder of the six SmallNORB files " + ", ".join(SMALLNORB_FILES),
                   SMALLNORB_PAGE)
  images, factors = [], []
  for chunk in range(2):
    names = SMALLNORB_FILES[3 * chunk:3 * chunk + 3]
    files = [os.path.join(path, name) for name in names]
    for file in files:
      if not os.path.isfile(file):
        raise _missing(file, f"the SmallNORB file {os.path.basename(file)}", SMALLNORB_PAGE)
    (dt, ds, do), (ct, cs, co), (it, ins, io) = (_norb_header(f) for f in files)
    n = ds[0]
    if ds[1:] != (2, 96, 96) or dt != np.uint8:
      raise _fail(files[0], "dat", f"shape {ds} dtype {dt}; expected (N, 2, 96, 96) uint8")
    if cs != (n,) or ct != np.int32:
      raise _fail(files[1], "cat", f"shape {cs} dtype {ct}; expected ({n},) int32")
    if ins != (n, 4) or it != np.int32:
      raise _fail(files[2], "info", f"shape {ins} dtype {it}; expected ({n}, 4) int32")
    if not load:
      continue
    category = np.fromfile(files[1], ct, n, offset=co)
    info = np.fromfile(files[2], it, 4 * n, offset=io).reshape(n, 4)
    # info: instance, elevation, azimuth (0, 2, ..., 34: dlib halves it), lighting.
    found = np.column_stack([category, info[:, 1], info[:, 2] // 2, info[:, 3]])
    _check_factor_values(files[2], "info", found, SMALLNORB)
    if (info[:, 0] < 0).any() or (info[:, 0] >= SMALLNORB_INSTANCES).any():
      raise _fail(files[2], "info", f"instance outside 0..{SMALLNORB_INSTANCES - 1}")
    dat = np.memmap(files[0], np.uint8, "r", do, ds)
    images.append(_resize(dat[:, 0], (64, 64), thumbnail=False, as_int=True))
    factors.append(found)
  if not load:
    return None
  return FileSource("smallnorb_file", np.concatenate(images)[..., None],
                    np.concatenate(factors), SMALLNORB)


def _resize(images: np.ndarray, size, thumbnail: bool, as_int: bool = False) -> np.ndarray:
  """uint8 images resized with PIL's Lanczos filter, as dlib does (resize / thumbnail).

  `as_int`: in PIL's 32-bit integer mode, where dlib's SmallNORB images end up (it reads
  their bytes as int8, which PIL takes as mode "I"): its sums are rounded from double
  precision, not 8-bit fixed point, and not clipped; the filter's overshoot past 0..255 at
  sharp edges is clipped here, since images must lie in [0, 1]."""
  from PIL import Image
  out = np.empty((len(images),) + tuple(size) + images.shape[3:], np.uint8)
  for i, image in enumerate(images):
    image = np.ascontiguousarray(image)
    pic = Image.fromarray(image.astype(np.int32) if as_int else image)
    if thumbnail:
      pic.thumbnail(size, Image.LANCZOS)
    else:
      pic = pic.resize(size, Image.LANCZOS)
    out[i] = np.clip(np.asarray(pic), 0, 255) if as_int else np.asarray(pic)
  return out


# --- Cars3D -----------------------------------------------------------------------------------

def _cars3d(path: str, load: bool):
  import scipy.io
  if not os.path.isdir(path):
    raise _missing(path, "the folder of Cars3D's .mat files", CARS3D_PAGE)
  # dlib lists the folder in the order the file system gives; sorted is that order on
  # every machine.
  files = sorted(f for f in glob.glob(os.path.join(path, "*.mat")))
  if not files:
    raise _missing(os.path.join(path, "car_001_mesh.mat"), "a folder of Cars3D's .mat files",
                   CARS3D_PAGE)
  if len(files) > CARS3D.factor_sizes[2]:
    raise _fail(path, None, f"{len(files)} .mat files; expected at most "
                f"{CARS3D.factor_sizes[2]} cars")
  images = np.empty((len(files) * 96, 64, 64, 3), np.uint8) if load else None
  for k, file in enumerate(files):
    try:
      found = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(file)}
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds on a damaged file
      raise _fail(file, None, f"not a readable .mat file, it looks truncated or corrupt ({e})"
                  ) from e
    if "im" not in found:
      raise _fail(file, "im", f"missing; expected {CARS3D_RAW} uint8 (the file has "
                  f"{sorted(found)})")
    if tuple(found["im"][0]) != CARS3D_RAW or found["im"][1] != "uint8":
      raise _fail(file, "im", f"shape {tuple(found['im'][0])} class {found['im'][1]}; "
                  f"expected {CARS3D_RAW} uint8")
    if not load:
      continue
    try:
      im = scipy.io.loadmat(file)["im"]
    except Exception as e:  # noqa: BLE001
      raise _fail(file, "im", f"cannot be read, the file looks truncated or corrupt ({e})"
                  ) from e
    # (rows, cols, rgb, azimuth, elevation) -> (azimuth, elevation, rows, cols, rgb), as dlib.
    mesh = np.einsum("abcde->deabc", im).reshape((-1,) + CARS3D_RAW[:3])
    # Image j of a file: azimuth j // 4, elevation j % 4 (dlib's factor table for a file).
    j = np.arange(96)
    rows = ((j % 4) * 24 + j // 4) * len(files) + k
    images[rows] = _resize(mesh, (64, 64), thumbnail=True)
  if not load:
    return None
  # Rows in the row-major order of (elevation, azimuth, object): dlib's index of its
  # features (StateSpaceAtomIndex) when the folder holds all 183 cars.
  factors = _grid((4, 24, len(files)))
  return FileSource("cars3d_file", images, factors, CARS3D)


_READERS = {"dsprites_file": _dsprites, "shapes3d_file": _shapes3d, "mpi3d_file": _mpi3d,
            "smallnorb_file": _smallnorb, "cars3d_file": _cars3d}


def _path(data_cfg) -> str:
  if not data_cfg.path:
    raise ConfigError(f"data.path is empty: data.name={data_cfg.name!r} reads its files from "
                      f"there ({describe(data_cfg.name)})")
  return os.path.expanduser(data_cfg.path)


def describe(name: str) -> str:
  return {"dsprites_file": f"{DSPRITES_FILE}, from {DSPRITES_PAGE}",
          "shapes3d_file": f"{SHAPES3D_H5} or {SHAPES3D_NPZ}, from {SHAPES3D_PAGE}",
          "mpi3d_file": f"one of {MPI3D_FILES}, from {MPI3D_PAGE}",
          "smallnorb_file": f"a folder with {', '.join(SMALLNORB_FILES)}, from "
                            f"{SMALLNORB_PAGE}",
          "cars3d_file": f"a folder of .mat files, from {CARS3D_PAGE}"}[name]


def verify(path: str, enabled: bool) -> None:
  expected = KNOWN_SHA256.get(os.path.basename(path))
  if not enabled or expected is None:
    return
  got = sha256(path)
  if got != expected:
    raise DataError(f"file {path!r}: sha256 {got} is not the published {expected}; the file "
                    f"is damaged or another version (data.verify=False accepts it)")


def _files_to_verify(name: str, path: str) -> list[str]:
  if name == "smallnorb_file":
    return [os.path.join(path, f) for f in SMALLNORB_FILES]
  if name == "cars3d_file":
    return []
  return [path]


def check(data_cfg) -> None:
  """Everything that can be checked without reading the images: the files exist, their
  fields have the expected shapes and dtypes, none is cut short, the checksums."""
  path = _path(data_cfg)
  _READERS[data_cfg.name](path, load=False)
  for file in _files_to_verify(data_cfg.name, path):
    verify(file, bool(data_cfg.verify))


def load(data_cfg) -> FileSource:
  """The whole data set (checked as `check` does)."""
  check(data_cfg)
  full = _READERS[data_cfg.name](_path(data_cfg), load=True)
  if "num_eval" in data_cfg and int(data_cfg.num_eval) >= len(full):
    raise ConfigError(f"data.num_eval={data_cfg.num_eval}: {data_cfg.name} at "
                      f"{data_cfg.path!r} has {len(full)} images; hold out fewer")
  return full
