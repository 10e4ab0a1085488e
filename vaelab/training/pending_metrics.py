"""A run's per-step metrics, pending on the device until a log point, and the non-finite
policy applied to them (`nonfinite`: stop raises, skip counts)."""
from __future__ import annotations

import jax
import numpy as np


class NonFiniteError(FloatingPointError):
  pass


def member_of(tree, index: int | None):
  """A population member's part of a state or metrics: the tree itself for a run alone
  (index None), the index-th element of a "loop" population's tuple, or the index-th row
  of a vmapped population's stacked arrays."""
  if index is None:
    return tree
  if isinstance(tree, tuple):
    return tree[index]
  if all(isinstance(v, np.ndarray) for v in jax.tree.leaves(tree)):
    return jax.tree.map(lambda v: v[index], tree)
  return _row(tree, index)


@jax.jit
def _row(tree, index):
  # One program per tree (the state of a member to checkpoint, say), where indexing leaf by
  # leaf on the device compiles and dispatches a slice per leaf shape.
  return jax.tree.map(lambda v: v[index], tree)


class PendingMetrics:
  """Per-step metrics (one packed vector per step) stay on device until a log point, so the
  host never waits each step.

  `member`: the index of this run in a population's metrics, or None."""

  def __init__(self, policy: str, member: int | None = None, name: str = ""):
    self.policy, self.items, self.skipped = policy, [], 0
    self.member, self.name = member, name

  def _host(self) -> list[dict]:
    """The pending steps' metrics of this run, on the host: one small read per step."""
    # A "loop" population's member is picked before the read (its own metrics only); a
    # vmapped population's rows are read whole and sliced on the host.
    picked = [(m[self.member], None) if isinstance(m, tuple) else (m, self.member)
              for _, m in self.items]
    host = jax.device_get([m for m, _ in picked])
    return [member_of(m, index).to_dict() for m, (_, index) in zip(host, picked)]

  def add(self, step: int, metrics):
    self.items.append((step, metrics))

  def check(self, host: list | None = None):
    """Raises under the `stop` policy if any pending step was not finite."""
    host = self._host() if host is None else host
    bad = [s for (s, _), m in zip(self.items, host) if not bool(m["finite"])]
    if bad and self.policy == "stop":
      raise NonFiniteError(
          f"{self.name}non-finite loss or gradient at step {bad[0]}: the update was not applied "
          f"and no checkpoint after it was written. Lower optimizer.learning_rate or set "
          f"nonfinite='skip' to skip such updates.")
    return bad

  def drain(self) -> dict[str, float]:
    if not self.items:
      return {}
    host = self._host()
    self.skipped += len(self.check(host))
    self.items = []
    good = [m for m in host if bool(m["finite"])] or host
    keys = [k for k in good[0] if k != "finite"]
    return {f"train/{k}": float(np.mean([m[k] for m in good])) for k in keys}

