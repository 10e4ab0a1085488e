"""The one SPMD train step and its evaluation twin, shared by every family and machine.

Both are written as per-device code over a shard of the global batch and mapped over a
1-D mesh with `jax.shard_map` under `jax.jit`: gradients and metrics are averaged with
`lax.pmean(..., "batch")`. On 8 devices or a pod the same code runs unchanged. On a
1-device mesh the train step leaves the gradient all-reduce out: XLA:CPU still executes
it there, at a cost that grows with the gradients' size: the runlocal beta-VAE's step (4.5M
parameters) went from 21 ms to 14 ms, against 12 ms for a hand-written jit step
(experiments/benchmark_step.py --side 64 --hidden 512,256 --latent 10 --batch_size 64).
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vaelab.data.binarize import binarize
from vaelab.train import optimizer

AXIS = "batch"
POPULATION_BATCHES = ("shared", "stacked")
# How members share the step. vmap batches their operations in one sharded step: what an
# accelerator that one small run leaves idle needs; the batched kernels round differently,
# so a member drifts from its run alone by float rounding, which training amplifies.
# loop calls the one-run step (the same executable a run alone uses) on each member in turn:
# bitwise the runs alone, one compilation, shared batches. On a 2-core CPU a run's step
# already keeps both cores busy, and there vmapped members cost 1.5-2x more per member than
# runs alone (8-member stacked vmap vs loop, runlocal beta-VAE: 23 vs 16 ms per member-step;
# default model 13 vs 8 ms; the caches hold one member's Adam moments, not eight), so loop
# is the CPU's default (population.default_impl).
POPULATION_IMPLS = ("vmap", "loop")
# Evaluation keys live apart from every training step (steps are < 2**31).
_EVAL_STREAM = 2**32 - 1


def make_mesh(devices=None) -> Mesh:
  # Mesh(...) gives Auto axes; jax.make_mesh's Explicit axes reject shard_map over an
  # unsharded (replicated) state.
  # Ordered by process: process p's devices then hold rows [p, p+1) * B / P of the global
  # batch, the rows its Batcher loads (data/pipeline.py).
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (AXIS,))


def example_keys(seed, stream, index):
  """One key per example from (seed, step or eval stream, example index): device-count free."""
  base = jax.random.fold_in(jax.random.key(seed), stream)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def _split(keys):
  """Separate streams for binarization and for the model's own sampling."""
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
  return fold(keys, 0), fold(keys, 1)


def _binarized(batch, mode: str, keys):
  """The batch with its "image" binarized; the image before binarization stays available as
  "image_raw" (a decoder mean estimates intensities). Batches without images (code maps
  of a prior) pass through."""
  if "image" not in batch:
    return batch
  return {**batch, "image": binarize(mode, batch["image"], keys), "image_raw": batch["image"]}


def make_train_step(loss_fn, model, tx, mesh: Mesh, binarize_mode: str,
                    skip_nonfinite: bool = False, population: str | None = None,
                    population_impl: str = "vmap"):
  """Returns jitted step(state, batch, hparams) -> (state, metrics); `state` is donated.

  population: None for one run; otherwise "shared" when every member reads the same batch
  (the same seed orders the data), "stacked" when each reads its own. `population_impl`
  (one of POPULATION_IMPLS): under "vmap" the state, the hyperparameters and the metrics
  carry a leading member axis, and the per-device step is vmapped over it inside the same
  shard_map (one compilation for all members); a stacked batch is (members, global batch,
  ...), sharded on its second axis. Under "loop" they are tuples of one run's state,
  hyperparameters and metrics per member (and of batches, when stacked), and the one-run
  step is applied to each member in turn.
  """

  # One device: no collective (see the module docstring) and so no varying/invariant
  # bookkeeping either; the families' own small collectives (a sparsity pmean, the
  # quantizer's psum) stay, bound to the same axis.
  single = mesh.devices.size == 1
  mean = (lambda x: x) if single else (lambda x: lax.pmean(x, AXIS))

  def per_device(state, batch, hparams):
    bin_keys, model_keys = _split(example_keys(state.seed, state.step, batch["index"]))
    batch = _binarized(batch, binarize_mode, bin_keys)
    # Schedules inside an objective (k-sparse's k, a capacity C) read the step from here.
    hparams = {**hparams, "step": state.step}

    def objective(params):
      return loss_fn(model, params, state.model_state, batch, model_keys, hparams)

    # The replicated params are cast to per-device ("varying") values so that each device
    # takes the gradient of its own shard's loss; differentiating the replicated value
    # directly would already sum over devices and the pmean below would not average.
    local_params = state.params if single else lax.pcast(state.params, AXIS, to="varying")
    (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        local_params)
    grads = mean(grads)
    metrics = mean({**metrics, "loss": loss})
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
      # A non-finite step leaves the state as it was. The select costs an extra pass over
      # parameters and optimizer moments (~25% of a small MLP step on CPU), so it is paid
      # only under nonfinite='skip'; under 'stop' the loop checks `finite` before every
      # checkpoint and stops, so a NaN state is never written either way.
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      params, opt_state, model_state = keep((params, opt_state, model_state),
                                            (state.params, state.opt_state, state.model_state))
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state,
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    metrics.update(grad_norm=grad_norm, finite=finite,
                   learning_rate=optimizer.current_learning_rate(opt_state))
    return new_state, metrics

  batch_spec = P(AXIS)
  if population is not None:
    if population not in POPULATION_BATCHES:
      raise ValueError(f"population={population!r}: expected None or one of "
                       f"{POPULATION_BATCHES}")
    shared = population == "shared"
    if population_impl not in POPULATION_IMPLS:
      raise ValueError(f"population_impl={population_impl!r}: expected one of "
                       f"{POPULATION_IMPLS}")
    if population_impl == "loop":
      one = make_train_step(loss_fn, model, tx, mesh, binarize_mode, skip_nonfinite)
      return functools.partial(_member_loop, one, shared)
    per_device = jax.vmap(per_device, in_axes=(0, None if shared else 0, 0))
    batch_spec = P(AXIS) if shared else P(None, AXIS)
  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), batch_spec, P()),
                       out_specs=(P(), P()), check_vma=not single)
  return jax.jit(step, donate_argnums=0)


def _member_loop(step, shared: bool, states: tuple, batch, hparams: tuple):
  """A "loop" population's step: `step` (one run's) on each member; tuples in and out."""
  batches = itertools.repeat(batch) if shared else batch
  out = [step(s, b, h) for s, b, h in zip(states, batches, hparams)]
  return tuple(s for s, _ in out), tuple(m for _, m in out)


def make_eval_step(eval_fn, model, mesh: Mesh, binarize_mode: str):
  """Returns jitted fn(variables, seed, batch, hparams) -> (masked sums of metrics, count)."""

  def per_device(variables, seed, batch, hparams):
    bin_keys, model_keys = _split(example_keys(seed, _EVAL_STREAM, batch["index"]))
    batch = _binarized(batch, binarize_mode, bin_keys)
    per_example = eval_fn(model, variables, batch, model_keys, hparams)
    mask = batch["mask"]
    sums = {k: lax.psum(jnp.sum(v * mask), AXIS) for k, v in per_example.items()}
    return sums, lax.psum(mask.sum(), AXIS)

  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P()),
                       out_specs=(P(), P()))
  return jax.jit(step)


def shard_batch(mesh: Mesh, batch: dict, stacked: bool = False) -> dict:
  """This process's rows of the global batch as arrays sharded over the mesh's batch axis
  (`stacked`: batches of population members, (members, rows, ...), sharded on the rows)."""
  sharding = NamedSharding(mesh, P(None, AXIS) if stacked else P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(mesh: Mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, P()))
