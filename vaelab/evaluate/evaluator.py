"""Evaluation over a whole split with the sharded eval step, plus the pictures of a run.

Every path that feeds the model here (the eval step, features for the probe and the
disentanglement metrics, the families' final analyses) gives it images as training did: through
`spmd.model_input` / `spmd.eval_input`, with the evaluation's fixed draw for dynamic
binarization (`model_source`).
"""
from __future__ import annotations

import copy
import functools
import os

import jax
import numpy as np

from vaelab import spmd
from vaelab.files import write_json
from vaelab.data import pipeline
from vaelab.data.base import ModelInputSource
from vaelab.evaluate import disentanglement, factor_pictures, pictures
from vaelab.evaluate import probe as probe_lib


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
    self.disentanglement_metrics = disentanglement.configured_metrics(config)
    self.dci_importance = e.dci_importance
    # Every run is scored on the same draws (disentanglement_lib evaluates every model with
    # one seed): comparisons across runs are paired, and a population draws them once.
    self.disentanglement_seed = int(e.get("disentanglement_seed", 0))
    # Periodic evaluations score the representation too, every `disentanglement_every`
    # steps, on a fraction of the final sample sizes (curves against the training step).
    self.disentanglement_every = int(e.disentanglement_every)
    self.curve_sizes = None if self.disentanglement_sizes is None else {
        k: max(int(v * float(e.disentanglement_curve_fraction)), 1) if k != "batch_size" else v
        for k, v in self.disentanglement_sizes.items()}
    self.last_scores = None  # the final evaluation's structured scores, for pictures
    self.batch_size = int(e.batch_size)
    form = pipeline.device_form(eval_source, config.data.placement)
    # The evaluation set placed on the devices once: each batch costs one dispatch.
    self._feed = None if form is None else pipeline.DeviceEvalFeed(
        form, len(eval_source), self.batch_size, mesh)
    stats, self._reduce = (None, None) if family.make_eval_set_stats is None else \
        family.make_eval_set_stats(config)
    make = functools.partial(spmd.make_eval_step, model=model, mesh=mesh,
                             binarize_mode=config.data.binarize)
    self._step = make(family.make_eval_metrics(config), stats_fn=stats)
    self._final_step = None
    if family.make_final_eval_metrics is not None:
      self._final_step = make(family.make_final_eval_metrics(config))

  def for_config(self, config) -> "Evaluator":
    """This evaluator for a population member's config (its seed, ...); the compiled eval
    steps are shared: members differ only in numbers the steps take as arguments."""
    other = copy.copy(self)
    other.config = config
    return other

  def __call__(self, state, hparams, final: bool = False,
               curve_scores: dict | None = None) -> dict[str, float]:
    """Means over the evaluation split of the family's per-example metrics, as eval/<name>,
    and the family's set-level metrics.

    `final` adds the family's costly final metrics (one pass over the split each).
    `curve_scores`: this step's disentanglement scores, computed with a population's other
    members (`population_disentanglement`), instead of scoring alone.
    """
    out = self._means(self._step, state, hparams)
    if final and self._final_step is not None:
      out.update(self._means(self._final_step, state, hparams))
    if not final and self.scores_curve_at(int(jax.device_get(state.step))):
      out.update(curve_scores if curve_scores is not None else
                 self.disentanglement(state, self.curve_sizes))
    return out

  def scores_curve_at(self, step: int) -> bool:
    """Whether the periodic evaluation at `step` scores the representation."""
    return bool(self.disentanglement_every and self.curve_sizes is not None
                and step % self.disentanglement_every == 0)

  def _inputs(self):
    if self._feed is not None:
      return self._feed.batches()
    batches = pipeline.eval_batches(self.source, self.batch_size, jax.process_index(),
                                     jax.process_count())
    return (spmd.shard_batch(self.mesh, b) for b in batches)

  def _means(self, step, state, hparams) -> dict[str, float]:
    variables = state.variables()
    # Batches do not depend on each other and the step holds collectives: one at a time
    # (spmd.Window). Their sums are added on the host, not by one more program per batch.
    window, outs = spmd.Window(0), []
    for inputs in self._inputs():
      outs.append(window.add(step(variables, state.seed, inputs, hparams)))
    sums, count, stats = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *jax.device_get(outs))
    out = {f"eval/{k}": float(v) / float(count) for k, v in sums.items()}
    if stats:
      out.update({f"eval/{k}": float(v) for k, v in self._reduce(stats).items()})
    return out

  def model_source(self, source):
    """`source` as the model sees it: images through the evaluation's input transform."""
    return ModelInputSource(source, self.config.data.binarize, int(self.config.seed))

  def _features(self, state):
    """represent(x) -> codes (n, d) of the family's features, on model inputs."""
    variables = _on_one_device(state.variables())
    features = functools.partial(self.family.features, self.model)
    mode, seed = self.config.data.binarize, int(self.config.seed)

    def represent(x):
      x = spmd.eval_input(mode, seed, x, np.arange(len(x)))
      return np.asarray(features(variables, x)).reshape(len(x), -1)

    return represent

  def probe(self, state, train_source) -> dict[str, float]:
    """Linear-probe test error on the family's features and on raw pixels, where labels exist."""
    if self.family.features is None or not (train_source.info.has_label and
                                            self.source.info.has_label):
      return {}
    n = min(len(train_source), self.probe_train_size)
    train_idx = np.sort(np.random.default_rng(0).choice(len(train_source), n, replace=False))
    variables = _on_one_device(state.variables())
    features = functools.partial(self.family.features, self.model)

    def extract(source, idx):
      feats, pixels, labels = [], [], []
      model_inputs = self.model_source(source)
      for i in range(0, len(idx), 1000):
        b = source.get(idx[i:i + 1000])
        x = model_inputs.get(idx[i:i + 1000])["image"]
        feats.append(np.asarray(features(variables, x)).reshape(len(x), -1))
        pixels.append(b["image"].reshape(len(b["image"]), -1))
        labels.append(b["label"])
      return np.concatenate(feats), np.concatenate(pixels), np.concatenate(labels)

    tf, tp, tl = extract(train_source, train_idx)
    ef, ep, el = extract(self.source, np.arange(len(self.source)))
    return {"eval/probe_error": probe_lib.probe_error(tf, tl, ef, el),
            "eval/probe_error_pixels": probe_lib.probe_error(tp, tl, ep, el)}

  def _ground_truth(self):
    """The evaluation data's ground truth, or None where no score applies."""
    if (self.family.features is None or self.disentanglement_sizes is None
        or not self.disentanglement_metrics):
      return None
    return disentanglement.ground_truth_from_source(self.source)

  def _score_kwargs(self, sizes: dict | None) -> dict:
    return {"sizes": self.disentanglement_sizes if sizes is None else sizes,
            "metrics": self.disentanglement_metrics, "dci_importance": self.dci_importance}

  def _results(self, scores, final: bool) -> dict[str, float]:
    if final:
      self.last_scores = scores
    out = {} if scores is None else scores.as_dict()
    for metric in self.disentanglement_metrics:
      for name in disentanglement.HEADLINE[metric]:
        out.setdefault(name, float("nan"))  # a diverged model: no score is meaningful
    return {f"eval/{k}": v for k, v in out.items()}

  @staticmethod
  def population_disentanglement(evaluators: list["Evaluator"], states: list,
                                 final: bool) -> list[dict[str, float]]:
    """Each member's disentanglement scores (final, or the curve's), with the draws made and
    rendered once for the whole population (`disentanglement.member_scores`); each member
    encodes them with its own features function, the one it would use alone, so its scores
    are its scores alone."""
    lead = evaluators[0]
    ground_truth = lead._ground_truth()
    if ground_truth is None:
      return [{} for _ in evaluators]
    represents = [e._features(s) for e, s in zip(evaluators, states)]
    scores = disentanglement.member_scores(
        lambda x: np.stack([r(x) for r in represents]), len(evaluators),
        ground_truth=ground_truth, seed=lead.disentanglement_seed,
        **lead._score_kwargs(None if final else lead.curve_sizes))
    return [e._results(sc, final) for e, sc in zip(evaluators, scores)]

  def disentanglement(self, state, sizes: dict | None = None) -> dict[str, float]:
    """The disentanglement scores `eval.disentanglement_metrics` of the family's features,
    where the evaluation data has ground-truth factors (observations are drawn from the
    whole factor grid), at `sizes` (default: the final sample sizes, whose structured
    scores, with the latent x factor mutual information, are kept in `last_scores` for the
    pictures)."""
    ground_truth = self._ground_truth()
    if ground_truth is None:
      return {}
    try:
      scores = disentanglement.scores(
          represent=self._features(state), ground_truth=ground_truth,
          rng=self.disentanglement_seed, **self._score_kwargs(sizes))
    except disentanglement.NonFiniteCodesError:
      scores = None
    return self._results(scores, sizes is None)

  def save_pictures(self, state, workdir: str, results: dict | None = None) -> list[str]:
    """A reconstruction grid of evaluation images, prior samples for generative families, the
    family's own pictures; where the final disentanglement scores exist, the latent x factor
    mutual information (mi_matrix.png, latent_factors.json) and traversal rows labelled with
    the factor each latent captures most."""
    n = min(int(self.config.eval.num_pictures), len(self.source))
    variables = jax.device_get(state.variables())
    paths = []
    # Spread over the split: sources are often ordered by class or factor.
    rows = np.linspace(0, len(self.source) - 1, n).astype(int)
    batch = self.source.get(rows)
    # Families whose examples are not single images (code maps, sequences) draw their own.
    if hasattr(self.model, "reconstruct") and batch.get("image", np.zeros(())).ndim == 4:
      x = self.model_source(self.source).get(rows)["image"]
      recon = spmd.apply(self.model, variables, x, method="reconstruct")
      paths.append(pictures.save_reconstructions(batch["image"], np.asarray(recon),
                                                 os.path.join(workdir, "reconstructions.png")))
    if self.family.sample is not None:
      key = jax.random.fold_in(jax.random.key(int(self.config.seed)), 2**31 - 1)
      samples = self.family.sample(self.model, variables, key, n, config=self.config)
      paths.append(pictures.save_grid(np.asarray(samples), os.path.join(workdir, "samples.png")))
    labels = None
    if self.last_scores is not None and self.last_scores.mig is not None:
      labels, more = self._factor_pictures(state, workdir, results or {})
      paths += more
    if self.family.pictures is not None:
      extra = {} if labels is None else {"latent_labels": labels}
      paths += self.family.pictures(self.config, self.model, variables, workdir, self.source,
                                    **extra)
    return paths

  def _factor_pictures(self, state, workdir: str, results: dict):
    """What each latent captures: mi_matrix.png, latent_factors.json, the traversal labels,
    and where the factors include the position plane, latent_responses.png."""
    mig = self.last_scores.mig
    names = self.last_scores.factor_names or getattr(self.source.info, "factor_names", None)
    d = mig.mutual_information.shape[0]
    kl = [results.get(f"eval/kl_dim{i}") for i in range(d)]
    kl = kl if all(v is not None for v in kl) else None
    keep = list(mig.scored_factors)
    mi, entropy = mig.mutual_information[:, keep], mig.factor_entropy[keep]
    kept_names = None if names is None else [names[k] for k in keep]
    path = factor_pictures.save_mutual_information(
        mi, os.path.join(workdir, "mi_matrix.png"), kept_names, kl, entropy,
        title="latent x factor mutual information / factor entropy")
    found = factor_pictures.factor_of_latent(mi, kept_names, entropy, min_value=0.05)
    record = {"factor_names": kept_names, "latents": [
        {"latent": i, "factor": f, "normalized_mi": v, "kl": None if kl is None else kl[i]}
        for i, (f, v) in enumerate(found)]}
    write_json(os.path.join(workdir, "latent_factors.json"), record)
    labels = factor_pictures.latent_labels(mi, kept_names, entropy, kl)
    return labels, [path] + self._position_responses(state, workdir, labels, kl)

  def _position_responses(self, state, workdir: str, labels, kl) -> list[str]:
    ground_truth = self._ground_truth()
    names = list(getattr(ground_truth, "factor_names", None) or ())
    if not set(factor_pictures.POSITION_PLANE) <= set(names):
      return []
    if not getattr(ground_truth, "covers_grid", lambda: True)():
      return []  # a part of a grid (a small file) lacks some cells of the plane
    plane = [names.index(n) for n in factor_pictures.POSITION_PLANE]
    responses = factor_pictures.latent_responses(
        self._features(state), ground_truth, plane, draws=2,
        rng=np.random.default_rng(self.disentanglement_seed))
    # The active latents by decreasing KL (all of them where the KL is not known).
    order = (range(len(labels)) if kl is None else
             [i for i in np.argsort(kl)[::-1] if kl[i] > 0.1])
    return [factor_pictures.save_latent_responses(
        responses, os.path.join(workdir, "latent_responses.png"), list(order),
        labels=[labels[i] for i in order])]
