"""The one SPMD train step, shared by every family and machine.

Written as per-device code over a shard of the global batch and mapped over a 1-D mesh with
`jax.shard_map` under `jax.jit`: gradients and metrics are averaged with
`lax.pmean(..., "batch")`. On 8 devices or a pod the same code runs unchanged. On a
1-device mesh the step leaves the gradient all-reduce out: XLA:CPU still executes it there,
at a cost that grows with the gradients' size: the runlocal beta-VAE's step (4.5M
parameters) went from 21 ms to 14 ms, against 12 ms for a hand-written jit step
(experiments/benchmark_step.py --side 64 --hidden 512,256 --latent 10 --batch_size 64).

Input: a sharded global batch, made on the host (prefetched in a thread) or on the devices
by a jitted gather from data placed there once (data/pipeline.py); both paths feed this
same executable the same arrays, so their runs are bitwise equal.

Metrics leave the step packed into one float32 vector (`Metrics`): the loop keeps one small
device array per step until a log point, instead of one per metric.
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from vaelab import spmd
from vaelab.training import optimizer

AXIS = spmd.AXIS
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


@jax.tree_util.register_pytree_node_class
class Metrics:
  """A step's metrics as one float32 vector (last axis) and the names of its entries.
  `metrics["loss"]` reads one entry (a member axis, if any, stays in front); `to_dict()`
  gives them all. A pytree, so device_get and tree maps (a population member's row) apply
  to the vector alone."""

  def __init__(self, vector, names: tuple):
    self.vector, self.names = vector, names

  def __getitem__(self, name: str):
    return self.vector[..., self.names.index(name)]

  def to_dict(self) -> dict:
    return {k: self[k] for k in self.names}

  def tree_flatten(self):
    return (self.vector,), self.names

  @classmethod
  def tree_unflatten(cls, names, children):
    return cls(children[0], names)


class TrainStep:
  """step(state, batch, hparams) -> (state, Metrics); jitted, `state` donated. The metrics
  leave the executable packed in one vector, named once the step has been traced."""

  def __init__(self, fn, names: list, packed: bool = True, traceable=None):
    self._fn, self._names, self._packed = fn, names, packed
    self._traceable = traceable  # the sharded step before jit, for `with_input`

  def __call__(self, state, batch, hparams):
    state, out = self._fn(state, batch, hparams)
    if not self._packed:  # a "loop" population's tuple of members' Metrics
      return state, out
    return state, Metrics(out, tuple(self._names[0]))

  def with_input(self, make_batch) -> "TrainStep":
    """This step with `make_batch(*args) -> batch` compiled in front of it, as one program
    step(state, args, hparams): the device feed's gather and the step in one dispatch
    instead of two (on the 2-core CPU a dispatch costs ~0.1 ms, an eighth of the small AE's
    step). The batch is the same array either way, so the run is too
    (tests/test_pipeline.py)."""
    inner = self._traceable

    def fused(state, args, hparams):
      return inner(state, make_batch(*args), hparams)

    return TrainStep(jax.jit(fused, donate_argnums=0), self._names)


def make_train_step(loss_fn, model, tx, mesh: Mesh, binarize_mode: str,
                    skip_nonfinite: bool = False, population: str | None = None,
                    population_impl: str = "vmap"):
  """Returns the jitted `TrainStep` step(state, batch, hparams) -> (state, metrics).

  population: None for one run; otherwise "shared" when every member reads the same batch
  (the same seed orders the data), "stacked" when each reads its own. `population_impl`
  (one of POPULATION_IMPLS): under "vmap" the state, the hyperparameters and the metrics
  carry a leading member axis, and the per-device step is vmapped over it inside the same
  shard_map (one compilation for all members); a stacked batch is (members, global
  batch, ...), sharded on its second axis. Under "loop" they are tuples of one run's state,
  hyperparameters and metrics per member (and of batches, when stacked), and the one-run
  step is applied to each member in turn.
  """

  # One device: no collective (see the module docstring) and so no varying/invariant
  # bookkeeping either; the families' own small collectives (spmd.global_mean, the
  # quantizer's psum) stay, bound to the same axis.
  single = mesh.devices.size == 1
  mean = (lambda x: x) if single else (lambda x: lax.pmean(x, AXIS))
  names: list = []

  def per_device(state, batch, hparams):
    bin_keys, model_keys = spmd.split_keys(spmd.example_keys(state.seed, state.step,
                                                             batch["index"]))
    batch = spmd.model_input(batch, binarize_mode, bin_keys)
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
    grad_norm = _global_norm(grads)
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
    keys = sorted(metrics)
    if not names:
      names.append(keys)
    return new_state, jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in keys])

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
      return TrainStep(functools.partial(_member_loop, one, shared, not single), one._names,
                       packed=False)
    per_device = jax.vmap(per_device, in_axes=(0, None if shared else 0, 0))
    batch_spec = P(AXIS) if shared else P(None, AXIS)
  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), batch_spec, P()),
                       out_specs=(P(), P()), check_vma=not single)
  return TrainStep(jax.jit(step, donate_argnums=0), names, traceable=step)


def _global_norm(tree):
  """sqrt of the sum of squares of every leaf: each leaf summed along its last axis (a row
  reduction fused with the square), then over the rows. The barrier keeps XLA from merging
  the two sums into one reduce-to-scalar, which XLA:CPU writes as a square of the whole
  gradient and a tree of reduce-windows over it (`optax.tree.norm`: 1.6 ms of the default
  VAE's 11.5 ms step on the 2-core CPU)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.float32(0)
  rows = [jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(-1, x.shape[-1] if x.ndim else 1),
                  axis=-1) for x in leaves]
  rows = lax.optimization_barrier(rows)
  return jnp.sqrt(sum(jnp.sum(r) for r in rows))


def _member_loop(step, shared: bool, collective: bool, states: tuple, batch, hparams: tuple):
  """A "loop" population's step: `step` (one run's) on each member; tuples in and out.
  Members' steps do not depend on each other: where they hold collectives (several
  devices), each waits for the one before (spmd.Window)."""
  batches = itertools.repeat(batch) if shared else batch
  window = spmd.Window(0 if collective else len(states))
  out = [window.add(step(s, b, h)) for s, b, h in zip(states, batches, hparams)]
  return tuple(s for s, _ in out), tuple(m for _, m in out)
