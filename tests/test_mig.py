"""Tests for vaelab.evaluate.disentanglement.mig: disentanglement_lib's MIG on fixed data."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from disentanglement_cases import fixed_data
from vaelab.evaluate import disentanglement as dis


def _dlib_mig(mus, ys):
  """disentanglement_lib's _compute_mig(mus (d, n), ys (F, n)), histogram 20 bins."""
  disc = np.zeros_like(mus)
  for i in range(mus.shape[0]):
    disc[i, :] = np.digitize(mus[i, :], np.histogram(mus[i, :], 20)[1][:-1])
  m = np.array([[sk_metrics.mutual_info_score(ys[j, :], disc[i, :]) for j in range(len(ys))]
                for i in range(len(mus))])
  h = np.array([sk_metrics.mutual_info_score(ys[j, :], ys[j, :]) for j in range(len(ys))])
  sorted_m = np.sort(m, axis=0)[::-1]
  return np.mean(np.divide(sorted_m[0, :] - sorted_m[1, :], h)), m


def test_fixed_data_mig_is_disentanglement_libs():
  z, y = fixed_data(600)
  s = dis.scores(codes=z, factors=y, metrics=("mig",))
  mig, m = _dlib_mig(z.T, y.T)
  assert s.mig.mig == pytest.approx(mig, abs=1e-12)
  np.testing.assert_allclose(s.mig.mutual_information, m, rtol=0, atol=1e-12)
