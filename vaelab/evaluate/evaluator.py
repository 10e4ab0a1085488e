"""Evaluation over a whole split with the sharded eval step, plus the pictures of a run."""
from __future__ import annotations

import os

import jax
import numpy as np

from vaelab.data import pipeline
from vaelab.evaluate import pictures
from vaelab.train import step as step_lib


class Evaluator:

  def __init__(self, family, config, model, mesh, eval_source):
    self.family, self.config, self.model, self.mesh = family, config, model, mesh
    self.source = eval_source
    self._step = step_lib.make_eval_step(family.make_eval_metrics(config), model, mesh,
                                         config.data.binarize)

  def __call__(self, state, hparams) -> dict[str, float]:
    """Means over the evaluation split of the family's per-example metrics, as eval/<name>."""
    variables = state.variables()
    sums, count = None, 0.0
    batches = pipeline.eval_batches(self.source, self.config.eval.batch_size,
                                     jax.process_index(), jax.process_count())
    for b in batches:
      s, c = self._step(variables, state.seed, step_lib.shard_batch(self.mesh, b), hparams)
      sums = s if sums is None else jax.tree.map(lambda a, x: a + x, sums, s)
      count += c
    sums, count = jax.device_get((sums, count))
    return {f"eval/{k}": float(v) / float(count) for k, v in sums.items()}

  def save_pictures(self, state, workdir: str) -> list[str]:
    """A reconstruction grid of evaluation images and, for generative families, prior samples."""
    n = min(int(self.config.eval.num_pictures), len(self.source))
    # Spread over the split: sources are often ordered by class or factor.
    x = self.source.get(np.linspace(0, len(self.source) - 1, n).astype(int))["image"]
    variables = jax.device_get(state.variables())
    recon = self.model.apply(variables, x, method="reconstruct")
    paths = [pictures.save_reconstructions(x, np.asarray(recon),
                                           os.path.join(workdir, "reconstructions.png"))]
    if self.family.sample is not None:
      key = jax.random.fold_in(jax.random.key(int(self.config.seed)), 2**31 - 1)
      samples = self.family.sample(self.model, variables, key, n)
      paths.append(pictures.save_grid(np.asarray(samples), os.path.join(workdir, "samples.png")))
    return paths
