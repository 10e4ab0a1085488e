"""Evaluation over a whole split with the sharded eval step, plus the pictures of a run."""
from __future__ import annotations

import copy
import functools
import os

import jax
import numpy as np

from vaelab.data import pipeline
from vaelab.evaluate import disentanglement, pictures
from vaelab.evaluate import probe as probe_lib
from vaelab.models import base
from vaelab.train import step as step_lib


def _on_one_device(tree):
  """`tree` as arrays on this process's first device: the device copy that many small
  jitted calls reuse (host arrays would be copied to the device again by every call)."""
  return jax.device_put(jax.device_get(tree), jax.local_devices()[0])


class Evaluator:

  def __init__(self, family, config, model, mesh, eval_source):
    self.family, self.config, self.model, self.mesh = family, config, model, mesh
    self.source = eval_source
    self.probe_train_size = int(config.eval.probe_train_size)
    e = config.eval
    self.disentanglement_sizes = None if not e.disentanglement else {
        "num_train": int(e.disentanglement_num_train),
        "num_eval": int(e.disentanglement_num_eval),
        "batch_size": int(e.disentanglement_batch_size),
        "num_variance_estimate": int(e.disentanglement_num_variance_estimate)}
    self._step = step_lib.make_eval_step(family.make_eval_metrics(config), model, mesh,
                                         config.data.binarize)
    self._final_step = None
    if family.make_final_metrics is not None:
      self._final_step = step_lib.make_eval_step(family.make_final_metrics(config), model, mesh,
                                                 config.data.binarize)

  def for_config(self, config) -> "Evaluator":
    """This evaluator for a population member's config (its seed, ...); the compiled eval
    steps are shared: members differ only in numbers the steps take as arguments."""
    other = copy.copy(self)
    other.config = config
    return other

  def __call__(self, state, hparams, final: bool = False) -> dict[str, float]:
    """Means over the evaluation split of the family's per-example metrics, as eval/<name>.

    `final` adds the family's costly final metrics (one pass over the split each).
    """
    out = self._means(self._step, state, hparams)
    if final and self._final_step is not None:
      out.update(self._means(self._final_step, state, hparams))
    return out

  def _means(self, step, state, hparams) -> dict[str, float]:
    variables = state.variables()
    sums, count = None, 0.0
    batches = pipeline.eval_batches(self.source, self.config.eval.batch_size,
                                     jax.process_index(), jax.process_count())
    for b in batches:
      s, c = step(variables, state.seed, step_lib.shard_batch(self.mesh, b), hparams)
      sums = s if sums is None else jax.tree.map(lambda a, x: a + x, sums, s)
      count += c
    sums, count = jax.device_get((sums, count))
    return {f"eval/{k}": float(v) / float(count) for k, v in sums.items()}

  def probe(self, state, train_source) -> dict[str, float]:
    """Linear-probe test error on the family's features and on raw pixels, where labels exist."""
    method = self.family.features
    if method is None or not (train_source.info.has_label and self.source.info.has_label):
      return {}
    n = min(len(train_source), self.probe_train_size)
    train_idx = np.sort(np.random.default_rng(0).choice(len(train_source), n, replace=False))
    variables = _on_one_device(state.variables())
    features = functools.partial(base.apply, self.model, method=method)

    def extract(source, idx):
      feats, pixels, labels = [], [], []
      for i in range(0, len(idx), 1000):
        b = source.get(idx[i:i + 1000])
        feats.append(np.asarray(features(variables, b["image"])).reshape(len(b["image"]), -1))
        pixels.append(b["image"].reshape(len(b["image"]), -1))
        labels.append(b["label"])
      return np.concatenate(feats), np.concatenate(pixels), np.concatenate(labels)

    tf, tp, tl = extract(train_source, train_idx)
    ef, ep, el = extract(self.source, np.arange(len(self.source)))
    return {"eval/probe_error": probe_lib.probe_error(tf, tl, ef, el),
            "eval/probe_error_pixels": probe_lib.probe_error(tp, tl, ep, el)}

  def disentanglement(self, state) -> dict[str, float]:
    """The four disentanglement scores of the family's features, where the evaluation data
    has ground-truth factors (observations are drawn from the whole factor grid)."""
    method = self.family.features
    if method is None or self.disentanglement_sizes is None:
      return {}
    ground_truth = disentanglement.ground_truth_from_source(self.source)
    if ground_truth is None:
      return {}
    variables = _on_one_device(state.variables())
    features = functools.partial(base.apply, self.model, method=method)
    represent = lambda x: np.asarray(features(variables, x)).reshape(len(x), -1)
    rng = np.random.default_rng(int(self.config.seed))
    return disentanglement.disentanglement_metrics(represent, ground_truth, rng,
                                                   self.disentanglement_sizes)

  def save_pictures(self, state, workdir: str) -> list[str]:
    """A reconstruction grid of evaluation images and, for generative families, prior samples."""
    n = min(int(self.config.eval.num_pictures), len(self.source))
    variables = jax.device_get(state.variables())
    paths = []
    # Spread over the split: sources are often ordered by class or factor.
    batch = self.source.get(np.linspace(0, len(self.source) - 1, n).astype(int))
    # Families whose examples are not single images (code maps, sequences) draw their own.
    if hasattr(self.model, "reconstruct") and batch.get("image", np.zeros(())).ndim == 4:
      x = batch["image"]
      recon = base.apply(self.model, variables, x, method="reconstruct")
      paths.append(pictures.save_reconstructions(x, np.asarray(recon),
                                                 os.path.join(workdir, "reconstructions.png")))
    if self.family.sample is not None:
      key = jax.random.fold_in(jax.random.key(int(self.config.seed)), 2**31 - 1)
      samples = self.family.sample(self.model, variables, key, n)
      paths.append(pictures.save_grid(np.asarray(samples), os.path.join(workdir, "samples.png")))
    if self.family.pictures is not None:
      paths += self.family.pictures(self.config, self.model, variables, workdir,
                                       self.source)
    return paths
