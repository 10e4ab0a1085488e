"""Rollout pictures of a sequence model (TD-VAE): what it predicts after a context.

Frames (moving digits), `rollouts.png`: per sequence three rows, the last context frames
followed by the true future; then, under the future, the jumpy predictions (one jump of J from the
context's belief, J = 1..max(eval.jumps)); then the iterated rollout (repeated jumps of
`eval.rollout_step`). Vectors (the oscillator), `rollouts.png`: per sequence and coordinate,
the observations, and the jumpy and iterated predictions drawn over the true future.
Every prediction is the decoder mean of one sampled rollout, never an average of many.

`save_rollout_pictures` has the signature of a family's `pictures` hook; the model needs
`rollout(context, keys, jumps, step) -> (jumpy, iterated)`.
"""
from __future__ import annotations

import os

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vaelab.evaluate import pictures  # noqa: E402

# Keys of the pictures' rollouts: apart from training steps and the evaluation stream.
_PICTURE_STREAM = 2**31 - 3
MAX_PLOTS = 4  # sequences in the oscillator figure
MAX_CONTEXT_FRAMES = 6  # context frames drawn before the future ones


def rollouts(model, variables, x, context: int, jumps: tuple, step: int, seed: int):
  """(jumpy, iterated) predictions after the first `context` steps of each sequence in x."""
  base = jax.random.fold_in(jax.random.key(seed), _PICTURE_STREAM)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(len(x)))
  fn = jax.jit(lambda v, c, k: model.apply(v, c, k, jumps, step, method="rollout"))
  jumpy, iterated = fn(variables, np.asarray(x[:, :context]), keys)
  return np.asarray(jumpy), np.asarray(iterated)


def save_rollout_pictures(config, model, variables, workdir, eval_source) -> list[str]:
  n = min(int(config.eval.num_pictures), len(eval_source))
  if n == 0:
    return []
  context, step = int(config.eval.context), int(config.eval.rollout_step)
  horizon = max(int(j) for j in config.eval.jumps)
  x = eval_source.get(np.linspace(0, len(eval_source) - 1, n).astype(int))["image"]
  jumpy, iterated = rollouts(model, variables, x, context, tuple(range(1, horizon + 1)), step,
                             int(config.seed))
  path = os.path.join(workdir, "rollouts.png")
  if x.ndim == 5:
    return [save_frame_rollouts(x, jumpy, iterated, context, step, path)]
  return [save_trajectory_rollouts(x, jumpy, iterated, context, step, path)]


def save_frame_rollouts(x, jumpy, iterated, context: int, step: int, path: str) -> str:
  """Rows per sequence: the last context frames (at most MAX_CONTEXT_FRAMES) + the true
  future | blanks + jumpy predictions | blanks + iterated predictions."""
  n, horizon = jumpy.shape[:2]
  shown = min(context, MAX_CONTEXT_FRAMES)
  blank = np.ones((shown, *x.shape[2:]), np.float32)
  rows = []
  for i in range(n):
    rows.append(x[i, context - shown:context + horizon])
    rows.append(np.concatenate([blank, jumpy[i]]))
    it = np.ones((horizon, *x.shape[2:]), np.float32)
    for k in range(iterated.shape[1]):
      it[(k + 1) * step - 1] = iterated[i, k]
    rows.append(np.concatenate([blank, it]))
  return pictures.save_grid(np.concatenate(rows), path, ncols=shown + horizon)


def save_trajectory_rollouts(x, jumpy, iterated, context: int, step: int, path: str) -> str:
  """Per sequence and coordinate: observations, with predictions over the true future."""
  n, horizon = min(len(x), MAX_PLOTS), jumpy.shape[1]
  dims = x.shape[-1]
  fig, axes = plt.subplots(n, dims, figsize=(5 * dims, 2.2 * n), squeeze=False)
  t = np.arange(context + horizon)
  future = context - 1 + np.arange(1, horizon + 1)
  iter_t = context - 1 + step * np.arange(1, iterated.shape[1] + 1)
  for i in range(n):
    for d in range(dims):
      ax = axes[i, d]
      ax.plot(t, x[i, :context + horizon, d], color="0.6", lw=1, label="observed")
      ax.axvline(context - 0.5, color="0.3", ls=":", lw=1)
      # Each horizon is its own sample from the context's belief: points, not a path.
      ax.plot(future, jumpy[i, :, d], ".", color="C0", ms=3, label="jumpy (one jump of J)")
      if iterated.shape[1]:
        ax.plot(iter_t, iterated[i, :, d], "o-", color="C3", ms=3, lw=0.8,
                label=f"iterated (jumps of {step})")
      if i == 0:
        ax.set_title(f"coordinate {d}")
  axes[0, 0].legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path
