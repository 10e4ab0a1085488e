"""Global batches whose content is a pure function of (seed, step).

Example position p = step * batch_size + row walks through epochs; epoch e visits the
source in the order of a permutation seeded by (seed, e). A resumed run therefore sees
exactly the batches an uninterrupted run would, on any number of devices or processes.
Each process materializes only its own rows of the global batch.
"""
from __future__ import annotations

import queue
import threading

import numpy as np


class Batcher:

  def __init__(self, source, global_batch: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    if global_batch % process_count:
      raise ValueError(f"batch_size={global_batch} is not divisible by {process_count} processes")
    self.source = source
    self.global_batch = global_batch
    self.seed = seed
    self.local_rows = np.arange(global_batch // process_count) + process_index * (
        global_batch // process_count)
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) > 2:
        self._perms.pop(min(self._perms))
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
    return self._perms[epoch]

  def indices(self, step: int) -> np.ndarray:
    """Source indices of this process's rows at `step`."""
    n = len(self.source)
    pos = step * self.global_batch + self.local_rows
    epochs, within = np.divmod(pos, n)
    out = np.empty_like(pos)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self._perm(int(e))[within[sel]]
    return out

  def batch(self, step: int) -> dict[str, np.ndarray]:
    b = self.source.get(self.indices(step))
    # "index" is the row in the global batch: with the step it keys each example's randomness.
    b["index"] = self.local_rows.astype(np.int32)
    return b


def eval_batches(source, global_batch: int, process_index: int = 0, process_count: int = 1):
  """Fixed-order batches covering the source once; the last is padded and masked.

  "index" is the example's position in the evaluation set, so evaluation randomness
  (dynamic binarization, posterior samples) is the same on every run.
  """
  n = len(source)
  local = global_batch // process_count
  rows = np.arange(local) + process_index * local
  for start in range(0, n, global_batch):
    pos = start + rows
    mask = pos < n
    b = source.get(np.where(mask, pos, 0))
    b["index"] = pos.astype(np.int32)
    b["mask"] = mask.astype(np.float32)
    yield b


def prefetch(iterator, size: int = 2):
  """Runs `iterator` in a thread so host-side batch preparation overlaps device compute."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
      q.put(done)
    except BaseException as e:  # surfaced in the consumer, not lost in the thread
      q.put(e)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item
