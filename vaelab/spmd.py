"""The ground floor every layer shares: the device mesh, per-example keys, sharding, the
model's input transform, global-batch statistics and the evaluation step.

Nothing here imports another vaelab module, so `data`, `models`, `evaluate` and `train`
can all use it without reaching up into each other.

What a loss sees. The train step is per-device (SPMD) code: a family's loss is called on
ONE DEVICE'S SHARD of the global batch, and the step averages the per-device losses'
gradients. A mean over examples of a per-example value is therefore right as it is (the
shards are equal in size), but a nonlinear function of a batch statistic is not: the
capacity objective's |mean KL - C|, the sparse autoencoder's KL(rho || rho_hat), a batch
MMD. Compute such statistics with `global_mean` / `global_sum` / `global_gather`, which
reduce over the mesh axis wherever it is bound (the train step and the evaluation step,
both per-device code) and are the identity outside it (init, notebooks, single-device
passes), and neither the run nor its evaluation depends on the device count.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "batch"
# Evaluation keys live apart from every training step (steps are < 2**31).
EVAL_STREAM = 2**32 - 1
BINARIZE_MODES = ("none", "threshold", "dynamic")


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices of all processes, ordered by process: process p's devices
  then hold rows [p, p+1) * B / P of the global batch, the rows its pipeline loads."""
  # Mesh(...) gives Auto axes; jax.make_mesh's Explicit axes reject shard_map over an
  # unsharded (replicated) state.
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (AXIS,))


def example_keys(seed, stream, index):
  """One key per example from (seed, step or eval stream, example index): device-count free."""
  base = jax.random.fold_in(jax.random.key(seed), stream)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def split_keys(keys):
  """Separate streams for binarization and for the model's own sampling."""
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
  return fold(keys, 0), fold(keys, 1)


def binarize(mode: str, image, keys):
  """`data.binarize`. `keys` are per-example: a dynamic draw depends on the example and step,
  not on the device."""
  if mode == "none":
    return image
  if mode == "threshold":
    return (image > 0.5).astype(image.dtype)
  if mode == "dynamic":
    u = jax.vmap(lambda k: jax.random.uniform(k, image.shape[1:], image.dtype))(keys)
    return (u < image).astype(image.dtype)
  raise ValueError(f"data.binarize={mode!r}: expected one of {BINARIZE_MODES}")


def model_input(batch: dict, mode: str, keys) -> dict:
  """The one input transform of every path that feeds a model (train step, evaluation,
  features for probes and disentanglement, codes for a prior): the batch with "image"
  binarized as `data.binarize` says, the image before binarization kept as "image_raw" (a
  decoder mean estimates intensities). Batches without images (code maps) pass through."""
  if "image" not in batch:
    return batch
  return {**batch, "image": binarize(mode, batch["image"], keys), "image_raw": batch["image"]}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _eval_input(mode: str, seed: int, image, index):
  bin_keys, _ = split_keys(example_keys(seed, EVAL_STREAM, index))
  return binarize(mode, image, bin_keys)


def eval_input(mode: str, seed: int, image, index) -> np.ndarray:
  """Images as the evaluation step feeds them to the model (`model_input` with the fixed
  evaluation draw of examples `index`), for paths outside the step: probes, disentanglement
  representations, active units, code extraction."""
  if mode == "none":
    return np.asarray(image)
  return np.asarray(_eval_input(mode, int(seed), jnp.asarray(image),
                                jnp.asarray(index, jnp.int32)))


# ---------------------------------------------------------------- global-batch statistics


def _over_axis(reduce, x):
  # Outside the train and evaluation steps' shard_map (init, a notebook, single-device
  # passes) the axis is not bound and the local batch is the whole batch.
  try:
    return reduce(x, AXIS)
  except NameError:
    return x


def global_mean(x):
  """The mean over devices of per-device values `x` (e.g. a shard's mean): with equal shards,
  the global batch's mean. Its transpose hands every device the cotangent of its own
  shard, so gradients through it are those of the global statistic."""
  return _over_axis(lax.pmean, x)


def global_sum(x):
  """The sum over devices of per-device values (e.g. counts)."""
  return _over_axis(lax.psum, x)


def global_gather(x):
  """The whole global batch of a per-device array (B_local, ...) -> (B, ...), in the global
  batch's row order, on every device."""
  return _over_axis(lambda v, axis: lax.all_gather(v, axis, tiled=True), x)


def local_part(x):
  """This device's rows of a global-batch array (B, ...) -> (B / devices, ...), the inverse
  of `global_gather` (in the global batch's row order); the whole array where the axis is
  not bound."""
  try:
    n, i = lax.axis_size(AXIS), lax.axis_index(AXIS)
  except NameError:
    return x
  local = x.shape[0] // n
  return lax.dynamic_slice_in_dim(x, i * local, local)


# ---------------------------------------------------------------- sharding


def shard_batch(mesh: Mesh, batch: dict, stacked: bool = False) -> dict:
  """This process's rows of the global batch as arrays sharded over the mesh's batch axis
  (`stacked`: batches of population members, (members, rows, ...), sharded on the rows)."""
  sharding = NamedSharding(mesh, P(None, AXIS) if stacked else P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(mesh: Mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def local_rows(global_batch: int):
  """Inside the step: this device's rows of the global batch (int32 (B / devices,))."""
  n = lax.axis_size(AXIS)
  local = global_batch // n
  return lax.axis_index(AXIS) * local + jnp.arange(local, dtype=jnp.int32)


# ---------------------------------------------------------------- dispatch


# How far the host may run ahead of the devices. XLA:CPU runs each device's part of a
# program on a small pool of threads shared by all devices; a part that reaches a
# collective holds its thread until every device's part has arrived, and a launch past a
# device's limit of programs in flight holds one too. With dozens of programs queued
# (evaluation batches dispatched without waiting) every thread can end up held while the
# part that a collective waits for has none, and XLA aborts the process at its rendezvous
# timeout (docs/design.md). Train steps each take the previous step's state, so a few may
# be in flight; programs that do not depend on each other (evaluation batches, the members
# of a "loop" population) must not overlap where they hold collectives, since their parts
# could then wait on each other.
CHAINED_IN_FLIGHT = 2


class Window:
  """`add(outputs)` after each dispatch: once more than `depth` programs' outputs are
  pending, waits for the oldest. Depth 0 waits for each program before the next."""

  def __init__(self, depth: int):
    self.depth, self.pending = depth, []

  def add(self, outputs):
    self.pending.append(outputs)
    while len(self.pending) > self.depth:
      jax.block_until_ready(self.pending.pop(0))
    return outputs


# ---------------------------------------------------------------- models


@functools.partial(jax.jit, static_argnums=0, static_argnames="method")
def apply(model, variables, *args, method):
  """`model.apply(variables, *args, method=method)`, jitted once per (model, method, shapes).

  Modules are hashable and equal by their fields, so every evaluation pass, picture and
  population member of one architecture shares one compilation, where a
  `jax.jit(lambda ...)` made per call compiles again each time (dozens of times per
  run). The variables are arguments, not constants baked into the program.
  """
  return model.apply(variables, *args, method=method)


def apply_in_chunks(model, variables, source, *, method, indices=None, chunk: int = 1000,
                    key: str = "image"):
  """`method` of the model applied to examples `indices` (default: all) of a source, `chunk`
  at a time, on the host: a tree of numpy arrays with the examples concatenated on the
  first axis. The one way to encode a split (active units, probes, code maps)."""
  indices = np.arange(len(source)) if indices is None else np.asarray(indices)
  parts = [jax.device_get(apply(model, variables, source.get(indices[i:i + chunk])[key],
                                method=method))
           for i in range(0, len(indices), chunk)]
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


@functools.partial(jax.jit, static_argnums=0)
def init(model, *args):
  """`model.init(*args)`, jitted once per (model, shapes), as `apply` is: eager init runs op by
  op (far slower for the larger models), and every population member shares the compile."""
  return model.init(*args)


# ---------------------------------------------------------------- the evaluation step


def make_eval_step(eval_fn, model, mesh: Mesh, binarize_mode: str, stats_fn=None):
  """Returns jitted fn(variables, seed, batch, hparams) -> (masked sums of the per-example
  metrics, count, summed set statistics).

  `batch`: sharded, with "index" (position in the evaluation set) and "mask" (0 for the
  padding past its end). `stats_fn(model, variables, batch, keys,
  hparams, mask)` -> {name: array} of sums over the masked examples (a family's set-level
  statistics, e.g. code counts); they are summed over devices here and over batches by the
  caller.
  """

  def per_device(variables, seed, batch, hparams):
    bin_keys, model_keys = split_keys(example_keys(seed, EVAL_STREAM, batch["index"]))
    batch = model_input(batch, binarize_mode, bin_keys)
    per_example = eval_fn(model, variables, batch, model_keys, hparams)
    mask = batch["mask"]
    sums = {k: lax.psum(jnp.sum(v * mask), AXIS) for k, v in per_example.items()}
    stats = {} if stats_fn is None else stats_fn(model, variables, batch, model_keys, hparams,
                                                 mask)
    return sums, lax.psum(mask.sum(), AXIS), lax.psum(stats, AXIS)

  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P()),
                       out_specs=(P(), P(), P()))
  return jax.jit(step)
