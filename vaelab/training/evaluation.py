"""The final evaluation of a run (the end of --mode=train), and the two other modes:
--mode=eval (`evaluate_checkpoint`) and --mode=sample (`sample_checkpoint`)."""
from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from vaelab.errors import ConfigError
from vaelab.evaluate.evaluator import Evaluator
from vaelab.files import write_json
from vaelab.training.experiment import Experiment, build
from vaelab.training.workdir import restore_latest


def final_evaluation(exp: Experiment, state, evaluator: Evaluator, workdir: str | None,
                     disentanglement: dict | None = None, shared_s: float | None = None):
  """The final evaluation of a run: the family's metrics over the evaluation split (final
  ones included), analyses, baselines, probe and disentanglement (`disentanglement`: the
  scores already computed with a population's other members, in `shared_s` seconds for
  all of them); with a workdir, also results.json and the pictures."""
  timings, t = {}, time.perf_counter()

  def lap(name):
    nonlocal t
    now = time.perf_counter()
    timings[name], t = now - t, now

  results = evaluator(state, exp.hparams, final=True)
  lap("metrics")
  if exp.family.final_analyses is not None:
    results.update(exp.family.final_analyses(exp.config, exp.model,
                                             jax.device_get(state.variables()),
                                             evaluator.model_source(exp.train_source),
                                             evaluator.model_source(exp.eval_source)))
  lap("analyses")
  if exp.family.final_baselines is not None:
    results.update(exp.family.final_baselines(exp.config, exp.train_source, exp.eval_source))
  lap("baselines")
  results.update(evaluator.probe(state, exp.train_source))
  lap("probe")
  results.update(evaluator.disentanglement(state) if disentanglement is None
                 else disentanglement)
  lap("disentanglement")
  if disentanglement is not None and shared_s is not None:
    timings["disentanglement (the population's, shared)"] = shared_s
  if workdir is not None and jax.process_index() == 0:
    write_json(os.path.join(workdir, "results.json"), results)
    evaluator.save_pictures(state, workdir, results)
  lap("pictures")
  logging.info("Final evaluation (%s): %s",
               ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), results)
  return results


def evaluate_checkpoint(config, workdir: str) -> dict[str, float]:
  """`--mode=eval`: recomputes results.json and the pictures from the latest checkpoint."""
  exp = build(config)
  state = restore_latest(exp, workdir)
  return final_evaluation(exp, state, exp.evaluator(), workdir)


def sample_checkpoint(config, workdir: str, num: int = 64) -> str:
  """`--mode=sample`: a grid of samples from the latest checkpoint's prior, timed."""
  from vaelab.evaluate import pictures
  exp = build(config)
  if exp.family.sample is None:
    raise ConfigError(f"model.name={config.model.name!r} has no prior to sample from")
  state = jax.device_get(restore_latest(exp, workdir))
  key = jax.random.fold_in(jax.random.key(int(config.seed)), 2**31 - 2)
  t = time.perf_counter()
  images = np.asarray(exp.family.sample(exp.model, state.variables(), key, num, config=config))
  first = time.perf_counter() - t
  # Again, compiled: the time a sampler takes, apart from its compilation.
  t = time.perf_counter()
  np.asarray(exp.family.sample(exp.model, state.variables(), key, num, config=config))
  took = time.perf_counter() - t
  logging.info("Sampled %d images in %.3f s (%.2f ms per image; the first call, with "
               "compilation, %.1f s)", num, took, 1e3 * took / num, first)
  path = os.path.join(workdir, "samples.png")
  if jax.process_index() == 0:  # every process drew the same samples; one writes them
    pictures.save_grid(images, path)
  return path

