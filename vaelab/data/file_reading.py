"""Reading large data files where they lie, for the official files of the data sets
(`ground_truth_files`): errors that name the file and the field, a file's checksum computed
once and cached beside it, npz members read a row at a time with one pread each (inflated
once beside the file where compressed), and h5 data sets read per batch through h5py."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import zipfile

import numpy as np

from vaelab.errors import DataError

_HASH_CHUNK = 8 << 20


def _fail(path: str, field: str | None, message: str) -> DataError:
  where = f"file {path!r}" + (f", field {field!r}" if field else "")
  return DataError(f"{where}: {message}")


def _missing(path: str, what: str, page: str) -> DataError:
  return DataError(f"{path!r} does not exist: data.path must be {what}, from {page}")


# --- checksums, computed once per file version ----------------------------------------------

def _beside(path: str, suffix: str) -> str:
  """PATH + suffix, or a file under ~/.cache/vaelab where PATH's folder is read-only."""
  if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
    return path + suffix
  cache = os.path.join(os.path.expanduser("~"), ".cache", "vaelab")
  os.makedirs(cache, exist_ok=True)
  tag = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
  return os.path.join(cache, f"{tag}.{os.path.basename(path)}{suffix}")


def _cache_path(path: str) -> str:
  return _beside(path, ".sha256")


def sha256(path: str) -> str:
  """The file's sha256, cached beside it (FILE.sha256, JSON with the size and mtime it was
  computed for): a file that did not change is not read again."""
  st = os.stat(path)
  record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
  cache = _cache_path(path)
  try:
    with open(cache) as f:
      saved = json.load(f)
    if {k: saved.get(k) for k in record} == record and isinstance(saved.get("sha256"), str):
      return saved["sha256"]
  except (OSError, ValueError):
    pass
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_HASH_CHUNK), b""):
      h.update(block)
  record["sha256"] = h.hexdigest()
  try:
    with open(cache + ".tmp", "w") as f:
      json.dump(record, f)
    os.replace(cache + ".tmp", cache)
  except OSError:
    pass  # nowhere to write: hashed again next time
  return record["sha256"]


# --- npz members: headers without reading, arrays memory-mapped -------------------------------

@dataclasses.dataclass(frozen=True)
class Member:
  shape: tuple[int, ...]
  dtype: np.dtype
  offset: int | None  # the array's first byte in the zip file when stored uncompressed
  info: zipfile.ZipInfo


def npz_members(path: str) -> dict[str, Member]:
  """{key: Member} of an npz file, reading only the zip directory and the npy headers."""
  size = os.path.getsize(path)
  try:
    zf = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise _fail(path, None, f"not a readable npz, the file looks truncated or corrupt "
                f"({e})") from e
  out = {}
  with zf, open(path, "rb") as raw:
    for info in zf.infolist():
      if not info.filename.endswith(".npy"):
        continue
      key = info.filename[:-4]
      try:
        with zf.open(info) as f:
          version = np.lib.format.read_magic(f)
          read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
          shape, fortran, dtype = read(f)
          header_len = f.tell() if info.compress_type == zipfile.ZIP_STORED else None
      except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _fail(path, key, f"cannot read its header, the file looks truncated or corrupt "
                    f"({e})") from e
      offset = None
      if info.compress_type == zipfile.ZIP_STORED:
        raw.seek(info.header_offset)
        local = raw.read(30)
        if len(local) < 30:
          raise _fail(path, key, "the file is truncated (its zip entry is cut off)")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len + header_len
        end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end > size:
          raise _fail(path, key, f"the file is truncated: the array ends at byte {end}, the "
                      f"file has {size}")
      if fortran and len(shape) > 1:
        raise _fail(path, key, "stored in Fortran order; expected C order (np.savez's "
                    "default)")
      out[key] = Member(tuple(shape), dtype, offset, info)
  return out


def _inflated_path(path: str, key: str) -> str:
  return _beside(path, f".{key}.npy")


class RowFile:
  """Rows of a C-order array stored at `offset` of a file, read with one pread per row.

  Not a memory map: through np.memmap, each row of a random batch faults pages in with the
  kernel's read-ahead around it, tens of times slower than one pread of the row."""

  def __init__(self, path: str, offset: int, shape, dtype):
    self.path, self.offset = path, int(offset)
    self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
    self.nbytes = self.row_bytes * self.shape[0]
    self._fd = None

  def __len__(self):
    return self.shape[0]

  def _read(self, start: int, count: int) -> bytes:
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
    data = os.pread(self._fd, count, self.offset + start)
    if len(data) != count:
      raise _fail(self.path, None, f"the file is truncated: {count} bytes at "
                  f"{self.offset + start} read as {len(data)}")
    return data

  def __getitem__(self, rows):
    rows = np.asarray(rows, np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
      raise IndexError(f"rows outside [0, {self.shape[0]}) of {self.path!r}")
    out = np.empty((len(rows),) + self.shape[1:], self.dtype)
    flat = out.reshape(len(rows), -1).view(np.uint8)
    if len(rows) > 1 and (np.diff(rows) == 1).all():  # a run: one read
      flat[:] = np.frombuffer(self._read(int(rows[0]) * self.row_bytes,
                                         len(rows) * self.row_bytes),
                              np.uint8).reshape(len(rows), -1)
      return out
    for i, r in enumerate(rows):
      flat[i] = np.frombuffer(self._read(int(r) * self.row_bytes, self.row_bytes), np.uint8)
    return out

  def __del__(self):
    fd, self._fd = self._fd, None
    if fd is not None:
      try:
        os.close(fd)
      except Exception:  # noqa: BLE001 - at interpreter exit os may be gone
        pass


def member_array(path: str, key: str, member: Member) -> RowFile:
  """The member's rows, read in place when it is stored uncompressed, else from a copy
  inflated once beside the file (FILE.KEY.npy)."""
  if member.offset is not None:
    return RowFile(path, member.offset, member.shape, member.dtype)
  out = _inflated_path(path, key)
  src = os.stat(path)
  # The copy records the version of the file it was inflated from.
  record = {"size": src.st_size, "mtime_ns": src.st_mtime_ns}
  try:
    with open(out + ".json") as f:
      fresh = json.load(f) == record and os.path.exists(out)
  except (OSError, ValueError):
    fresh = False
  if not fresh:
    try:
      with zipfile.ZipFile(path) as zf, zf.open(member.info) as f, open(out + ".tmp",
                                                                          "wb") as g:
        while block := f.read(_HASH_CHUNK):
          g.write(block)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise _fail(path, key, f"cannot be read, the file looks truncated or corrupt ({e})"
                  ) from e
    os.replace(out + ".tmp", out)
    with open(out + ".json", "w") as f:
      json.dump(record, f)
  with open(out, "rb") as f:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
    offset = f.tell()
  if tuple(shape) != member.shape or dtype != member.dtype:
    os.remove(out)
    return member_array(path, key, member)
  return RowFile(out, offset, shape, dtype)


def _field(path, members, key, dtype_kinds, what) -> Member:
  if key not in members:
    raise _fail(path, key, f"missing; expected {what} (the file has {sorted(members)})")
  m = members[key]
  if m.dtype.kind not in dtype_kinds:
    raise _fail(path, key, f"dtype {m.dtype}; expected {what}")
  return m


def _shape_fail(path, key, got, what) -> DataError:
  return _fail(path, key, f"shape {got}; expected {what}")



class _H5Images:
  """An h5py data set read in increasing row order (what h5py's fancy indexing needs)."""

  def __init__(self, path: str, key: str):
    self.path, self.key = path, key
    self._file = None
    import h5py
    with h5py.File(path, "r") as f:
      self.shape, self.dtype = f[key].shape, f[key].dtype

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, rows):
    import h5py
    if self._file is None:
      self._file = h5py.File(self.path, "r")
    rows = np.asarray(rows).reshape(-1)
    unique, inverse = np.unique(rows, return_inverse=True)
    return self._file[self.key][unique][inverse.reshape(-1)]

  @property
  def nbytes(self):
    return int(np.prod(self.shape)) * self.dtype.itemsize
