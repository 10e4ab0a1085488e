"""Where logged numbers go: metrics.jsonl, TensorBoard events, and the console."""
from __future__ import annotations

import json
import math
import os
import re
import time

import jax
import numpy as np




def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


class MetricsWriter:
  """Writes only on process 0, so a multi-host run logs once; `workdir=None` (a run in
  memory) writes no file. Every record is also kept in `history`."""

  def __init__(self, workdir: str | None, resume_step: int = 0):
    self.enabled = workdir is not None and jax.process_index() == 0
    self.history: list[dict] = []
    self._tb = None
    if not self.enabled:
      return
    self.path = os.path.join(workdir, "metrics.jsonl")
    os.makedirs(workdir, exist_ok=True)
    self._truncate_after(resume_step)
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _truncate_after(self, step: int):
    """A resumed run repeats the steps after its checkpoint: drop their old lines."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    kept = []
    for line in lines:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line)
      except (ValueError, KeyError):
        continue  # a line cut short by a kill
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: dict):
    record = {"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}}
    self.history.append(record)
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.add_scalar(k, v, step)

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A console line with steps/s and the time left."""

  def __init__(self, first_step: int, last_step: int):
    self.last_step = last_step
    self._t, self._s = time.perf_counter(), first_step

  def rate(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._s) / max(now - self._t, 1e-9)
    self._t, self._s = now, step
    return rate

  def line(self, step: int, rate: float, scalars: dict) -> str:
    eta = (self.last_step - step) / rate if rate > 0 else float("inf")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    shown = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in sorted(
        scalars.items(), key=lambda kv: kv[0] != "train/loss") if _shown(k))
    return f"step {step}/{self.last_step} {shown} | {rate:.1f} steps/s | ETA {eta_s}"


# The console line shows the family's own training terms, not the step's bookkeeping or
# per-dimension breakdowns (metrics.jsonl and TensorBoard hold everything).
_NOT_SHOWN = re.compile(r"^train/(grad_norm|learning_rate|skipped_steps)$|_(dim|q)\d+$")


def _shown(key: str) -> bool:
  return key.startswith("train/") and not _NOT_SHOWN.search(key)
