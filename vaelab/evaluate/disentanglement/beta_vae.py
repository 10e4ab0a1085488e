"""BetaVAE score (Higgins et al. 2017), with disentanglement_lib's protocol."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from vaelab.evaluate.disentanglement.ground_truth import GroundTruth, varying_factors
from vaelab.evaluate.disentanglement.sampling import Represent, grouped_codes


def _betavae_points(represent, ground_truth, rng, num_points, batch_size, represent_batch_size,
                    factors):
  labels = rng.choice(np.asarray(factors), size=num_points)
  features = None
  # A point is `batch_size` pairs, each pair a group of 2 sharing its own value of
  # the point's factor (disentanglement_lib fixes the factor within pairs, not
  # across the batch).
  pair_factor = np.repeat(labels, batch_size)
  for sl, z in grouped_codes(represent, ground_truth, pair_factor, 2, rng,
                             represent_batch_size, align=batch_size):
    diff = np.abs(z[:, 0] - z[:, 1]).reshape(-1, batch_size, z.shape[-1]).mean(1)
    if features is None:
      features = np.empty((num_points, z.shape[-1]))
    features[sl.start // batch_size:sl.start // batch_size + len(diff)] = diff
  return features, labels


def betavae_score(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
                  num_train: int = 10000, num_eval: int = 5000, batch_size: int = 64,
                  represent_batch_size: int = 256) -> dict[str, float]:
  """BetaVAE score (Higgins et al. 2017): accuracy of a linear classifier that
  names the fixed factor from the mean |z1 - z2| of `batch_size` pairs.

  Returns {"betavae_score": eval accuracy, "betavae_train_accuracy"}.
  """
  factors = varying_factors(ground_truth)
  x_train, y_train = _betavae_points(represent, ground_truth, rng, num_train, batch_size,
                                     represent_batch_size, factors)
  x_eval, y_eval = _betavae_points(represent, ground_truth, rng, num_eval, batch_size,
                                   represent_batch_size, factors)
  if len(factors) == 1:  # one class: the classifier is trivially right
    return {"betavae_score": 1.0, "betavae_train_accuracy": 1.0}
  # disentanglement_lib uses sklearn's default LogisticRegression (C=1, unscaled
  # features); max_iter is raised from 100 so that lbfgs converges on codes of
  # any scale. On codes of a large scale (a PCA's, whose variances run to hundreds) it can
  # still stop short: the score is the accuracy of the classifier it reaches, as in
  # disentanglement_lib, and a warning at every evaluation gives the user nothing to act on.
  model = LogisticRegression(max_iter=1000)
  with threadpool_limits(1), warnings.catch_warnings():  # two BLAS threads spin under load
    warnings.simplefilter("ignore", ConvergenceWarning)
    model.fit(x_train, y_train)
  return {"betavae_score": float(np.mean(model.predict(x_eval) == y_eval)),
          "betavae_train_accuracy": float(np.mean(model.predict(x_train) == y_train))}
