"""Tests for vaelab.evaluate.disentanglement.unsupervised: disentanglement_lib's
unsupervised_metrics_test, and the mutual-information score."""
from __future__ import annotations

import numpy as np
import scipy.linalg

from vaelab.evaluate.disentanglement import unsupervised


def _kl_gaussians(mean_0, cov_0, mean_1, cov_1, k):
  """KL(N(mean_0, cov_0) || N(mean_1, cov_1)) by its textbook formula (unstable)."""
  inv_1 = np.linalg.inv(cov_1)
  return 0.5 * (np.trace(inv_1 @ cov_0) + (mean_1 - mean_0) @ inv_1 @ (mean_1 - mean_0) - k
                + np.log(np.linalg.det(cov_1) / np.linalg.det(cov_0)))


def test_gaussian_total_correlation_zero():
  assert abs(unsupervised.gaussian_total_correlation(np.eye(5))) <= 0.01


def test_gaussian_total_correlation_same():
  cov = np.array([[1, 0.9], [0.9, 1.0]], np.float32)
  means = np.zeros(2, np.float32)
  expected = _kl_gaussians(means, cov, means, np.diag(np.diag(cov)), 2)
  assert abs(unsupervised.gaussian_total_correlation(cov) - expected) <= 0.01


def test_gaussian_wasserstein_correlation_zero():
  assert abs(unsupervised.gaussian_wasserstein_correlation(np.eye(5))) <= 0.01


def test_gaussian_wasserstein_correlation_same():
  cov = np.array([[1, 0.9], [0.9, 1.0]], np.float32)
  diagonal = np.diag(np.diag(cov))
  expected = np.trace(cov + diagonal - 2 * scipy.linalg.sqrtm(cov @ diagonal))
  assert abs(unsupervised.gaussian_wasserstein_correlation(cov) - expected) <= 0.01


def test_mutual_info_score_and_dead_codes():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4000, 1))
  independent = unsupervised.unsupervised_from_codes(rng.normal(size=(4000, 3)))
  copies = unsupervised.unsupervised_from_codes(np.hstack([x, 2 * x, rng.normal(size=(4000, 1))]))
  assert independent.mutual_info_score < 0.05 < copies.mutual_info_score
  assert copies.mutual_information[0, 1] > 2.0 and copies.mutual_information[0, 0] == 0.0
  assert abs(independent.gaussian_total_correlation) < 0.01
  # A dead unit (zero variance) is independent of the rest: no log 0.
  dead = unsupervised.unsupervised_from_codes(np.hstack([rng.normal(size=(500, 2)),
                                                         np.zeros((500, 1))]))
  assert np.isfinite(dead.gaussian_total_correlation)
  assert np.isfinite(dead.gaussian_wasserstein_correlation)
  single = unsupervised.unsupervised_from_codes(x)
  assert single.mutual_info_score == 0.0 and single.gaussian_total_correlation == 0.0
