"""scikit-learn's `GradientBoostingClassifier()` with its default settings, reimplemented.

disentanglement_lib's DCI reads the `feature_importances_` of one default
`GradientBoostingClassifier()` per factor (log-loss, 100 stages, learning rate 0.1,
depth-3 trees on every feature, no subsampling, class priors as the initial model).
sklearn grows those trees one class and one node at a time, re-sorting the samples at
every node, which is slow at disentanglement_lib's sample sizes. This module grows the
same trees another way (`gbt_stage`: a stage's class trees together, from one presort;
`gbt_splitter`: sklearn's splitter replayed where ties and rounding decide), so that DCI
keeps disentanglement_lib's numbers.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
from sklearn.dummy import DummyClassifier
from sklearn.ensemble._gb import _init_raw_predictions
from sklearn.utils import check_random_state

from vaelab.evaluate.disentanglement.gbt_splitter import RAND_R_MAX, workers
from vaelab.evaluate.disentanglement.gbt_stage import HEAP, MAX_DEPTH, Stage

N_STAGES = 100
LEARNING_RATE = 0.1


@dataclasses.dataclass
class BoostedTrees:
  """A fitted ensemble: per stage and class tree, heap-ordered node arrays (node j has
  children 2j+1, 2j+2). `feature` is -1 at leaves and unused slots."""
  classes_: np.ndarray
  init_raw: np.ndarray  # (K,) raw prediction of the prior
  feature: np.ndarray  # (S, K, 15) int
  threshold: np.ndarray  # (S, K, 15) float64
  value: np.ndarray  # (S, K, 15) float64 (leaf values after the Newton step)
  feature_importances_: np.ndarray  # (d,)

  def decision_function(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = len(x)
    raw = np.tile(self.init_raw, (n, 1))
    rows = np.arange(n)
    for s in range(len(self.feature)):
      node = np.zeros((self.feature.shape[1], n), np.int64)
      for _ in range(MAX_DEPTH):
        f = np.take_along_axis(self.feature[s], node, axis=1)
        t = np.take_along_axis(self.threshold[s], node, axis=1)
        right = x[rows[None, :], np.maximum(f, 0)].astype(np.float64) > t
        node = np.where(f >= 0, 2 * node + 1 + right, node)
      raw += LEARNING_RATE * np.take_along_axis(self.value[s], node, axis=1).T
    return raw

  def predict(self, x: np.ndarray) -> np.ndarray:
    raw = self.decision_function(x)
    if raw.shape[1] == 1:
      return self.classes_[(raw[:, 0] >= 0).astype(int)]
    return self.classes_[np.argmax(raw, axis=1)]


def fit(x: np.ndarray, y: np.ndarray, random_state=None, n_stages: int = N_STAGES
        ) -> BoostedTrees:
  """`GradientBoostingClassifier(random_state=random_state).fit(x, y)`, the same trees.

  random_state: None (numpy's global RandomState, as sklearn), an int or a RandomState.
  """
  return fit_many(x, [y], [random_state], n_stages)[0]


class _Target:
  """One classification problem of `fit_many`: its loss, prior and raw predictions.

  The gradients, the prior initialisation and its link come from sklearn itself
  (`sklearn._loss`, `DummyClassifier`), so every stage starts from sklearn's bits.
  """

  def __init__(self, x32, y, random_state):
    n = len(x32)
    self.classes, y_int = np.unique(np.asarray(y), return_inverse=True)
    y_int = y_int.reshape(-1)
    if len(y_int) != n:
      raise ValueError(f"y has {len(y_int)} labels for {n} rows of x")
    if len(self.classes) < 2:
      raise ValueError(f"y has {len(self.classes)} class; boosting needs at least 2")
    self.num_classes = len(self.classes)
    self.num_k = 1 if self.num_classes == 2 else self.num_classes
    self.y = y_int.astype(np.float64)  # sklearn's encoded labels, as floats
    self.rng = check_random_state(random_state)
    weights = np.ones(n)
    self.loss = (HalfBinomialLoss(sample_weight=weights) if self.num_k == 1 else
                 HalfMultinomialLoss(sample_weight=weights, n_classes=self.num_classes))
    prior = DummyClassifier(strategy="prior").fit(x32, y_int)
    self.raw = _init_raw_predictions(x32, prior, self.loss, True).astype(np.float64)
    self.targets = (self.y[:, None] if self.num_k == 1 else
                    (y_int[:, None] == np.arange(self.num_k)[None, :]).astype(np.float64))

  def neg_gradient(self) -> np.ndarray:
    raw = self.raw if self.num_k > 1 else self.raw[:, 0]
    grad = self.loss.gradient(y_true=self.y, raw_prediction=raw, sample_weight=None)
    return -grad.reshape(len(self.y), self.num_k)


def fit_many(x: np.ndarray, ys, random_states, n_stages: int = N_STAGES,
             n_threads: int | None = None) -> list[BoostedTrees]:
  """One `fit` per label vector in `ys`, all on the same features `x` (DCI's case: one
  classifier per factor). Each target draws its own trees' seeds from its own random
  state, so the result is that of separate fits. Targets are spread over `n_threads`
  groups (default: the machine's cores, or VAELAB_GBT_THREADS) balanced by their number of
  class trees; each group grows its targets' trees of a stage together (sharing the
  presort and the per-stage work) in its own thread (numpy releases the GIL).
  """
  x32 = np.ascontiguousarray(x, dtype=np.float32)
  if x32.ndim != 2:
    raise ValueError(f"x must be (n, d), got shape {x32.shape}")
  if len(ys) != len(random_states):
    raise ValueError(f"{len(ys)} label vectors but {len(random_states)} random states")
  jobs = [_Target(x32, y, r) for y, r in zip(ys, random_states)]
  data = _Data(x32)
  num_groups = max(1, min(n_threads or workers(), len(jobs)))
  groups = [[] for _ in range(num_groups)]
  load = [0] * num_groups
  for j in sorted(range(len(jobs)), key=lambda j: -jobs[j].num_k):
    g = int(np.argmin(load))
    groups[g].append(j)
    load[g] += jobs[j].num_k
  groups = [g for g in groups if g]
  out = [None] * len(jobs)

  def run(group):
    for j, model in zip(group, _fit_group(data, [jobs[j] for j in group], n_stages,
                                          parallel_search=len(groups) == 1)):
      out[j] = model

  if len(groups) == 1:
    run(groups[0])
  else:
    with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
      list(pool.map(run, groups))
  return out


class _Data:
  """What every stage reads of the features: float32 values (sklearn's dtype), the presort."""

  def __init__(self, x32):
    self.x32 = x32
    self.x64 = x32.astype(np.float64)
    self.order = np.argsort(x32, axis=0, kind="stable").T.copy()  # (d, n): the presort
    self.x_sorted = np.take_along_axis(x32.T, self.order, axis=1)  # (d, n) sorted values


def _fit_group(data: _Data, jobs, n_stages, parallel_search) -> list[BoostedTrees]:
  n, d = data.x32.shape
  init_raw = [job.raw[0].copy() for job in jobs]
  cols = np.cumsum([0] + [job.num_k for job in jobs])
  num_trees = int(cols[-1])
  targets = np.concatenate([job.targets for job in jobs], axis=1)  # (n, trees)
  multinomial = np.concatenate([np.full(job.num_k, job.num_k > 1) for job in jobs])
  factor = np.concatenate([np.full(job.num_k, (job.num_classes - 1) / job.num_classes)
                           for job in jobs])
  feature = np.full((n_stages, num_trees, HEAP), -1, np.int64)
  threshold = np.zeros((n_stages, num_trees, HEAP))
  value = np.zeros((n_stages, num_trees, HEAP))
  per_tree = [[] for _ in jobs]
  owner = np.repeat(np.arange(len(jobs)), [job.num_k for job in jobs])
  for s in range(n_stages):
    neg_grad = np.concatenate([job.neg_gradient() for job in jobs], axis=1)
    seeds = np.concatenate([job.rng.randint(0, RAND_R_MAX, size=job.num_k) for job in jobs])
    stage = Stage(data, neg_grad, seeds, parallel_search)
    stage.grow()
    feature[s], threshold[s] = stage.feature, stage.threshold
    value[s] = stage.leaf_values(targets, multinomial, factor)
    update = LEARNING_RATE * np.take_along_axis(value[s], stage.node_of, axis=1).T
    for j, job in enumerate(jobs):
      job.raw += update[:, cols[j]:cols[j + 1]]
    for t, imp in stage.importances():
      per_tree[owner[t]].append(imp)
  out = []
  for j, job in enumerate(jobs):
    if per_tree[j]:
      mean = np.mean(per_tree[j], axis=0, dtype=np.float64)
      importances = mean / np.sum(mean)
    else:  # every tree is a single leaf
      importances = np.zeros(d)
    sl = slice(cols[j], cols[j + 1])
    out.append(BoostedTrees(job.classes, init_raw[j], feature[:, sl].copy(),
                            threshold[:, sl].copy(), value[:, sl].copy(), importances))
  return out
