"""scikit-learn's `GradientBoostingClassifier()` (default settings), reimplemented to be fast.

disentanglement_lib's DCI fits one `GradientBoostingClassifier()` per factor and reads
its `feature_importances_`. With its defaults (log-loss, 100 stages, learning rate 0.1,
trees of depth 3, squared-error splits, every feature at every node, no subsampling,
class priors as the initial model) sklearn re-sorts every node's samples by every
feature and builds one tree per class per stage, one after another: ~87 CPU seconds for
dSprites' five factors (3, 6, 40, 32, 32 values) at 2,000 points of 10 codes on this
project's machine, ~390 s at 10,000. This module builds the same trees

  * all K class trees of a stage at once, one level at a time (a stage's trees share
    the samples and the gradient; they differ in their residual column);
  * from one presort per feature (the features never change between stages): a node's
    samples in feature order are the global order filtered by node, obtained with a
    stable (radix) argsort by node id;
  * scoring every split position of every (tree, node, feature) with cumulative sums
    over that order,

and otherwise follows sklearn 1.9's Cython step by step, so that it builds the *same*
trees, not similar ones. Ties decide more splits than one would think (a node of a few
samples that two features cut alike; the first stage, whose residuals take two values
per class), and sklearn breaks them by the order in which its splitter happens to visit
the features and by the rounding of its running sums. So, per tree:

  * features are visited in the order of sklearn's Fisher-Yates draws, from its xorshift
    generator seeded by `random_state.randint(0, 2**31 - 1)` (one draw per tree, stage
    by stage), with its bookkeeping of constant features inherited by child nodes;
  * running sums are accumulated sequentially in the order sklearn adds them: a split's
    left sum over the node's samples in feature order, a node's total over the order its
    samples have in sklearn's sample array (sorted by the last feature the parent's
    splitter sorted, then rearranged by its in-place partition, simulated exactly);
  * feature ties use sklearn's float32 tolerance (1e-7, in float32 arithmetic), a node
    with impurity <= machine epsilon is a leaf, leaf values are sklearn's Newton steps
    computed with numpy's own (pairwise) sums over the leaf's samples in index order;
  * gradients, the prior initialisation and its link come from sklearn itself
    (`sklearn._loss`, `DummyClassifier`), so every stage starts from the same bits.

What is not replayed: the order sklearn's (unstable) introsort gives to samples with
*equal* float32 values of a feature, and the reverse update of sklearn's criterion after
a skip over tied values that ends within half a node of its end. Both change only the
rounding of node sums, which matters where a sum decides: a pure node whose impurity
rounds to just above or below machine epsilon is split by one and not the other
(importances then differ by ~1e-8; predictions did not). On codes without ties (a
network's posterior means) trees, raw scores, predictions and `feature_importances_`
equal sklearn's to the last bit with the same `random_state`
(`tests/test_disentanglement.py` compares them on noisy, rotated and collapsed codes).

Everything is numpy on the host (the splitter's draws for nodes that meet a constant
feature and the leaf loop are Python). `fit_many` fits several targets on the same
features (DCI's factors) in threads. Measured in CPU seconds on one core, the five
dSprites factors above: ~27 s instead of ~87 s at 2,000 points, ~210 s instead of ~390 s
at 10,000; numpy's sequential cumulative sums and gathers are what is left.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os

import numpy as np
from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
from sklearn.dummy import DummyClassifier
from sklearn.ensemble._gb import _init_raw_predictions
from sklearn.utils import check_random_state

N_STAGES = 100
LEARNING_RATE = 0.1
MAX_DEPTH = 3
_HEAP = 2 ** (MAX_DEPTH + 1) - 1  # node slots of a complete tree of depth 3
_RAND_R_MAX = 2**31 - 1  # sklearn.tree._utils.RAND_R_MAX
_EPSILON = np.finfo(np.float64).eps  # sklearn.tree._tree.EPSILON
_FEATURE_THRESHOLD = np.float32(1e-7)  # a float32 constant in sklearn: float32 sums
# Elements per gathered (segments, features, positions) block of the split search.
_BLOCK = 1 << 16  # small enough for the caches


# ---------------------------------------------------------------- sklearn's splitter RNG


def _xorshift(state):
  """sklearn.utils._random.our_rand_r on an int or an int64 array of uint32 states:
  (new state, value = state % (RAND_R_MAX + 1))."""
  if isinstance(state, np.ndarray):
    state = np.where(state == 0, 1, state)
  elif state == 0:
    state = 1
  state ^= (state << 13) & 0xFFFFFFFF
  state ^= state >> 17
  state ^= (state << 5) & 0xFFFFFFFF
  return state, state & 0x7FFFFFFF


def _visit_one(state: int, features: list, constant: list, n_known: int, is_constant,
               all_equal):
  """Replays node_split_best's feature loop for one node of one tree.

  `features` and `constant` are the splitter's `features` / `constant_features` arrays
  (they outlive the node: permuted in place). Returns (new xorshift state, the visited
  non-constant features in order, the node's number of constant features for its
  children, the feature whose sort left the node's sample order or None if no sort
  changed it).
  """
  d = len(features)
  f_i, n_visited, n_found, n_drawn, n_total = d, 0, 0, 0, n_known
  visited, arranged_by = [], None
  while f_i > n_total and (n_visited < d or n_visited <= n_found + n_drawn):
    n_visited += 1
    state, r = _xorshift(state)
    f_j = n_drawn + r % (f_i - n_found - n_drawn)
    if f_j < n_known:
      features[n_drawn], features[f_j] = features[f_j], features[n_drawn]
      n_drawn += 1
      continue
    f_j += n_found
    f = features[f_j]
    # The samples are sorted by f before the constancy test; a sort by a feature whose
    # values are all equal leaves them as they were (introsort moves nothing).
    if not all_equal[f]:
      arranged_by = f
    if is_constant[f]:
      features[f_j], features[n_total] = features[n_total], features[f_j]
      n_found += 1
      n_total += 1
      continue
    f_i -= 1
    features[f_i], features[f_j] = features[f_j], features[f_i]
    visited.append(f)
  features[:n_known] = constant[:n_known]
  constant[n_known:n_known + n_found] = features[n_known:n_known + n_found]
  return state, visited, n_total, arranged_by


# ---------------------------------------------------------------- segment helpers


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(max_workers=_workers())


def _chunks(lengths: np.ndarray, width: int):
  """Index groups of segments, longest first, each group padded to its longest member
  and holding about _BLOCK / width elements (little padding, bounded memory)."""
  order = np.argsort(-lengths, kind="stable")
  i = 0
  while i < len(order):
    longest = max(int(lengths[order[i]]), 1)
    step = max(1, _BLOCK // (longest * width))
    yield order[i:i + step], longest
    i += step


def _sequential_sums(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Left-to-right running total of each segment values[s:s+l], added one element at a
  time as a C loop does (np.cumsum is sequential; np.sum is pairwise and would not be)."""
  out = np.zeros(len(starts))
  for group, longest in _chunks(lengths, 1):
    idx = starts[group, None] + np.arange(longest)
    inside = np.arange(longest) < lengths[group, None]
    padded = np.where(inside, values[np.minimum(idx, len(values) - 1)], 0.0)
    out[group] = np.cumsum(padded, axis=1)[np.arange(len(group)), lengths[group] - 1]
  return out


def _segment_index(lengths: np.ndarray):
  """(segment of each element, position of each element inside its segment, starts)."""
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
  seg = np.repeat(np.arange(len(lengths)), lengths)
  return seg, np.arange(int(lengths.sum())) - starts[seg], starts


def _partition(arranged: np.ndarray, left: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """sklearn's DensePartitioner.partition_samples_final on each segment, vectorized.

  The in-place loop (`if left: p += 1 else: swap(p, --end)`) leaves the left part with
  its left-going samples in place and each right-going one (a hole, in order) replaced
  by the left-going samples of the right part taken from the right end. In the right
  part each position j receives the sample at j + 1, except the "tops" (j = last, or
  j + 1 left-going), which receive, top-down, the holes in order followed by the sample
  at the split position itself when it goes right. All ranks follow from one running
  count of left-going samples.
  """
  seg, pos, starts = _segment_index(lengths)
  count = np.cumsum(left)
  seg_base = (count[starts] - left[starts])[seg]
  incl = count - seg_base  # left-going samples at or before each position, in its segment
  excl = incl - left
  ends = starts + lengths - 1
  m = incl[ends][seg]  # left-going samples of the segment = size of its left part
  base = starts[seg]
  out = arranged.copy()
  scratch = np.empty_like(arranged)
  hole = ~left & (pos < m)
  donor = left & (pos >= m)
  # The r-th hole (r = right-going samples before it) gets the r-th donor from the right
  # (r = left-going samples after it).
  scratch[(base + m - incl)[donor]] = arranged[donor]
  out[hole] = scratch[(base + pos - excl)[hole]]

  in_right = pos >= m
  last = pos == lengths[seg] - 1
  nxt_left = np.zeros_like(left)
  nxt_left[:-1] = left[1:]
  top = in_right & (last | nxt_left)
  plain = np.flatnonzero(in_right & ~top)
  out[plain] = arranged[plain + 1]
  # Hole list: holes by rank, then the split position's sample if it goes right (its rank
  # = the number of holes = right-going samples before it).
  listed = hole | (in_right & (pos == m) & ~left)
  scratch[(base + pos - excl)[listed]] = arranged[listed]
  # A top's rank: the tops above it = the last position (if it is not the last) plus one
  # per left-going sample from j + 2 on.
  nxt_incl = np.zeros_like(incl)
  nxt_incl[:-1] = incl[1:]
  top_rank = np.where(last, 0, 1 + m - nxt_incl)
  out[top] = scratch[(base + top_rank)[top]]
  return out


# ---------------------------------------------------------------- the model


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
  """One classification problem of `fit_many`: its loss, prior and raw predictions."""

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


def _workers() -> int:
  # VAELAB_GBT_THREADS=1 gives single-threaded timings (sklearn's trees use one core).
  return int(os.environ.get("VAELAB_GBT_THREADS", 0)) or os.cpu_count() or 1


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
  num_groups = max(1, min(n_threads or _workers(), len(jobs)))
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
  feature = np.full((n_stages, num_trees, _HEAP), -1, np.int64)
  threshold = np.zeros((n_stages, num_trees, _HEAP))
  value = np.zeros((n_stages, num_trees, _HEAP))
  per_tree = [[] for _ in jobs]
  owner = np.repeat(np.arange(len(jobs)), [job.num_k for job in jobs])
  for s in range(n_stages):
    neg_grad = np.concatenate([job.neg_gradient() for job in jobs], axis=1)
    seeds = np.concatenate([job.rng.randint(0, _RAND_R_MAX, size=job.num_k) for job in jobs])
    stage = _Stage(data, neg_grad, seeds, parallel_search)
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


# DFS preorder of the nodes that may be split (depth < 3), as sklearn's builder pops them.
_SPLITTABLE_PREORDER = (0, 1, 3, 4, 2, 5, 6)


class _Stage:
  """The K class trees of one boosting stage, grown together level by level."""

  def __init__(self, data: _Data, neg_grad, seeds, parallel_search: bool):
    x32, x_sorted = data.x32, data.x_sorted
    self.x32, self.x64, self.order, self.g = x32, data.x64, data.order, neg_grad
    self.x_sorted = x_sorted
    self.parallel_search = parallel_search
    # Splittable positions of the root (values that differ by more than the tolerance).
    self.valid_root = x_sorted[:, 1:] > x_sorted[:, :-1] + _FEATURE_THRESHOLD
    self.tied_features = np.flatnonzero(~self.valid_root.all(axis=1))
    n, d = x32.shape
    k = neg_grad.shape[1]
    self.n, self.d, self.k = n, d, k
    # sklearn's per-tree splitter state that outlives a node: the xorshift state and the
    # `features` / `constant_features` arrays its Fisher-Yates draws permute.
    self.rng_state = np.asarray(seeds, np.int64).copy()
    self.features_perm = np.tile(np.arange(d), (k, 1))
    self.constant_perm = np.zeros((k, d), np.int64)
    self.samples = np.tile(np.arange(n), (k, 1))  # sklearn's per-tree sample array
    self.node_of = np.zeros((k, n), np.int64)  # heap id of each sample's current node
    self.start = np.zeros((k, _HEAP), np.int64)
    self.count = np.zeros((k, _HEAP), np.int64)
    self.count[:, 0] = n
    self.exists = np.zeros((k, _HEAP), bool)
    self.exists[:, 0] = True
    self.total = np.zeros((k, _HEAP))  # sum_total of the node (sequential, node order)
    self.sq_total = np.zeros((k, _HEAP))
    self.impurity = np.zeros((k, _HEAP))
    self.searched = np.zeros((k, _HEAP), bool)
    self.constant = np.zeros((k, _HEAP, d), bool)
    self.all_equal = np.zeros((k, _HEAP, d), bool)
    # Whether two sorted neighbours of a node are within the tolerance, per feature: only
    # then can a child be constant (or all-equal) in that feature.
    self.tied = np.zeros((k, _HEAP, d), bool)
    self.n_constant = np.zeros((k, _HEAP), np.int64)
    self.visited = np.full((k, _HEAP, d), -1, np.int64)  # visit order, -1 padded
    self.arranged_by = np.full((k, _HEAP), -1, np.int64)
    self.best_proxy = np.full((k, _HEAP, d), -np.inf)
    self.best_pos = np.zeros((k, _HEAP, d), np.int64)  # left count of the best split
    self.feature = np.full((k, _HEAP), -1, np.int64)
    self.threshold = np.zeros((k, _HEAP))
    self.split_pos = np.zeros((k, _HEAP), np.int64)
    self.layout = {}  # level -> (grouped samples (K, d, n), node offsets (K, 2**level))

  # -------------------------------------------------------------- growth

  def grow(self):
    trees = np.arange(self.k)
    vals = self.g.T.reshape(-1)  # tree-major residuals, samples in index order
    starts = trees * self.n
    lengths = np.full(self.k, self.n)
    self.total[:, 0] = _sequential_sums(vals, starts, lengths)
    self.sq_total[:, 0] = _sequential_sums(vals * vals, starts, lengths)
    self.impurity[:, 0] = self.sq_total[:, 0] / self.n - (self.total[:, 0] / self.n) ** 2
    # The root holds every sample: its flags are the data's.
    self.constant[:, 0] = self.x_sorted[:, -1] <= self.x_sorted[:, 0] + _FEATURE_THRESHOLD
    self.all_equal[:, 0] = self.x_sorted[:, -1] == self.x_sorted[:, 0]
    self.tied[:, 0] = ~self.valid_root.all(axis=1)
    self.searched[:, 0] = (self.n >= 2) & (self.impurity[:, 0] > _EPSILON)

    self._search(0)
    self._visit(0)
    self._split(0)
    self._search(1)
    self._visit(1)
    self._split(1)
    for node in (3, 4, 2):
      self._visit(node)
    self._split(2)
    for node in (5, 6):
      self._visit(node)
    self._search(2)
    for node in (3, 4, 5, 6):
      self._choose(node)
    for node in (3, 4, 5, 6):
      self._split(node)

  def _set_flags(self, trees, nodes, parent: int):
    """Constant (max <= min + 1e-7 in float32) and all-equal flags of the nodes' features.
    A child can only be constant in a feature in which its parent has near-tied sorted
    neighbours; only those (rare for real codes) are computed from the members."""
    tied = self.tied[trees, parent]  # (T, d)
    rows = np.flatnonzero(tied.any(axis=1))
    self.constant[trees, nodes] = False
    self.all_equal[trees, nodes] = False
    if not len(rows):
      return
    trees, nodes, tied = trees[rows], nodes[rows], tied[rows]
    feats = np.flatnonzero(tied.any(axis=0))
    lengths = self.count[trees, nodes]
    seg, pos, starts = _segment_index(lengths)
    members = self.samples[trees[seg], self.start[trees, nodes][seg] + pos]
    vals = self.x32[members[:, None], feats[None, :]]  # (total, tied features)
    lo = np.minimum.reduceat(vals, starts, axis=0)
    hi = np.maximum.reduceat(vals, starts, axis=0)
    constant = np.zeros(tied.shape, bool)
    all_equal = np.zeros(tied.shape, bool)
    constant[:, feats] = hi <= lo + _FEATURE_THRESHOLD
    all_equal[:, feats] = hi == lo
    self.constant[trees, nodes] = constant & tied
    self.all_equal[trees, nodes] = all_equal & tied

  def _visit(self, node: int):
    """Replays the splitter's feature draws at `node` of every tree that searches it."""
    parent = (node - 1) // 2
    trees = np.flatnonzero(self.searched[:, node])
    n_known = np.zeros(len(trees), np.int64) if node == 0 else self.n_constant[trees, parent]
    # Most nodes know no constant feature and find none: d draws, all visited, which
    # vectorize over trees. The others replay the general loop one by one.
    fast = (n_known == 0) & ~self.constant[trees, node].any(axis=1)
    t = trees[fast]
    if len(t):
      state, feats = self.rng_state[t], self.features_perm[t]
      rows = np.arange(len(t))
      for i in range(self.d):
        f_i = self.d - i
        state, r = _xorshift(state)
        f_j = r % f_i
        f = feats[rows, f_j]
        feats[rows, f_j] = feats[rows, f_i - 1]
        feats[rows, f_i - 1] = f
        self.visited[t, node, i] = f
      self.rng_state[t], self.features_perm[t] = state, feats
      self.n_constant[t, node] = 0
      self.arranged_by[t, node] = self.visited[t, node, self.d - 1]
    for t, known in zip(trees[~fast].tolist(), n_known[~fast].tolist()):
      features, constant = self.features_perm[t].tolist(), self.constant_perm[t].tolist()
      state, visited, n_total, arranged_by = _visit_one(
          int(self.rng_state[t]), features, constant, known,
          self.constant[t, node].tolist(), self.all_equal[t, node].tolist())
      self.rng_state[t] = state
      self.features_perm[t], self.constant_perm[t] = features, constant
      self.visited[t, node] = -1
      self.visited[t, node, :len(visited)] = visited
      self.n_constant[t, node] = n_total
      self.arranged_by[t, node] = -1 if arranged_by is None else arranged_by
    if node < 3:
      self._choose(node)

  def _choose(self, node: int):
    """The split: the first visited feature with the largest proxy (sklearn's strict >)."""
    trees = np.flatnonzero(self.searched[:, node])
    order = self.visited[trees, node]  # (T, d) features in visit order, -1 padded
    proxies = np.where(order >= 0, np.take_along_axis(self.best_proxy[trees, node],
                                                      np.maximum(order, 0), axis=1), -np.inf)
    first = np.argmax(proxies, axis=1)  # first maximum in visit order
    win = order[np.arange(len(trees)), first]
    ok = proxies[np.arange(len(trees)), first] > -np.inf
    t, win = trees[ok], win[ok]
    self.feature[t, node] = win
    self.split_pos[t, node] = self.best_pos[t, node, win]

  def _members(self, level, trees, feats, positions):
    """Sample ids at `positions` of the level's layout (node-grouped, feature-sorted)."""
    perm = self.layout[level][0]
    n, d = self.n, self.d
    ranks = positions if perm is None else perm.reshape(-1).take((trees * d + feats) * n
                                                                 + positions)
    return self.order.reshape(-1).take(feats * n + ranks)

  def _search(self, level: int):
    """Best split position and proxy for every (tree, node, feature) searched at a level."""
    base, width = 2**level - 1, 2**level
    ids = base + np.arange(width)
    searched = self.searched[:, ids]  # (K, width)
    if not searched.any():
      return
    n, d = self.n, self.d
    if level == 0:
      perm = None  # one node holding every sample: the presort itself
      offsets = np.zeros((self.k, 1), np.int64)
    else:
      local = self.node_of - base
      in_level = (local >= 0) & (local < width)
      take = in_level & searched[np.arange(self.k)[:, None], np.clip(local, 0, width - 1)]
      key = np.where(take, local, width).astype(np.int16)
      keyed = key[:, self.order]  # (K, d, n): node of each sample along each feature's order
      # Ranks (positions in the presort) grouped by node, in feature order within a node
      # (a stable sort of small integers: numpy's radix sort).
      perm = np.argsort(keyed, axis=2, kind="stable")
      counts = np.where(searched, self.count[:, ids], 0)
      offsets = np.concatenate([np.zeros((self.k, 1), np.int64), np.cumsum(counts, 1)[:, :-1]],
                               1)
    self.layout[level] = (perm, offsets)

    trees, slots = np.nonzero(searched)
    nodes = ids[slots]
    lengths = self.count[trees, nodes]
    feats = np.arange(d)[None, :, None]
    g_flat = self.g.T.reshape(-1)
    g_t = self.g.T

    def score(group, longest):
      tr, nd, ln = trees[group], nodes[group], lengths[group]
      bad = None  # positions whose two sides are within the tolerance (not a split)
      if perm is None:  # the root: every tree's members in the presort order
        resid = g_t[tr[:, None, None], self.order[None, :, :-1]]
        if len(self.tied_features):
          bad = ~self.valid_root[None]
      else:
        pos = np.minimum(offsets[tr, slots[group]][:, None] + np.arange(longest),
                         n - 1)[:, None, :]
        ranks = perm.reshape(-1).take((tr[:, None, None] * d + feats) * n + pos)
        members = self.order.reshape(-1).take(feats * n + ranks)  # (C, d, L)
        resid = g_flat.take(tr[:, None, None] * n + members[:, :, :-1])
        # Where no two sorted neighbours of the whole data are within the tolerance, none
        # of any subset are (its gaps are sums of the data's): every position splits.
        # Only the features with such near-ties are checked node by node.
        tf = self.tied_features
        if len(tf):
          xs = self.x_sorted.reshape(-1).take(tf[None, :, None] * n + ranks[:, tf])
          bad = np.zeros(resid.shape, bool)
          bad[:, tf] = ~(xs[:, :, 1:] > xs[:, :, :-1] + _FEATURE_THRESHOLD)
          inner = np.arange(longest - 1) < (ln - 1)[:, None, None]
          tied = np.zeros((len(tr), d), bool)
          tied[:, tf] = (bad[:, tf] & inner).any(axis=2)
          self.tied[tr, nd] = tied
      # Values past a segment's end are never summed into a valid position.
      left = np.cumsum(resid, axis=2)  # left sums for left counts 1..L-1
      right = self.total[tr, nd][:, None, None] - left
      n_left = np.arange(1, longest, dtype=np.float64)
      n_right = ln[:, None, None] - n_left
      with np.errstate(divide="ignore", invalid="ignore"):
        # proxy_impurity_improvement: sl*sl/nl + sr*sr/nr, in sklearn's operation order.
        left *= left
        left /= n_left
        right *= right
        right /= n_right
        left += right
      np.copyto(left, -np.inf, where=n_right <= 0)  # past the segment's end
      if bad is not None:
        np.copyto(left, -np.inf, where=bad)
      arg = np.argmax(left, axis=2)  # first maximum: sklearn's strict >
      self.best_proxy[tr, nd] = np.take_along_axis(left, arg[..., None], 2)[..., 0]
      self.best_pos[tr, nd] = arg + 1

    # numpy releases the GIL in these array operations: chunks run on all cores.
    chunks = _chunks(lengths, d)
    if self.parallel_search and _workers() > 1:
      list(_pool().map(lambda job: score(*job), chunks))
    else:
      for job in chunks:
        score(*job)

  def _split(self, node: int):
    """Partitions the samples of `node` in every tree that splits it, and sets up the
    children (sums, impurities, flags) as sklearn's criterion computes them."""
    level = int(np.floor(np.log2(node + 1)))
    trees = np.flatnonzero(self.searched[:, node] & (self.feature[:, node] >= 0))
    if not len(trees):
      return
    base = 2**level - 1
    offsets = self.layout[level][1][trees, node - base]
    lengths = self.count[trees, node]
    seg, pos, starts = _segment_index(lengths)
    by = self.arranged_by[trees, node]
    # The node's sample order before the partition: sorted by the last feature the
    # splitter sorted (the search layout has it), or the order the node started with.
    node_start = self.start[trees, node]
    arranged = self._members(level, trees[seg], np.maximum(by, 0)[seg], offsets[seg] + pos)
    if (by < 0).any():
      initial = self.samples[trees[seg], node_start[seg] + pos]
      arranged = np.where(by[seg] >= 0, arranged, initial)

    feat = self.feature[trees, node]
    left_count = self.split_pos[trees, node]
    # Threshold between the two sorted values around the split (sum of halves, float64).
    below = self._members(level, trees, feat, offsets + left_count - 1)
    above = self._members(level, trees, feat, offsets + left_count)
    thr = (self.x64[below, feat] / 2.0) + (self.x64[above, feat] / 2.0)
    goes_left = self.x64.reshape(-1).take(arranged * self.d + feat[seg]) <= thr[seg]
    final = _partition(arranged, goes_left, lengths)
    self.samples.reshape(-1)[trees[seg] * self.n + node_start[seg] + pos] = final

    # Children sums in their new order (sklearn's node_reset recomputes them there).
    left_id, right_id = 2 * node + 1, 2 * node + 2
    y = self.g.reshape(-1).take(final * self.k + trees[seg])
    right_count = lengths - left_count
    # One call for the four running sums: y and y*y over the left and right children.
    m = len(trees)
    both = np.concatenate([starts, starts + left_count])
    sums = _sequential_sums(np.concatenate([y, y * y]),
                            np.concatenate([both, both + len(y)]),
                            np.tile(np.concatenate([left_count, right_count]), 2))
    st_l, st_r, sq_l, sq_r = sums[:m], sums[m:2 * m], sums[2 * m:3 * m], sums[3 * m:]
    # children_impurity: the criterion's left sum after reset + update(pos) runs from the
    # nearer end (reverse: the total minus the right part, last sample first).
    st_p, sq_p, imp_p = (self.total[trees, node], self.sq_total[trees, node],
                         self.impurity[trees, node])
    reverse = left_count > right_count
    sum_left = st_l.copy()
    if reverse.any():
      rv = np.flatnonzero(reverse)
      chain_len = right_count[rv] + 1
      cseg, cpos, cstarts = _segment_index(chain_len)
      src = starts[rv][cseg] + lengths[rv][cseg] - cpos  # last sample first, after st_p
      chain = np.where(cpos == 0, st_p[rv][cseg], -y[np.minimum(src, len(y) - 1)])
      sum_left[rv] = _sequential_sums(chain, cstarts, chain_len)
    sum_right = st_p - sum_left
    imp_l = sq_l / left_count - (sum_left / left_count) ** 2
    imp_r = (sq_p - sq_l) / right_count - (sum_right / right_count) ** 2
    improvement = (lengths / self.n) * (imp_p - (right_count / lengths * imp_r)
                                        - (left_count / lengths * imp_l))
    # sklearn makes a node whose best split worsens the impurity a leaf (after the
    # partition, which then changes nothing that matters).
    ok = ~(improvement + _EPSILON < 0.0)
    self.feature[trees[~ok], node] = -1
    trees, keep = trees[ok], np.flatnonzero(ok)
    self.threshold[trees, node] = thr[keep]
    if not len(trees):
      return
    for child, cstart, cnt, st, sq, imp in (
        (left_id, node_start[keep], left_count[keep], st_l[keep], sq_l[keep], imp_l[keep]),
        (right_id, node_start[keep] + left_count[keep], right_count[keep], st_r[keep],
         sq_r[keep], imp_r[keep])):
      self.exists[trees, child] = True
      self.start[trees, child] = cstart
      self.count[trees, child] = cnt
      self.total[trees, child] = st
      self.sq_total[trees, child] = sq
      self.impurity[trees, child] = imp
      if child < 7:
        self.searched[trees, child] = (cnt >= 2) & (imp > _EPSILON)
        self._set_flags(trees, np.full(len(trees), child), node)
    fseg, fpos, _ = _segment_index(lengths[keep])
    members = final[starts[keep][fseg] + fpos]
    in_left = fpos < left_count[keep][fseg]
    self.node_of.reshape(-1)[trees[fseg] * self.n + members] = np.where(in_left, left_id,
                                                                          right_id)

  # -------------------------------------------------------------- after growth

  def leaf_values(self, targets, multinomial, factor) -> np.ndarray:
    """sklearn's _update_terminal_regions: one Newton step per leaf, with np.average's
    (pairwise) sums over the leaf's samples in index order."""
    values = np.zeros((self.k, _HEAP))
    # Per tree: samples by leaf, then index (int8 keys: numpy's radix sort).
    order = np.argsort(self.node_of.astype(np.int8), axis=1, kind="stable")
    leaf_sorted = np.take_along_axis(self.node_of, order, axis=1)
    ng = np.take_along_axis(self.g.T, order, axis=1)
    prob = np.take_along_axis(targets.T, order, axis=1) - ng
    hess = prob * (1 - prob)
    # Leaf boundaries of every tree at once: where the sorted leaf id changes.
    change = np.ones((self.k, self.n), bool)
    change[:, 1:] = leaf_sorted[:, 1:] != leaf_sorted[:, :-1]
    add = np.add.reduce  # what ndarray.sum calls: numpy's pairwise sum
    for t, firsts in enumerate(np.split(np.flatnonzero(change) % self.n,
                                        np.cumsum(change.sum(1))[:-1])):
      # Contiguous slices of a row sum exactly as sklearn's gathered copies do.
      bounds = firsts.tolist() + [self.n]
      leaves = leaf_sorted[t, firsts].tolist()
      g_row, h_row, scale = ng[t], hess[t], factor[t] if multinomial[t] else None
      row = values[t]
      for leaf, a, b in zip(leaves, bounds[:-1], bounds[1:]):
        num = add(g_row[a:b]) / (b - a)
        if scale is not None:
          num *= scale  # sklearn's (K - 1) / K
        den = add(h_row[a:b]) / (b - a)
        row[leaf] = 0.0 if abs(den) < 1e-150 else float(num) / float(den)
    return values

  def importances(self) -> list[tuple[int, np.ndarray]]:
    """(tree, compute_feature_importances(normalize=False)) of each tree with a split."""
    imp = np.zeros((self.k, self.d))
    rows = np.arange(self.k)
    for node in _SPLITTABLE_PREORDER:  # sklearn's node order: the same additions per entry
      f = self.feature[:, node]
      split = np.flatnonzero((f >= 0) & self.exists[:, node])
      if not len(split):
        continue
      l, r = 2 * node + 1, 2 * node + 2
      t = rows[split]
      contrib = (self.count[t, node] * self.impurity[t, node]
                 - self.count[t, l] * self.impurity[t, l]
                 - self.count[t, r] * self.impurity[t, r])
      imp[t, f[t]] += contrib  # one node per tree: no repeated (tree, feature) pairs
    return [(int(t), imp[t] / self.n) for t in np.flatnonzero(self.feature[:, 0] >= 0)]
