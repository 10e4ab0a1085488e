"""Unfairness (Locatello et al. 2019, "On the Fairness of Disentangled Representations"),
as disentanglement_lib's `fairness` computes it.

One classifier per target factor i (dlib's fairness study: sklearn's default
`GradientBoostingClassifier()`, seeded) is fitted on codes of sampled observations.
For each other factor j, taken as the sensitive one, a set of factor vectors is drawn
once and factor j is set in turn to each of its values: the classifier's predictions of i
for each value give counts (values of i x values of j). The unfairness of (i, j) is the
total variation distance of each sensitive value's prediction distribution to the
overall one, averaged with the values' weights (`mean_fairness`) or at its largest
(`max_fairness`), and dlib reports every mean and max over targets and sensitive factors:
`<mean|max>_fairness:pred<i>:sens<j>`, `...:pred<i>:<mean|max>_sens`,
`...:sens<j>:<mean|max>_pred` and the eight aggregates such as
`mean_fairness:mean_pred:mean_sens` (the paper's score). Factors are numbered among the
ones that vary, as dlib's dSprites drops color.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vaelab.evaluate.disentanglement.downstream import fit_predictors
from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import (CHUNK_IMAGES, Represent, encode,
                                                      sample_codes)

# dlib's fairness_study_v1 sizes.
NUM_TRAIN = 10000
NUM_TEST_POINTS_PER_CLASS = 100


def scaled_points_per_class(num_eval: int) -> int:
  """dlib's 100 test points per sensitive value, scaled as the other scores' test sets
  (num_eval / 5,000), at least 1."""
  return max(1, int(round(NUM_TEST_POINTS_PER_CLASS * num_eval / 5000)))


def inter_group_fairness(counts: np.ndarray) -> tuple[float, float]:
  """(weighted mean, max) over sensitive values (columns) of the total variation distance
  between that column's distribution of predictions (rows) and the overall one.
  float32 as dlib computes it."""
  counts = np.asarray(counts)
  overall = counts.sum(axis=1, dtype=np.float32)
  overall = overall / overall.sum()
  per_class = counts.sum(axis=0)
  # float32 / int64 is computed in float64; dlib's in-place division rounds it to float32.
  column = (counts.astype(np.float32) / per_class[None, :]).astype(np.float32)
  tv = np.abs(column - overall[:, None]).sum(axis=0) / np.float32(2.0)
  weighted = tv * per_class
  weighted = weighted / per_class.sum()
  return float(np.sum(weighted)), float(np.max(tv))


def aggregate(matrix: np.ndarray, prefix: str) -> dict[str, float]:
  """dlib's `compute_scores_dict`: every entry off the diagonal, each row's and column's
  mean and max, and the means and maxima of those."""
  k = matrix.shape[0]
  off = ~np.eye(k, dtype=bool)
  out = {f"{prefix}:pred{i}:sens{j}": float(matrix[i, j])
         for i in range(k) for j in range(k) if i != j}
  rows = [matrix[i][off[i]] for i in range(k)]
  cols = [matrix[:, j][off[:, j]] for j in range(k)]
  row_mean = np.array([np.mean(r) for r in rows])
  row_max = np.array([np.max(r) for r in rows])
  col_mean = np.array([np.mean(c) for c in cols])
  col_max = np.array([np.max(c) for c in cols])
  for i in range(k):
    out[f"{prefix}:pred{i}:mean_sens"] = float(row_mean[i])
    out[f"{prefix}:pred{i}:max_sens"] = float(row_max[i])
  for j in range(k):
    out[f"{prefix}:sens{j}:mean_pred"] = float(col_mean[j])
    out[f"{prefix}:sens{j}:max_pred"] = float(col_max[j])
  out.update({
      f"{prefix}:mean_sens:mean_pred": float(np.mean(col_mean)),
      f"{prefix}:mean_sens:max_pred": float(np.mean(col_max)),
      f"{prefix}:max_sens:mean_pred": float(np.max(col_mean)),
      f"{prefix}:max_sens:max_pred": float(np.max(col_max)),
      f"{prefix}:mean_pred:mean_sens": float(np.mean(row_mean)),
      f"{prefix}:mean_pred:max_sens": float(np.mean(row_max)),
      f"{prefix}:max_pred:mean_sens": float(np.max(row_mean)),
      f"{prefix}:max_pred:max_sens": float(np.max(row_max)),
  })
  return out


def _codes(represent, ground_truth, factors, batch_size):
  return np.concatenate([
      encode(represent, ground_truth.observations(factors[s:s + CHUNK_IMAGES]), batch_size)
      for s in range(0, len(factors), CHUNK_IMAGES)])


def fairness(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
             num_train: int = NUM_TRAIN,
             num_test_points_per_class: int = NUM_TEST_POINTS_PER_CLASS,
             predictor: str = "boosted_trees", represent_batch_size: int = 256,
             random_state: int | None = None) -> dict[str, float]:
  """dlib's unfairness scores by their keys. Draws: the training sample, then the boosted
  trees' seed (unless `random_state`), then per (target, sensitive) pair in dlib's order
  the factor vectors shared by the sensitive values."""
  keep = list(varying_factors(ground_truth))
  if len(keep) < 2:
    raise ValueError("fairness needs at least two factors that vary")
  sizes = [int(ground_truth.factor_sizes[k]) for k in keep]
  factors, codes = sample_codes(represent, ground_truth, int(num_train), rng,
                                represent_batch_size)
  seed = int(rng.integers(2**31 - 1)) if random_state is None else random_state
  models = fit_predictors(predictor, codes, [factors[:, k] for k in keep], seed)
  n = len(keep)
  mean_f, max_f = np.zeros((n, n)), np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      if i == j:
        continue
      original = ground_truth.sample_factors(int(num_test_points_per_class), rng)
      # Every sensitive value's copy of the vectors, encoded together.
      intervened = np.repeat(original[None], sizes[j], axis=0)
      intervened[:, :, keep[j]] = np.arange(sizes[j])[:, None]
      z = _codes(represent, ground_truth, intervened.reshape(-1, original.shape[1]),
                 represent_batch_size)
      predictions = np.asarray(models[i].predict(z), np.int64).reshape(sizes[j], -1)
      counts = np.stack([np.bincount(p, minlength=sizes[i]) for p in predictions], axis=1)
      mean_f[i, j], max_f[i, j] = inter_group_fairness(counts)
  out = aggregate(mean_f, "mean_fairness")
  out.update(aggregate(max_f, "max_fairness"))
  return out


def flat_names(results: dict[str, float]) -> dict[str, float]:
  """`fairness_<dlib key>` with ':' as '_' (the eval/ names without eval/)."""
  return {f"fairness_{k.replace(':', '_')}": v for k, v in results.items()}
