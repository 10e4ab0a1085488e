"""Files a run writes whole (results.json, latent_factors.json) and the frozen network weights
it reads (LPIPS, Inception): on the ground floor, for every layer."""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np


def write_json(path: str, obj) -> None:
  """Writes via a temporary file and a rename, so a kill never leaves half a file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_weights(path, shapes: dict, error: Callable[[str, str], Exception], keep: bool,
                 check: Callable[[str, np.ndarray], str | None] | None = None) -> dict:
  """The float32 arrays {name: array} of a weights .npz, every name of `shapes` with its
  shape (and, with `check`, whatever it refuses: it returns a reason or None); anything
  wrong raises error(path, what), before any array is used. keep=False checks only."""
  if not path:
    raise error(path, "no file given")
  if not os.path.isfile(path):
    raise error(path, "no such file")
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # a truncated or foreign file: numpy raises many kinds
    raise error(path, f"unreadable as .npz ({type(e).__name__}: {e})") from e
  out = {}
  with data:
    for name, shape in shapes.items():
      if name not in data.files:
        raise error(path, f"array {name!r} missing")
      a = data[name]
      if a.shape != tuple(shape):
        raise error(path, f"array {name!r} has shape {a.shape}, expected {tuple(shape)}")
      reason = check(name, a) if check is not None else None
      if reason:
        raise error(path, f"array {name!r} {reason}")
      if keep:
        out[name] = a.astype(np.float32)
  return out
