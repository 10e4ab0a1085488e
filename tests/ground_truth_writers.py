"""Small files in the official formats of disentanglement_lib's data sets (and MPI3D's npz at
its real size as a sparse file), for tests/test_ground_truth_files.py and the experiments'
tests. `bad` writes one field wrong: "shape" or "dtype"."""
from __future__ import annotations

import os
import struct

import numpy as np

from vaelab.data import dsprites


def _pattern(factors: np.ndarray, sizes, side: int, channels: int) -> np.ndarray:
  """uint8 images whose channels' brightness and a bar's place follow the factors."""
  factors = np.asarray(factors)
  n = len(factors)
  out = np.zeros((n, side, side, channels), np.uint8)
  level = (factors + 1) / (np.asarray(sizes) + 1)
  for c in range(channels):
    out[..., c] = (255 * level[:, c % factors.shape[1]])[:, None, None]
  bar = (level[:, -1] * (side - 4)).astype(int)
  for i in range(n):
    out[i, bar[i]:bar[i] + 4, :, :] = 255
  return out


def write_dsprites(path: str, bad: str | None = None) -> np.ndarray:
  """The dSprites npz (compressed, with a pickled metadata field as the real one has) of
  192 images of the factor grid; returns their factors."""
  axes = [np.arange(1), np.arange(3), np.array([0, 5]), np.array([0, 10]),
          np.array([0, 10, 20, 31]), np.array([0, 10, 20, 31])]
  factors = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 6)
  imgs = dsprites.render(factors)[..., 0].astype(np.uint8)
  if bad == "shape":
    imgs = imgs[:, :32]
  if bad == "dtype":
    imgs = imgs.astype(np.float32)
  np.savez_compressed(path, imgs=imgs, latents_classes=factors.astype(np.int64),
                      latents_values=factors.astype(np.float64),
                      metadata=np.array({"latents_sizes": [1, 3, 6, 40, 32, 32]}, dtype=object))
  return factors


SHAPES3D_GRID = (2, 2, 2, 2, 2, 3)


def _shapes3d_rows():
  factors = np.indices(SHAPES3D_GRID).reshape(6, -1).T
  values = factors * np.array([0.1, 0.1, 0.1, 0.0714, 1.0, 4.29]) + np.array(
      [0, 0, 0, 0.75, 0, -30])
  return factors, values, _pattern(factors, (10, 10, 10, 8, 4, 15), 64, 3)


def write_shapes3d_npz(path: str, bad: str | None = None):
  """dlib's Shapes3D npz (uncompressed) on a 2x2x2x2x2x3 grid of the factors."""
  factors, values, images = _shapes3d_rows()
  images = images.reshape(SHAPES3D_GRID + (64, 64, 3))
  if bad == "shape":
    images = images[..., :32, :32, :]
  if bad == "dtype":
    images = images.astype(np.float32)
  np.savez(path, images=images, labels=values.reshape(SHAPES3D_GRID + (6,)))
  return factors


def write_shapes3d_h5(path: str, bad: str | None = None):
  """DeepMind's 3dshapes.h5 layout: images (N, 64, 64, 3) uint8, labels (N, 6) float64 of
  the factors' values (hues in [0, 1), scale 0.75..1.25, shape 0..3, orientation -30..30)."""
  import h5py
  factors, values, images = _shapes3d_rows()
  if bad == "shape":
    images = images[..., :1]
  if bad == "dtype":
    images = images.astype(np.float32)
  with h5py.File(path, "w") as f:
    f.create_dataset("images", data=images)
    f.create_dataset("labels", data=values)
  return factors


def write_sparse_npz(path: str, key: str, shape, dtype=np.uint8) -> None:
  """An uncompressed npz of one array of zeros, written as a sparse file (the array's bytes
  are a hole): a zip64 entry with its npy header, the hole, the central directory."""
  dtype = np.dtype(dtype)
  header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
            "shape": tuple(shape)}
  import io
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, header)  # the magic string and the header
  npy_header = buf.getvalue()
  size = len(npy_header) + int(np.prod(shape)) * dtype.itemsize
  name = f"{key}.npy".encode()
  max32 = 0xFFFFFFFF
  local_extra = struct.pack("<HHQQ", 1, 16, size, size)
  local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, 0, max32, max32,
                      len(name), len(local_extra)) + name + local_extra
  with open(path, "wb") as f:
    f.write(local)
    f.write(npy_header)
    f.seek(len(local) + size)
    cd_offset = f.tell()
    central_extra = struct.pack("<HHQQQ", 1, 24, size, size, 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, 0, max32,
                          max32, len(name), len(central_extra), 0, 0, 0, 0, max32)
    central += name + central_extra
    f.write(central)
    eocd64_offset = f.tell()
    f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1, len(central),
                        cd_offset))
    f.write(struct.pack("<IIQI", 0x07064B50, 0, eocd64_offset, 1))
    f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), max32, 0))


MPI3D_REAL_SHAPE = (1036800, 64, 64, 3)


def write_mpi3d(path: str, bad: str | None = None):
  """mpi3d_real.npz's layout at its real size, as a sparse file of zeros (12.7 GB apparent,
  a few kB on disk)."""
  shape = (1000, 64, 64, 3) if bad == "shape" else MPI3D_REAL_SHAPE
  write_sparse_npz(path, "images", shape, np.float32 if bad == "dtype" else np.uint8)


_NORB_MAGIC = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54,
               np.dtype(np.float32): 0x1E3D4C51}
SMALLNORB_CHUNKS = ("5x46789x9x18x6x2x96x96-training", "5x01235x9x18x6x2x96x96-testing")


def _write_norb(path: str, array: np.ndarray):
  dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
  with open(path, "wb") as f:
    f.write(struct.pack("<ii", _NORB_MAGIC[array.dtype], array.ndim))
    f.write(struct.pack(f"<{len(dims)}i", *dims))
    f.write(np.ascontiguousarray(array).tobytes())


def write_smallnorb(folder: str, bad: str | None = None):
  """The six SmallNORB files (NORB's binary matrices) of 80 images each: categories 0..4,
  instances 2, elevations 2, azimuths 0 and 2, lightings 2; both cameras the same."""
  os.makedirs(folder, exist_ok=True)
  grid = np.indices((5, 2, 2, 2, 2)).reshape(5, -1).T  # cat, instance, elev, azimuth/2, light
  for chunk in SMALLNORB_CHUNKS:
    factors = grid[:, [0, 2, 3, 4]]
    left = _pattern(factors, (5, 9, 18, 6), 96, 1)[..., 0]
    # A photo's texture: the resize's rounding shows on it.
    texture = np.random.default_rng(len(chunk)).integers(-40, 40, left.shape)
    left = np.clip(left.astype(int) + texture, 0, 255).astype(np.uint8)
    dat = np.stack([left, left], axis=1)
    if bad == "shape":
      dat = dat[:, :, :48, :48]
    info = np.column_stack([grid[:, 1], grid[:, 2], 2 * grid[:, 3], grid[:, 4]]).astype(
        np.int32)
    cat = grid[:, 0].astype(np.float32 if bad == "dtype" else np.int32)
    base = os.path.join(folder, f"smallnorb-{chunk}-")
    _write_norb(base + "dat.mat", dat)
    _write_norb(base + "cat.mat", cat)
    _write_norb(base + "info.mat", info)


def write_cars3d(folder: str, bad: str | None = None, cars: int = 2):
  """Cars3D's .mat files (MATLAB v5, "im" (128, 128, 3, 24, 4) uint8), `cars` of them."""
  import scipy.io
  os.makedirs(folder, exist_ok=True)
  for k in range(cars):
    az, el = np.meshgrid(np.arange(24), np.arange(4), indexing="ij")
    factors = np.column_stack([el.reshape(-1), az.reshape(-1), np.full(96, k)])
    images = _pattern(factors, (4, 24, 183), 128, 3)  # (96, 128, 128, 3): azimuth, elevation
    im = images.reshape(24, 4, 128, 128, 3).transpose(2, 3, 4, 0, 1)
    if bad == "shape":
      im = im[:64, :64]
    if bad == "dtype":
      im = im.astype(np.float64)
    scipy.io.savemat(os.path.join(folder, f"car_{k + 1:03d}_mesh.mat"), {"im": im})
