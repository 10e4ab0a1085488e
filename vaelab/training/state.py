"""The training state: everything a checkpoint must hold to resume bit-for-bit."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


def split_groups(params: dict, groups) -> tuple[dict, dict]:
  """(the model's parameters, {group: its parameters}) of a parameter tree whose top-level
  keys `groups` belong to further parameter groups (models/base.py, `Family.groups`)."""
  return ({k: v for k, v in params.items() if k not in groups},
          {g: params[g] for g in groups})


def join_groups(like: dict, model: dict, groups: dict) -> dict:
  """The parameter tree `like` with the model's and the groups' parts replaced (its key
  order kept)."""
  return {k: groups[k] if k in groups else model[k] for k in like}


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  # Every trainable parameter of the model, the further groups' (a discriminator) included.
  params: Any
  # The model optimizer's state, over the parameters that belong to no further group.
  opt_state: Any
  # Non-parameter variable collections updated by the step (e.g. EMA codebooks).
  model_state: Any
  # The run's seed as an array: randomness is fold_in(key(seed), step, example index), and a
  # traced seed lets a population of seeds share one compiled step.
  seed: jax.Array
  # Updates skipped because the loss or gradient norm was not finite.
  skipped_steps: jax.Array
  # {group: its optimizer's state} for the family's further parameter groups ({} for most).
  group_opt_state: Any = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, variables, tx, seed: int, group_txs: dict | None = None):
    group_txs = group_txs or {}
    params = variables["params"]
    own, groups = split_groups(params, group_txs)
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(own if group_txs else params),
               model_state=model_state, seed=jnp.asarray(seed, jnp.uint32),
               skipped_steps=jnp.zeros((), jnp.int32),
               group_opt_state={g: group_txs[g].init(groups[g]) for g in group_txs})

  def variables(self):
    return {"params": self.params, **self.model_state}
