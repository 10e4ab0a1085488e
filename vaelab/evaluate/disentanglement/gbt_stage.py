"""The K class trees of one boosting stage, grown together.

sklearn builds one tree per class per stage, one after another, and re-sorts every
node's samples by every feature. `Stage` builds the same trees

  * all K class trees of a stage at once, one level at a time (a stage's trees share
    the samples and the gradient; they differ in their residual column);
  * from one presort per feature (the features never change between stages): a node's
    samples in feature order are the global order filtered by node, obtained with a
    stable (radix) argsort by node id;
  * scoring every split position of every (tree, node, feature) with cumulative sums
    over that order,

and otherwise follows sklearn 1.9's Cython step by step, so that it builds the *same*
trees, not similar ones. Beside the splitter's replay (`gbt_splitter`): a split's left
sum runs over the node's samples in feature order, a node's total over the order its
samples have in sklearn's sample array (sorted by the last feature the parent's
splitter sorted, then rearranged by its partition); feature ties use sklearn's float32
tolerance (1e-7, in float32 arithmetic); a node with impurity <= machine epsilon is a
leaf; leaf values are sklearn's Newton steps with numpy's own (pairwise) sums over the
leaf's samples in index order. What is not replayed: see `gbt_splitter`.

Everything is numpy; the splitter's draws for nodes that meet a constant feature and the
leaf loop are Python.
"""
from __future__ import annotations

import numpy as np

from vaelab.evaluate.disentanglement.gbt_splitter import (EPSILON, FEATURE_THRESHOLD, chunks,
                                                          partition, pool, segment_index,
                                                          sequential_sums, visit_one,
                                                          workers, xorshift)

MAX_DEPTH = 3
HEAP = 2 ** (MAX_DEPTH + 1) - 1  # node slots of a complete tree of depth 3
# DFS preorder of the nodes that may be split (depth < 3), as sklearn's builder pops them.
_SPLITTABLE_PREORDER = (0, 1, 3, 4, 2, 5, 6)


class Stage:
  """The K class trees of one boosting stage, grown together level by level."""

  def __init__(self, data, neg_grad, seeds, parallel_search: bool):
    x32, x_sorted = data.x32, data.x_sorted
    self.x32, self.x64, self.order, self.g = x32, data.x64, data.order, neg_grad
    self.x_sorted = x_sorted
    self.parallel_search = parallel_search
    # Splittable positions of the root (values that differ by more than the tolerance).
    self.valid_root = x_sorted[:, 1:] > x_sorted[:, :-1] + FEATURE_THRESHOLD
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
    self.start = np.zeros((k, HEAP), np.int64)
    self.count = np.zeros((k, HEAP), np.int64)
    self.count[:, 0] = n
    self.exists = np.zeros((k, HEAP), bool)
    self.exists[:, 0] = True
    self.total = np.zeros((k, HEAP))  # sum_total of the node (sequential, node order)
    self.sq_total = np.zeros((k, HEAP))
    self.impurity = np.zeros((k, HEAP))
    self.searched = np.zeros((k, HEAP), bool)
    self.constant = np.zeros((k, HEAP, d), bool)
    self.all_equal = np.zeros((k, HEAP, d), bool)
    # Whether two sorted neighbours of a node are within the tolerance, per feature: only
    # then can a child be constant (or all-equal) in that feature.
    self.tied = np.zeros((k, HEAP, d), bool)
    self.n_constant = np.zeros((k, HEAP), np.int64)
    self.visited = np.full((k, HEAP, d), -1, np.int64)  # visit order, -1 padded
    self.arranged_by = np.full((k, HEAP), -1, np.int64)
    self.best_proxy = np.full((k, HEAP, d), -np.inf)
    self.best_pos = np.zeros((k, HEAP, d), np.int64)  # left count of the best split
    self.feature = np.full((k, HEAP), -1, np.int64)
    self.threshold = np.zeros((k, HEAP))
    self.split_pos = np.zeros((k, HEAP), np.int64)
    self.layout = {}  # level -> (grouped samples (K, d, n), node offsets (K, 2**level))

  # -------------------------------------------------------------- growth

  def grow(self):
    trees = np.arange(self.k)
    vals = self.g.T.reshape(-1)  # tree-major residuals, samples in index order
    starts = trees * self.n
    lengths = np.full(self.k, self.n)
    self.total[:, 0] = sequential_sums(vals, starts, lengths)
    self.sq_total[:, 0] = sequential_sums(vals * vals, starts, lengths)
    self.impurity[:, 0] = self.sq_total[:, 0] / self.n - (self.total[:, 0] / self.n) ** 2
    # The root holds every sample: its flags are the data's.
    self.constant[:, 0] = self.x_sorted[:, -1] <= self.x_sorted[:, 0] + FEATURE_THRESHOLD
    self.all_equal[:, 0] = self.x_sorted[:, -1] == self.x_sorted[:, 0]
    self.tied[:, 0] = ~self.valid_root.all(axis=1)
    self.searched[:, 0] = (self.n >= 2) & (self.impurity[:, 0] > EPSILON)

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
    seg, pos, starts = segment_index(lengths)
    members = self.samples[trees[seg], self.start[trees, nodes][seg] + pos]
    vals = self.x32[members[:, None], feats[None, :]]  # (total, tied features)
    lo = np.minimum.reduceat(vals, starts, axis=0)
    hi = np.maximum.reduceat(vals, starts, axis=0)
    constant = np.zeros(tied.shape, bool)
    all_equal = np.zeros(tied.shape, bool)
    constant[:, feats] = hi <= lo + FEATURE_THRESHOLD
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
        state, r = xorshift(state)
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
      state, visited, n_total, arranged_by = visit_one(
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
          bad[:, tf] = ~(xs[:, :, 1:] > xs[:, :, :-1] + FEATURE_THRESHOLD)
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
    blocks = chunks(lengths, d)
    if self.parallel_search and workers() > 1:
      list(pool().map(lambda job: score(*job), blocks))
    else:
      for job in blocks:
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
    seg, pos, starts = segment_index(lengths)
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
    final = partition(arranged, goes_left, lengths)
    self.samples.reshape(-1)[trees[seg] * self.n + node_start[seg] + pos] = final

    # Children sums in their new order (sklearn's node_reset recomputes them there).
    left_id, right_id = 2 * node + 1, 2 * node + 2
    y = self.g.reshape(-1).take(final * self.k + trees[seg])
    right_count = lengths - left_count
    # One call for the four running sums: y and y*y over the left and right children.
    m = len(trees)
    both = np.concatenate([starts, starts + left_count])
    sums = sequential_sums(np.concatenate([y, y * y]),
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
      cseg, cpos, cstarts = segment_index(chain_len)
      src = starts[rv][cseg] + lengths[rv][cseg] - cpos  # last sample first, after st_p
      chain = np.where(cpos == 0, st_p[rv][cseg], -y[np.minimum(src, len(y) - 1)])
      sum_left[rv] = sequential_sums(chain, cstarts, chain_len)
    sum_right = st_p - sum_left
    imp_l = sq_l / left_count - (sum_left / left_count) ** 2
    imp_r = (sq_p - sq_l) / right_count - (sum_right / right_count) ** 2
    improvement = (lengths / self.n) * (imp_p - (right_count / lengths * imp_r)
                                        - (left_count / lengths * imp_l))
    # sklearn makes a node whose best split worsens the impurity a leaf (after the
    # partition, which then changes nothing that matters).
    ok = ~(improvement + EPSILON < 0.0)
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
        self.searched[trees, child] = (cnt >= 2) & (imp > EPSILON)
        self._set_flags(trees, np.full(len(trees), child), node)
    fseg, fpos, _ = segment_index(lengths[keep])
    members = final[starts[keep][fseg] + fpos]
    in_left = fpos < left_count[keep][fseg]
    self.node_of.reshape(-1)[trees[fseg] * self.n + members] = np.where(in_left, left_id,
                                                                          right_id)

  # -------------------------------------------------------------- after growth

  def leaf_values(self, targets, multinomial, factor) -> np.ndarray:
    """sklearn's _update_terminal_regions: one Newton step per leaf, with np.average's
    (pairwise) sums over the leaf's samples in index order."""
    values = np.zeros((self.k, HEAP))
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
