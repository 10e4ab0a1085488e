"""The one SPMD train step, shared by every family and machine.

Written as per-device code over a shard of the global batch and mapped over a 1-D mesh with
`jax.shard_map` under `jax.jit`: gradients and metrics are averaged with
`lax.pmean(..., "batch")`. On 8 devices or a pod the same code runs unchanged. On a
1-device mesh the step leaves the gradient all-reduce out: XLA:CPU still executes it there,
at a cost that grows with the gradients' size (docs/design.md).

A family may train further parameter groups beside the model (FactorVAE's discriminator;
`Family.groups`): each with its own loss, its own gradient averaged over the global batch,
its own optimizer, learning rate and metrics, in the same step.

Input: a sharded global batch, made on the host (prefetched in a thread) or on the devices
by a jitted gather from data placed there once (data/pipeline.py); both paths feed this
same executable the same arrays, so their runs are bitwise equal.

Metrics leave the step packed into one float32 vector (`Metrics`): the loop keeps one small
device array per step until a log point, instead of one per metric.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from vaelab import spmd
from vaelab.training import optimizer
from vaelab.training import state as state_lib

AXIS = spmd.AXIS
POPULATION_BATCHES = ("shared", "stacked")
# How members share the step. vmap batches their operations in one sharded step: what an
# accelerator that one small run leaves idle needs; the batched kernels round differently,
# so a member drifts from its run alone by float rounding, which training amplifies.
# loop calls the one-run step (the same executable a run alone uses) on each member in turn,
# a chunk of steps at a time (TrainStep.steps): bitwise the runs alone, one compilation,
# shared batches. On a 2-core CPU a run's step already keeps both cores busy, and there
# vmapped members cost more per member than runs alone (the caches hold one member's Adam
# moments, not eight; docs/design.md), so loop is the CPU's default
# (population.default_impl).
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

  def __init__(self, fn, names: list, packed: bool = True, traceable=None, members=None):
    self._fn, self._names, self._packed = fn, names, packed
    self._traceable = traceable  # the sharded step before jit, for `with_input`
    # A "loop" population's step: (the one-run TrainStep, shared batch, with collectives).
    self._members = members

  def __call__(self, state, batch, hparams):
    state, out = self._fn(state, batch, hparams)
    if not self._packed:  # a "loop" population's tuple of members' Metrics
      return state, out
    return state, Metrics(out, tuple(self._names[0]))

  def steps(self, state, batches: list, hparams):
    """Steps in a row, one per batch: (state, [each step's metrics]). A "loop" population
    takes them member by member, each member all of its steps before the next: one
    member's parameters and moments stay in the caches for those steps (what stepping
    every member at each step cost: docs/design.md). Members do not depend on each
    other, so every member's run is the same sequence of programs either way."""
    if self._members is None:
      out = []
      for batch in batches:
        state, metrics = self(state, batch, hparams)
        out.append(metrics)
      return state, out
    return _member_steps(*self._members, state, batches, hparams)

  def lower(self, state, batch, hparams):
    """The jitted step lowered for these arguments (`.compile()`, `.cost_analysis()`)."""
    return self._fn.lower(state, batch, hparams)

  def with_input(self, make_batch) -> "TrainStep":
    """This step with `make_batch(*args) -> batch` compiled in front of it, as one program
    step(state, args, hparams): the device feed's gather and the step in one dispatch
    instead of two (a dispatch costs host time that a small model's step does not hide;
    docs/design.md). The batch is the same array either way, so the run is too
    (tests/test_pipeline.py). A "loop" population's step then steps each member with the
    one-run step's own `with_input`: the program a run alone executes."""
    if self._members is not None:
      one, shared, collective = self._members
      return _loop_step(one.with_input(make_batch), shared, collective)
    inner = self._traceable

    def fused(state, args, hparams):
      return inner(state, make_batch(*args), hparams)

    return TrainStep(jax.jit(fused, donate_argnums=0), self._names)


def make_train_step(loss_fn, model, tx, mesh: Mesh, binarize_mode: str,
                    skip_nonfinite: bool = False, population: str | None = None,
                    population_impl: str = "vmap", group_txs: dict | None = None):
  """Returns the jitted `TrainStep` step(state, batch, hparams) -> (state, metrics).

  population: None for one run; otherwise "shared" when every member reads the same batch
  (the same seed orders the data), "stacked" when each reads its own. `population_impl`
  (one of POPULATION_IMPLS): under "vmap" the state, the hyperparameters and the metrics
  carry a leading member axis, and the per-device step is vmapped over it inside the same
  shard_map (one compilation for all members); a stacked batch is (members, global
  batch, ...), sharded on its second axis. Under "loop" they are tuples of one run's state,
  hyperparameters and metrics per member (and of batches, when stacked), and the one-run
  step is applied to each member in turn.

  group_txs: {group: optax optimizer} of the family's further parameter groups
  (`Family.groups`): the loss then returns {"model": loss, group: loss, ...}, and each part
  of the parameters takes the gradient of its own loss, averaged over the global batch, and
  its own optimizer's update.
  """
  group_txs = group_txs or {}

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
    if group_txs:
      losses, grads, (metrics, model_state) = _group_gradients(objective, local_params,
                                                               group_txs)
    else:
      (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
          local_params)
      losses, grads = {MODEL: loss}, {MODEL: grads}
    grads = mean(grads)
    metrics = mean({**metrics, **{_metric(g, "loss"): v for g, v in losses.items()}})
    norms = {g: _global_norm(v) for g, v in grads.items()}
    finite = jnp.all(jnp.stack([jnp.isfinite(metrics[_metric(g, "loss")]) & jnp.isfinite(n)
                                for g, n in norms.items()]))
    own, parts = state_lib.split_groups(state.params, group_txs)
    updates, opt_state = tx.update(grads[MODEL], state.opt_state,
                                   own if group_txs else state.params)
    params = optax.apply_updates(own if group_txs else state.params, updates)
    group_opt_state = {}
    if group_txs:
      new_parts = {}
      for g, gtx in group_txs.items():
        updates, group_opt_state[g] = gtx.update(grads[g], state.group_opt_state[g], parts[g])
        new_parts[g] = optax.apply_updates(parts[g], updates)
      params = state_lib.join_groups(state.params, params, new_parts)
    if skip_nonfinite:
      # A non-finite step leaves the state as it was. The select costs an extra pass over
      # parameters and optimizer moments, so it is paid only under nonfinite='skip'; under
      # 'stop' the loop checks `finite` before every checkpoint and stops, so a NaN state
      # is never written either way.
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      params, opt_state, model_state, group_opt_state = keep(
          (params, opt_state, model_state, group_opt_state),
          (state.params, state.opt_state, state.model_state, state.group_opt_state))
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state,
        group_opt_state=group_opt_state,
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    metrics.update({_metric(g, "grad_norm"): n for g, n in norms.items()}, finite=finite,
                   learning_rate=optimizer.current_learning_rate(opt_state))
    metrics.update({_metric(g, "learning_rate"): optimizer.current_learning_rate(o)
                    for g, o in group_opt_state.items()})
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
      one = make_train_step(loss_fn, model, tx, mesh, binarize_mode, skip_nonfinite,
                            group_txs=group_txs)
      return _loop_step(one, shared, not single)
    per_device = jax.vmap(per_device, in_axes=(0, None if shared else 0, 0))
    batch_spec = P(AXIS) if shared else P(None, AXIS)
  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), batch_spec, P()),
                       out_specs=(P(), P()), check_vma=not single)
  return TrainStep(jax.jit(step, donate_argnums=0), names, traceable=step)


# The key of the model's own loss and gradient among a family's parameter groups.
MODEL = "model"


def _metric(group: str, name: str) -> str:
  """The model's metrics keep their plain names (loss, grad_norm); a group's are prefixed
  (discriminator_loss, logged as train/discriminator_loss)."""
  return name if group == MODEL else f"{group}_{name}"


def _group_gradients(objective, params, group_txs: dict):
  """({group: loss}, {group: gradient of its own loss w.r.t. its own parameters}, aux) of
  an objective returning {"model": loss, group: loss, ...}: one forward pass, and one
  backward pass per group, each reaching only its own parameters (XLA drops the rest)."""
  losses, vjp, aux = jax.vjp(objective, params, has_aux=True)
  if set(losses) != {MODEL, *group_txs}:
    raise ValueError(f"the loss returned {sorted(losses)}; a family with parameter groups "
                     f"{sorted(group_txs)} returns one loss for each and {MODEL!r}")
  grads = {}
  for g in losses:
    (full,) = vjp({k: jnp.ones_like(v) if k == g else jnp.zeros_like(v)
                   for k, v in losses.items()})
    own, parts = state_lib.split_groups(full, group_txs)
    grads[g] = own if g == MODEL else parts[g]
  return losses, grads, aux


def _global_norm(tree):
  """sqrt of the sum of squares of every leaf, in two sums: each leaf's squares summed in
  groups of (at most) 32 consecutive elements, then those partial sums. XLA:CPU rewrites a
  sum over more than 32 elements into a tree of reduce-windows over a materialized input
  (its `TreeReductionRewriter`): summed at once, or row by row, the square of the whole
  gradient is written out and read back. Groups of 32 stay one fused read of the gradient;
  the barrier keeps XLA from merging the two sums back into one (docs/design.md)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.float32(0)
  partial = [jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(-1, _group(x.size)), axis=-1)
             for x in leaves]
  partial = lax.optimization_barrier(partial)
  return jnp.sqrt(sum(jnp.sum(p) for p in partial))


def _group(size: int) -> int:
  return next(g for g in (32, 16, 8, 4, 2, 1) if size % g == 0)


def _loop_step(one: TrainStep, shared: bool, collective: bool) -> TrainStep:
  return TrainStep(functools.partial(_member_loop, one, shared, collective), one._names,
                   packed=False, members=(one, shared, collective))


def _member_loop(step, shared: bool, collective: bool, states: tuple, batch, hparams: tuple):
  """A "loop" population's step: `step` (one run's) on each member; tuples in and out."""
  states, metrics = _member_steps(step, shared, collective, states, [batch], hparams)
  return states, metrics[0]


def _member_steps(step, shared: bool, collective: bool, states: tuple, batches: list,
                  hparams: tuple):
  """Each member through all of `batches` in turn; returns the members' states and, per
  batch, the tuple of the members' metrics. Where members' steps hold collectives (several
  devices), each program waits for the one before (spmd.Window)."""
  window = spmd.Window(0 if collective else len(states))
  out_states, metrics = [], []
  for i, (s, h) in enumerate(zip(states, hparams)):
    mine = []
    for batch in batches:
      s, m = step(s, batch if shared else batch[i], h)
      mine.append(window.add(m))  # not the state: the member's next step takes (donates) it
    out_states.append(s)
    metrics.append(mine)
  return tuple(out_states), [tuple(m[t] for m in metrics) for t in range(len(batches))]
