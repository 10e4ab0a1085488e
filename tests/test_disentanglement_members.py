"""Several representations scored on one draw (evaluate/disentanglement/members.py): every
member's scores equal its scores alone with the same seed, for a procedural and a table
ground truth; a member whose codes are not finite gets None, and the others are unaffected."""
from __future__ import annotations

import numpy as np
import pytest

import disentanglement_cases as cases
from vaelab.evaluate import disentanglement as dis

REPRESENTATIONS = (cases.identity, cases.mixed, cases.mixed_first_two)


def _all(fns):
  return lambda x: np.stack([np.asarray(f(x), np.float32) for f in fns])


def _table():
  grid = np.stack(np.meshgrid(*[np.arange(s) for s in cases.SIZES], indexing="ij"), -1)
  factors = grid.reshape(-1, len(cases.SIZES))
  return dis.codes_ground_truth(factors.astype(np.float64), factors)


@pytest.mark.parametrize("ground_truth", [cases.synthetic(), _table()],
                         ids=["procedural", "table"])
def test_each_member_scores_as_alone_on_the_shared_draw(ground_truth):
  kw = {"sizes": cases.SMALL, "dci_importance": "forest"}
  together = dis.member_scores(_all(REPRESENTATIONS), len(REPRESENTATIONS),
                               ground_truth=ground_truth, seed=3, **kw)
  for f, got in zip(REPRESENTATIONS, together):
    alone = dis.scores(represent=lambda x, f=f: np.asarray(f(x), np.float32),
                       ground_truth=ground_truth, rng=3, **kw)
    assert got.as_dict() == alone.as_dict()


def test_a_diverged_member_gets_none_and_the_others_their_scores():
  nan = lambda x: np.full((len(x), 4), np.nan, np.float32)
  kw = {"sizes": cases.SMALL, "metrics": ("mig", "factorvae")}
  got = dis.member_scores(_all((nan, cases.identity)), 2, ground_truth=cases.synthetic(),
                          seed=1, **kw)
  alone = dis.scores(represent=lambda x: np.asarray(cases.identity(x), np.float32),
                     ground_truth=cases.synthetic(), rng=1, **kw)
  assert got[0] is None
  assert got[1].as_dict() == alone.as_dict()
