"""FactorVAE score (Kim & Mnih 2018), with disentanglement_lib's protocol."""
from __future__ import annotations

import logging

import numpy as np

from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import Represent, grouped_codes, sample_codes

_log = logging.getLogger(__name__)

# disentanglement_lib's `prune_dims.threshold = 0.05` compares the *standard
# deviation* of a code dimension over the data (not its variance, and not
# relative to other dimensions) with 0.05: a posterior mean that barely moves is
# a dimension collapsed to the prior.
FACTORVAE_PRUNE_STD = 0.05


def _factorvae_votes(represent, ground_truth, rng, num_points, batch_size, represent_batch_size,
                     factors, global_var, active):
  """(d, F) counts of (argmin dimension, fixed factor) over num_points groups."""
  labels = rng.choice(np.asarray(factors), size=num_points)
  active_dims = np.flatnonzero(active)
  votes = np.zeros((len(global_var), len(ground_truth.factor_sizes)), np.int64)
  for sl, z in grouped_codes(represent, ground_truth, labels, batch_size, rng,
                             represent_batch_size):
    # Variance of codes normalised by their global std = local / global variance.
    local = np.var(z[:, :, active_dims], axis=1, ddof=1) / global_var[active_dims]
    np.add.at(votes, (active_dims[np.argmin(local, axis=1)], labels[sl]), 1)
  return votes


def factorvae_score(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
                    num_train: int = 10000, num_eval: int = 5000, batch_size: int = 64,
                    num_variance_estimate: int = 10000, represent_batch_size: int = 256
                    ) -> dict[str, float]:
  """FactorVAE score (Kim & Mnih 2018): accuracy of the majority-vote classifier
  from the least-varying (normalised) code dimension to the fixed factor.

  Returns {"factorvae_score": eval accuracy, "factorvae_train_accuracy",
  "factorvae_num_active_dims"}; all 0 when every dimension is collapsed.
  """
  factors = varying_factors(ground_truth)
  _, codes = sample_codes(represent, ground_truth, num_variance_estimate, rng,
                          represent_batch_size)
  global_var = np.var(codes, axis=0, ddof=1)
  active = np.sqrt(global_var) >= FACTORVAE_PRUNE_STD
  if not active.any():
    _log.warning("factorvae_score: every code dimension has std < %g over the data (all "
                 "collapsed); the score is 0", FACTORVAE_PRUNE_STD)
    return {"factorvae_score": 0.0, "factorvae_train_accuracy": 0.0,
            "factorvae_num_active_dims": 0.0}
  args = (batch_size, represent_batch_size, factors, global_var, active)
  train = _factorvae_votes(represent, ground_truth, rng, num_train, *args)
  evals = _factorvae_votes(represent, ground_truth, rng, num_eval, *args)
  # Each dimension predicts the factor it got most train votes for. A dimension
  # that got none predicts nothing, so its eval votes count as errors
  # (disentanglement_lib's argmax would silently predict the first factor).
  predicted = np.argmax(train, axis=1)
  voted = train.sum(1) > 0
  dims = np.flatnonzero(voted)

  def accuracy(votes):
    return float(votes[dims, predicted[dims]].sum() / max(votes.sum(), 1))

  return {"factorvae_score": accuracy(evals), "factorvae_train_accuracy": accuracy(train),
          "factorvae_num_active_dims": float(active.sum())}
