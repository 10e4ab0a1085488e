"""Files a run writes whole (results.json, latent_factors.json): on the ground floor, for
every layer."""
from __future__ import annotations

import json
import os


def write_json(path: str, obj) -> None:
  """Writes via a temporary file and a rename, so a kill never leaves half a file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
