"""sklearn's tree splitter, replayed where its choices depend on order and rounding.

The boosted trees of `gbt` are sklearn's only if every split is sklearn's, and ties
decide more splits than one would think (a node of a few samples that two features cut
alike; the first stage, whose residuals take two values per class). sklearn breaks them
by the order in which its splitter visits the features and by the rounding of its
running sums, so this module replays both:

  * features are visited in the order of sklearn's Fisher-Yates draws, from its xorshift
    generator seeded by `random_state.randint(0, 2**31 - 1)` (one draw per tree, stage by
    stage), with its bookkeeping of constant features inherited by child nodes
    (`xorshift`, `visit_one`);
  * running sums are accumulated sequentially, in the order sklearn adds them
    (`sequential_sums`), over samples in the order its in-place partition leaves them
    (`partition`).

What is not replayed: the order sklearn's (unstable) introsort gives to samples with
*equal* float32 values of a feature, and the reverse update of sklearn's criterion after
a skip over tied values that ends within half a node of its end. Both change only the
rounding of node sums, which matters where a sum decides: a pure node whose impurity
rounds to just above or below machine epsilon is split by one and not the other
(importances then differ by ~1e-8; predictions did not). On codes without ties (a
network's posterior means) trees, raw scores, predictions and `feature_importances_`
equal sklearn's to the last bit with the same `random_state` (`tests/test_gbt.py`
compares them on noisy, rotated and collapsed codes).

Segments (one per node of one tree) are stored back to back in flat arrays; the helpers
here work on all of them at once.
"""
from __future__ import annotations

import concurrent.futures
import functools
import os

import numpy as np

RAND_R_MAX = 2**31 - 1  # sklearn.tree._utils.RAND_R_MAX
EPSILON = np.finfo(np.float64).eps  # sklearn.tree._tree.EPSILON
FEATURE_THRESHOLD = np.float32(1e-7)  # a float32 constant in sklearn: float32 sums
# Elements per gathered (segments, features, positions) block of the split search.
_BLOCK = 1 << 16  # small enough for the caches


def xorshift(state):
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


def visit_one(state: int, features: list, constant: list, n_known: int, is_constant,
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
    state, r = xorshift(state)
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


def workers() -> int:
  # VAELAB_GBT_THREADS=1 gives single-threaded timings (sklearn's trees use one core).
  return int(os.environ.get("VAELAB_GBT_THREADS", 0)) or os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(max_workers=workers())


def chunks(lengths: np.ndarray, width: int):
  """Index groups of segments, longest first, each group padded to its longest member
  and holding about _BLOCK / width elements (little padding, bounded memory)."""
  order = np.argsort(-lengths, kind="stable")
  i = 0
  while i < len(order):
    longest = max(int(lengths[order[i]]), 1)
    step = max(1, _BLOCK // (longest * width))
    yield order[i:i + step], longest
    i += step


def sequential_sums(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Left-to-right running total of each segment values[s:s+l], added one element at a
  time as a C loop does (np.cumsum is sequential; np.sum is pairwise and would not be)."""
  out = np.zeros(len(starts))
  for group, longest in chunks(lengths, 1):
    idx = starts[group, None] + np.arange(longest)
    inside = np.arange(longest) < lengths[group, None]
    padded = np.where(inside, values[np.minimum(idx, len(values) - 1)], 0.0)
    out[group] = np.cumsum(padded, axis=1)[np.arange(len(group)), lengths[group] - 1]
  return out


def segment_index(lengths: np.ndarray):
  """(segment of each element, position of each element inside its segment, starts)."""
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
  seg = np.repeat(np.arange(len(lengths)), lengths)
  return seg, np.arange(int(lengths.sum())) - starts[seg], starts


def partition(arranged: np.ndarray, left: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """sklearn's DensePartitioner.partition_samples_final on each segment, vectorized.

  The in-place loop (`if left: p += 1 else: swap(p, --end)`) leaves the left part with
  its left-going samples in place and each right-going one (a hole, in order) replaced
  by the left-going samples of the right part taken from the right end. In the right
  part each position j receives the sample at j + 1, except the "tops" (j = last, or
  j + 1 left-going), which receive, top-down, the holes in order followed by the sample
  at the split position itself when it goes right. All ranks follow from one running
  count of left-going samples.
  """
  seg, pos, starts = segment_index(lengths)
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

