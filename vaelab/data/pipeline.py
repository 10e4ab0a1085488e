"""Global batches whose content is a pure function of (seed, step), on the host or on the device.

Example position p = step * batch_size + row walks through epochs; epoch e visits the
source in the order of a permutation seeded by (seed, e). A resumed run therefore sees
exactly the batches an uninterrupted run would, on any number of devices or processes.

Two paths give those batches, bitwise the same:
  host:   `Batcher.batch(step)`: each process materializes its own rows of the global batch,
          which are sharded onto its devices; a thread prefetches them (`prefetch`).
  device: a source with a device form (`source.device_form()`: in-memory arrays,
          procedural dSprites, ...) small enough for the devices is placed on every device
          once; per step one jitted gather, from the data and a table of two epochs'
          permutations (replaced at epoch boundaries), computes each device's rows'
          indices from the step number and gathers or renders them into the same sharded
          batch (`DeviceFeed`). A run alone compiles that gather into its train step
          (`DeviceFeed.args` + `TrainStep.with_input`): one dispatch per step.
`data.placement` chooses: auto (device when the source has a device form that fits), device
(refused naming the reason when it cannot), host.
"""
from __future__ import annotations

import queue
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import PartitionSpec as P

from vaelab import spmd
from vaelab.errors import ConfigError

AXIS = spmd.AXIS
PLACEMENTS = ("auto", "device", "host")
# The most bytes of source arrays `auto` puts on each device: every device holds a replica.
_CPU_BUDGET = 2 << 30
_ACCELERATOR_FRACTION = 0.25


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

  def perm(self, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the source."""
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
      out[sel] = self.perm(int(e))[within[sel]]
    return out

  def batch(self, step: int) -> dict[str, np.ndarray]:
    if getattr(self.source, "keyed", False):  # DeviceForm.keyed: the same keys on both paths
      b = self.source.get(self.indices(step), keys=_row_keys(self.seed, step, self.local_rows))
    else:
      b = self.source.get(self.indices(step))
    # "index" is the row in the global batch: with the step it keys each example's randomness.
    b["index"] = self.local_rows.astype(np.int32)
    return b


def _row_keys(seed: int, step: int, rows: np.ndarray):
  return _example_keys(np.uint32(seed), np.int32(step), np.asarray(rows, np.int32))


_example_keys = jax.jit(spmd.example_keys)


# ---------------------------------------------------------------- the device path


def _nbytes(tree) -> int:
  return sum(np.asarray(a).nbytes for a in jax.tree.leaves(tree))


def _budget() -> int:
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return _CPU_BUDGET
  limit = (device.memory_stats() or {}).get("bytes_limit")
  return int(limit * _ACCELERATOR_FRACTION) if limit else _CPU_BUDGET


def device_form(source, placement: str, global_batch: int | None = None,
                reads: int | None = None):
  """The source's DeviceForm if the device path applies under `placement`, else None.
  `global_batch`: a training batch, which must not span more than two epochs. `reads`: the
  examples the run will read; under auto, a source whose device form must be built
  (`device_form_builds`: about one pass over the source, as sequences are) keeps the host
  path for a run that reads fewer examples than it has."""
  if placement not in PLACEMENTS:
    raise ConfigError(f"data.placement={placement!r}: expected one of {PLACEMENTS}")
  if placement == "host":
    return None
  if (placement == "auto" and getattr(source, "device_form_builds", False)
      and reads is not None and reads < len(source)):
    return None
  form = source.device_form() if hasattr(source, "device_form") else None
  why = None
  if form is None:
    why = f"source {source.name!r} has no device form"
  elif global_batch is not None and global_batch > len(source):
    why = (f"batch_size={global_batch} is larger than the {len(source)} examples of "
           f"{source.name!r}")
  elif _nbytes(form.arrays) > _budget():
    why = (f"source {source.name!r} needs {_nbytes(form.arrays) / 2**20:.0f} MiB per device, "
           f"over the {_budget() / 2**20:.0f} MiB the device path may use")
  if why is None:
    return form
  if placement == "device":
    raise ConfigError(f"data.placement='device': {why}; use 'auto' or 'host'")
  return None


class DeviceFeed:
  """The device path's batches: the source's arrays placed on every device once, and a
  permutation table of the two epochs a step's rows fall in (rebuilt only when the steps
  move past it, from the same `Batcher.perm`). `batch(step)` dispatches one jitted gather
  (or render) whose output is the sharded global batch the host path would have made:
  the train step is the same executable on both paths, so their runs are bitwise equal.

  Several batchers (population members with their own seeds) share the data: `stacked`
  gives their batches a leading member axis (a vmapped step); otherwise, with
  `per_member`, `batch` returns a tuple of one run's batch per member (members with one
  seed get the same array)."""

  def __init__(self, batchers: list, form, mesh, stacked: bool = False,
               per_member: bool = False):
    self.batchers, self.mesh, self.stacked = batchers, mesh, stacked
    self.per_member = per_member and not stacked
    self.n, self.global_batch = len(batchers[0].source), batchers[0].global_batch
    self.data = spmd.replicate(mesh, form.arrays)
    # The sharded gather, unjitted: a step can compile it in front of itself.
    self.gather = _train_gather(form, self.n, self.global_batch, mesh, stacked)
    self._gather = jax.jit(self.gather)
    self._first_epoch, self._tables = None, None
    self._keys = [(b.seed, id(b.source)) for b in batchers]  # what a member's rows depend on

  def _table(self, batcher, step: int, first: int) -> dict:
    # Positions relative to the table's first epoch stay below 2n: int32 on the device for
    # any run length.
    return {"perm": np.stack([batcher.perm(first), batcher.perm(first + 1)]).astype(np.int32),
            "s0": np.int32(step), "offset0": np.int32(step * self.global_batch - first * self.n),
            "seed": np.uint32(batcher.seed)}

  def batch(self, step: int):
    args = self._args(step)
    if not self.per_member:
      return self._gather(*args[0])
    # Members with one seed read the same rows (a β sweep over a few seeds): one gather or
    # render each, passed to all of them (a step donates its state, not its batch).
    made = {}
    for key, a in zip(self._keys, args):
      if key not in made:
        made[key] = self._gather(*a)
    return tuple(made[key] for key in self._keys)

  def args(self, step: int) -> tuple:
    """`gather`'s arguments for `step`: `gather(*args(step))` is `batch(step)` (with
    `per_member`, a tuple of them, one per member)."""
    args = self._args(step)
    return tuple(args) if self.per_member else args[0]

  def _args(self, step: int) -> list:
    first = step * self.global_batch // self.n
    last = ((step + 1) * self.global_batch - 1) // self.n
    if self._first_epoch is None or not (
        self._first_epoch <= first and last <= self._first_epoch + 1):
      self._first_epoch = first
      made = {}  # one table per seed, as one batch per seed below
      for key, b in zip(self._keys, self.batchers):
        if key not in made:
          made[key] = self._table(b, step, first)
      if self.stacked:
        self._tables = [spmd.replicate(self.mesh, jax.tree.map(
            lambda *xs: np.stack(xs), *[made[key] for key in self._keys]))]
      else:
        placed = {key: spmd.replicate(self.mesh, t) for key, t in made.items()}
        self._tables = [placed[key] for key in self._keys]
    return [(self.data, t, np.int32(step)) for t in self._tables]


def _train_gather(form, num_examples: int, global_batch: int, mesh, stacked: bool):
  """(data, table, step) -> the sharded global batch at `step` (to be jitted): each device
  computes its rows' source indices and gathers them."""

  def per_device(data, table, step):
    rows = spmd.local_rows(global_batch)
    rel = table["offset0"] + (step - table["s0"]) * global_batch + rows
    second = (rel >= num_examples).astype(jnp.int32)
    index = table["perm"][second, rel - second * num_examples]
    if form.keyed:
      return {**form.get(data, index, spmd.example_keys(table["seed"], step, rows)),
              "index": rows}
    return {**form.get(data, index), "index": rows}

  out_spec = P(AXIS)
  if stacked:
    per_device = jax.vmap(per_device, in_axes=(None, 0, None))
    out_spec = P(None, AXIS)
  return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P()), out_specs=out_spec)


class DeviceEvalFeed:
  """The evaluation set placed on the devices once; `batches()` yields the sharded batches
  `eval_batches` makes on the host (rows padded past the end and masked), one dispatch each."""

  def __init__(self, form, num_examples: int, global_batch: int, mesh):
    self.n, self.global_batch = num_examples, global_batch
    self.data = spmd.replicate(mesh, form.arrays)

    def per_device(data, start):
      pos = start + spmd.local_rows(global_batch)
      mask = pos < num_examples
      batch = form.get(data, jnp.where(mask, pos, 0))
      return {**batch, "index": pos, "mask": mask.astype(jnp.float32)}

    self._gather = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P()),
                                         out_specs=P(AXIS)))

  def batches(self):
    for start in range(0, self.n, self.global_batch):
      yield self._gather(self.data, np.int32(start))


# ---------------------------------------------------------------- the host path


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
