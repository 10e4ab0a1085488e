"""The scores of several representations (a population's members) on one draw.

Each metric draws factors and observations from its generator and asks the representation
for codes. With the same seed every member would get the same draws: here they are drawn
and rendered once and encoded by every member (`represent_all`), and each member's metrics
then replay its own codes against the same factors,
drawn again from the same seed without observations (`ground_truth.blind()`). The fits
(logistic regressions, boosted trees, ...) stay each member's own. Codes are looked up by
the draw they belong to (its factors, and which batch of it), so a member whose metric
takes another path (FactorVAE's score stops early when every code is collapsed) reads only
what it draws; one that would need a draw nobody made is scored alone. Every member's
scores equal its scores alone with that seed (tests/test_disentanglement_members.py).
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from vaelab.evaluate.disentanglement.sampling import NonFiniteCodesError
from vaelab.evaluate.disentanglement.scores import Scores, scores


class _Draws:
  """A ground truth that names each batch a metric encodes by the draw it comes from:
  (the drawn factors, how many times those factors were drawn before, the batch)."""

  def __init__(self, ground_truth):
    self._gt, self._seen, self._current, self._batch = ground_truth, {}, None, 0

  def __getattr__(self, name):
    return getattr(self._gt, name)

  def __len__(self):
    return len(self._gt)

  def _drawn(self, out):
    digest = hashlib.sha1(np.ascontiguousarray(out[0]).tobytes()).hexdigest()
    self._seen[digest] = self._seen.get(digest, -1) + 1
    self._current, self._batch = (digest, self._seen[digest]), 0
    return out

  def sample(self, n, rng):
    return self._drawn(self._gt.sample(n, rng))

  def sample_with_fixed(self, n, factor_index, rng):
    return self._drawn(self._gt.sample_with_fixed(n, factor_index, rng))

  def next_batch(self):
    key = (*self._current, self._batch)
    self._batch += 1
    return key


class _Missing(LookupError):
  """A member's metric asked for a draw the recording pass did not make."""


def member_scores(represent_all: Callable[[np.ndarray], np.ndarray], num_members: int, *,
                  ground_truth, seed: int, **kwargs) -> list[Scores | None]:
  """[Scores of member m] for `represent_all(x) -> (num_members, batch, d)` codes, drawn
  with `seed`; None for a member whose codes are not finite (a diverged run). `kwargs`
  are `scores`'s (metrics, sizes, dci_importance, ...)."""
  recorded: list[dict] = [{} for _ in range(num_members)]
  draws = _Draws(ground_truth)

  def record(x):
    z = np.asarray(represent_all(x))
    key = draws.next_batch()
    for m in range(num_members):
      recorded[m][key] = z[m]
    # Member 0's own scores come from this pass when its codes are finite (else it is
    # replayed like the others); the pass must go on either way.
    return np.nan_to_num(z[0], nan=0.0, posinf=0.0, neginf=0.0)

  first = scores(represent=record, ground_truth=draws, rng=seed, **kwargs)
  finite0 = all(np.isfinite(z).all() for z in recorded[0].values())
  out = []
  for m in range(num_members):
    if m == 0 and finite0:
      out.append(first)
      continue
    replay_draws = _Draws(ground_truth.blind())

    def replay(x, codes=recorded[m], replay_draws=replay_draws):
      key = replay_draws.next_batch()
      if key not in codes:
        raise _Missing(key)
      return codes[key]

    try:
      try:
        out.append(scores(represent=replay, ground_truth=replay_draws, rng=seed, **kwargs))
      except _Missing:  # its metrics drew what the recording pass did not: score it alone
        alone = lambda x, m=m: np.asarray(represent_all(x))[m]
        out.append(scores(represent=alone, ground_truth=ground_truth, rng=seed, **kwargs))
    except NonFiniteCodesError:
      out.append(None)
  return out
