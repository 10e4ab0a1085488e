"""The notebook API: train a run in-process and get the model back, or load one from disk.

  import vaelab
  run = vaelab.train("configs/default.py:runlocal", overrides={"loss.beta": 4.0})
  z = run.encode(images)            # codes of images (B, H, W, C) in [0, 1]
  x = run.decode(z)                 # images in [0, 1], every family
  x = run.sample(jax.random.key(0), 16)   # where the family has a prior
  results = run.evaluate()          # the final evaluation (results.json if it has a workdir)
  same = vaelab.load(workdir)       # the run a workdir holds, at its latest checkpoint

`vaelab.train(config, workdir=None)` trains in memory (no checkpoints, no files) when
`workdir` is None; with a workdir it is the command line's run (resumes from the workdir,
checkpoints, metrics.jsonl), without the final evaluation unless `evaluate=True`.
Inputs go through the same transform as in evaluation (binarization as `data.binarize`
says; a dynamic draw keyed by each image's content, so that an image's code does not
depend on its neighbours), so `encode` sees what the model was trained on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any

import jax
import numpy as np

from vaelab import config_base, spmd
from vaelab.training import loop
from vaelab.training import evaluation
from vaelab.training import experiment as experiment_lib
from vaelab.training import workdir as workdir_lib


@dataclasses.dataclass
class Run:
  """A trained run: its config, model and state, and its metrics history."""
  config: Any
  experiment: experiment_lib.Experiment
  state: Any  # the TrainState, on the host
  history: list[dict]
  workdir: str | None = None
  # The final evaluation's results, once it has run (`train(..., evaluate=True)`, `evaluate()`).
  results: dict | None = None

  @property
  def model(self):
    return self.experiment.model

  @property
  def family(self):
    return self.experiment.family

  @property
  def variables(self) -> dict:
    return self.state.variables()

  @property
  def step(self) -> int:
    return int(self.state.step)

  def _inputs(self, x):
    x = np.asarray(x, np.float32)
    return spmd.eval_input(self.config.data.binarize, int(self.config.seed), x,
                           _content_index(x))

  def encode(self, x):
    """Codes of a batch of examples (images in [0, 1], or sequences for TD-VAE): the family's
    representation (a VAE's posterior mean, an autoencoder's code, VQ code indices, ...)."""
    fn = self.family.encode or self.family.features
    if fn is None:
      raise NotImplementedError(f"model.name={self.config.model.name!r} has no encoder")
    return jax.device_get(fn(self.model, self.variables, self._inputs(x)))

  def decode(self, z):
    """Images in [0, 1] of codes as `encode` returns them."""
    if self.family.decode is None:
      raise NotImplementedError(f"model.name={self.config.model.name!r} has no decoder")
    return np.asarray(self.family.decode(self.model, self.variables, z))

  def reconstruct(self, x):
    """The model's reconstruction of `x`, images in [0, 1]."""
    return np.asarray(spmd.apply(self.model, self.variables, self._inputs(x),
                                 method="reconstruct"))

  def sample(self, key, n: int):
    """n images from the model's prior (VAEs, the prior over VQ codes)."""
    if self.family.sample is None:
      raise NotImplementedError(f"model.name={self.config.model.name!r} has no prior to "
                                f"sample from")
    return np.asarray(self.family.sample(self.model, self.variables, key, n, config=self.config))

  def evaluate(self) -> dict[str, float]:
    """The final evaluation (the family's metrics, bounds, probes, disentanglement); with a
    workdir, also results.json and the pictures."""
    exp = self.experiment
    state = spmd.replicate(exp.mesh, self.state)
    self.results = evaluation.final_evaluation(exp, state, exp.evaluator(), self.workdir)
    return self.results


def _content_index(x: np.ndarray) -> np.ndarray:
  """An index per example from its content alone: the evaluation draw of dynamic
  binarization is keyed by it, so an image's code does not depend on where it sits in the
  array or on its neighbours."""
  return np.asarray([zlib.crc32(np.ascontiguousarray(e).tobytes()) & 0x7FFFFFFF for e in x],
                    np.int32)


def _config(config, overrides: dict | None):
  if isinstance(config, str):
    return config_base.load_config(config, overrides)
  if overrides:
    config = config.copy_and_resolve_references()
    config_base.set_overrides(config, overrides)
  return config


def train(config, workdir: str | None = None, *, overrides: dict | None = None,
          evaluate: bool = False) -> Run:
  """Trains `config` (a ConfigDict, or a path like "configs/vae_mnist.py:runlocal") with
  dotted-key `overrides`; in memory when `workdir` is None. Returns the trained Run;
  `evaluate=True` also runs the final evaluation, kept as `run.results` (`run.evaluate()`
  does it later)."""
  config = _config(config, overrides)
  exp, state, results, history = loop.train(config, workdir, evaluate=evaluate)
  return Run(config, exp, state, history, workdir, results)


def load(workdir: str) -> Run:
  """The run in `workdir` (as `python -m vaelab.main` or `train(..., workdir)` left it), at
  its latest checkpoint, with its config.json and metrics.jsonl."""
  config = config_base.read_saved(workdir)
  exp = experiment_lib.build(config)
  state = jax.device_get(workdir_lib.restore_latest(exp, workdir))
  history = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          history.append(json.loads(line))
        except ValueError:
          continue  # a line cut short by a kill
  return Run(config, exp, state, history, workdir)
