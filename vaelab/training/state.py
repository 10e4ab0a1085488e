"""The training state: everything a checkpoint must hold to resume bit-for-bit."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  # Non-parameter variable collections updated by the step (e.g. EMA codebooks).
  model_state: Any
  # The run's seed as an array: randomness is fold_in(key(seed), step, example index), and a
  # traced seed lets a population of seeds share one compiled step.
  seed: jax.Array
  # Updates skipped because the loss or gradient norm was not finite.
  skipped_steps: jax.Array

  @classmethod
  def create(cls, variables, tx, seed: int):
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               model_state=model_state, seed=jnp.asarray(seed, jnp.uint32),
               skipped_steps=jnp.zeros((), jnp.int32))

  def variables(self):
    return {"params": self.params, **self.model_state}
