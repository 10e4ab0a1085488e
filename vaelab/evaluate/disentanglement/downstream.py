"""Downstream task accuracy, as disentanglement_lib's `downstream_task` computes it.

For each training size, a fresh training sample and a fresh test sample of codes are
drawn; one classifier per factor is fitted on the training codes and its accuracy on
both samples is reported. disentanglement_lib runs it with two predictors
(metric configs `downstream_task_logistic_regression` and `downstream_task_boosted_trees`):
sklearn's `LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5))` and its default
`GradientBoostingClassifier()`, both used here as they are (seeded). `gbt`, DCI's faster
replay of the boosted trees, is not: on small samples with many classes (10-50 points, 8-30
classes, ties in the codes) its trees split differently from sklearn's in some cases, and
these scores must be dlib's there (their smallest training size is 10). Its keys, per
training size t
and scored factor i (numbered among the factors that vary, as dlib's dSprites drops
color): `t:mean_train_accuracy`, `t:mean_test_accuracy`, `t:min_train_accuracy`,
`t:min_test_accuracy`, `t:train_accuracy_factor_i`, `t:test_accuracy_factor_i`.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import warnings
from typing import Sequence

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import Represent, sample_codes

_log = logging.getLogger(__name__)

PREDICTORS = ("logistic_regression", "boosted_trees")
# dlib's unsupervised_study_v1 sizes: training sizes and the test sample.
TRAIN_SIZES = (10, 100, 1000, 10000)
NUM_TEST = 5000
# LogisticRegressionCV's five folds need a few points; dlib's smallest size is 10.
MIN_TRAIN_SIZE = 10


def scaled_train_sizes(num_train: int) -> tuple[int, ...]:
  """dlib's training sizes scaled by num_train / 10,000 (its largest), at least 10 each,
  each size once."""
  sizes = (max(MIN_TRAIN_SIZE, int(round(t * num_train / TRAIN_SIZES[-1])))
           for t in TRAIN_SIZES)
  return tuple(sorted(set(sizes)))


class _Constant:
  """What a training sample of one class can predict."""

  def __init__(self, y):
    values, counts = np.unique(y, return_counts=True)
    self.value = values[np.argmax(counts)]

  def predict(self, x):
    return np.full(len(x), self.value)


def fit_predictors(predictor: str, x: np.ndarray, ys: Sequence[np.ndarray], random_state=0):
  """One fitted classifier per label vector in `ys` (dlib's `make_predictor_fn()` models).
  A label vector with a single class gets that class as its prediction (sklearn refuses
  to fit it), and so does one whose logistic fit fails (a fold without two classes)."""
  if predictor not in PREDICTORS:
    raise ValueError(f"predictor={predictor!r}: expected one of {PREDICTORS}")
  fit_idx = [k for k, y in enumerate(ys) if np.unique(y).size > 1]
  models = [_Constant(y) for y in ys]
  if predictor == "boosted_trees":
    def fit(k):
      return GradientBoostingClassifier(random_state=random_state).fit(x, ys[k])

    # sklearn's tree building releases the GIL: one factor per core.
    with concurrent.futures.ThreadPoolExecutor(max(1, min(os.cpu_count() or 1,
                                                          len(fit_idx)))) as pool:
      for k, model in zip(fit_idx, pool.map(fit, fit_idx)):
        models[k] = model
    return models
  with threadpool_limits(1), warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", FutureWarning)  # sklearn's notes on changing defaults
    for k in fit_idx:
      try:
        # Scored by accuracy, dlib's sklearn's default (later versions change it).
        models[k] = LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5),
                                         scoring="accuracy").fit(x, ys[k])
      except ValueError as e:  # a training fold with one class
        _log.warning("downstream logistic regression for factor %d: %s; predicting the "
                     "majority class", k, e)
  return models


def accuracies(predictor: str, codes_train, factors_train, codes_test, factors_test,
               random_state=0) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) accuracy per factor column: dlib's `_compute_loss`."""
  ys = [factors_train[:, k] for k in range(factors_train.shape[1])]
  models = fit_predictors(predictor, codes_train, ys, random_state)
  train = np.array([np.mean(m.predict(codes_train) == y) for m, y in zip(models, ys)])
  test = np.array([np.mean(m.predict(codes_test) == factors_test[:, k])
                   for k, m in enumerate(models)])
  return train, test


def size_scores(train_size: int, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
  """dlib's keys for one training size."""
  t = str(train_size)
  out = {f"{t}:mean_train_accuracy": float(np.mean(train)),
         f"{t}:mean_test_accuracy": float(np.mean(test)),
         f"{t}:min_train_accuracy": float(np.min(train)),
         f"{t}:min_test_accuracy": float(np.min(test))}
  for i in range(len(train)):
    out[f"{t}:train_accuracy_factor_{i}"] = float(train[i])
    out[f"{t}:test_accuracy_factor_{i}"] = float(test[i])
  return out


def downstream_task(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator,
                    *, train_sizes: Sequence[int] = TRAIN_SIZES, num_test: int = NUM_TEST,
                    predictors: Sequence[str] = PREDICTORS,
                    represent_batch_size: int = 256) -> dict[str, dict[str, float]]:
  """{predictor: {dlib key: accuracy}}. Per training size the two samples are drawn once
  and shared by the predictors (dlib runs each predictor as its own evaluation, on the
  same seed, so it draws the same points for both); the boosted trees' seed is drawn
  from `rng` after them."""
  for p in predictors:
    if p not in PREDICTORS:
      raise ValueError(f"predictors={tuple(predictors)}: expected some of {PREDICTORS}")
  keep = list(varying_factors(ground_truth))
  out = {p: {} for p in predictors}
  for size in train_sizes:
    f_train, z_train = sample_codes(represent, ground_truth, int(size), rng,
                                    represent_batch_size)
    f_test, z_test = sample_codes(represent, ground_truth, int(num_test), rng,
                                  represent_batch_size)
    seed = int(rng.integers(2**31 - 1))
    for p in predictors:
      train, test = accuracies(p, z_train, f_train[:, keep], z_test, f_test[:, keep], seed)
      out[p].update(size_scores(int(size), train, test))
  return out


def downstream_from_codes(codes_train: np.ndarray, factors_train: np.ndarray,
                          codes_test: np.ndarray, factors_test: np.ndarray, *,
                          predictors: Sequence[str] = PREDICTORS,
                          random_state=0) -> dict[str, dict[str, float]]:
  """One training size (all of `codes_train`) on precomputed codes: {predictor: {key: v}}.
  Every factor column is scored (give only the ones that vary)."""
  out = {}
  for p in predictors:
    train, test = accuracies(p, np.asarray(codes_train, np.float64), np.asarray(factors_train),
                             np.asarray(codes_test, np.float64), np.asarray(factors_test),
                             random_state)
    out[p] = size_scores(len(codes_train), train, test)
  return out


def flat_names(results: dict[str, dict[str, float]]) -> dict[str, float]:
  """`downstream_<predictor>_<dlib key>` with ':' as '_' (the eval/ names without eval/)."""
  return {f"downstream_{p}_{k.replace(':', '_')}": v
          for p, scores in results.items() for k, v in scores.items()}
