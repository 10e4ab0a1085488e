"""Linear probe: multinomial logistic regression on frozen features (codes or raw pixels).

What is measured is the test error of the L2-regularized (C = 1) logistic regression fitted on
standardized training features, i.e. of its optimum. Codes are often strongly correlated (the
196 sigmoid units of the sparse AE: a standardized Gram matrix of condition ~1.5e5), and
lbfgs then needs a few hundred iterations: with scikit-learn's usual 200 it stopped short,
flooding the logs with ConvergenceWarnings and reporting a point short of the optimum (probe
error 0.144 instead of 0.141 on that run). `max_iter` is therefore 1000, as for the
disentanglement metrics' classifiers; probes that converged before keep their exact result
(lbfgs follows the same iterates). A fit that still stops at the limit is counted
(`not_converged()`) and logged once per process, instead of warning per fit.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
from absl import logging
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

_lock = threading.Lock()
_not_converged = 0


def not_converged() -> int:
  """Probe fits in this process that stopped at max_iter before converging."""
  return _not_converged


def _count_not_converged(max_iter: int, shape) -> None:
  global _not_converged
  with _lock:
    _not_converged += 1
    first = _not_converged == 1
  if first:
    logging.warning("linear probe: lbfgs stopped at max_iter=%d before converging on %s "
                    "features; its error is an upper bound of the optimum's. Later fits that "
                    "stop short are only counted (probe.not_converged()).", max_iter, shape)


def probe_error(train_features, train_labels, eval_features, eval_labels,
                max_iter: int = 1000, C: float = 1.0) -> float:
  """Test error of a logistic regression fitted on standardized training features.

  NaN when the features are not finite (a diverged model), rather than an exception that
  would lose the rest of the evaluation.
  """
  if not (np.isfinite(train_features).all() and np.isfinite(eval_features).all()):
    return float("nan")
  scaler = StandardScaler().fit(train_features)
  clf = LogisticRegression(max_iter=max_iter, C=C)
  # One BLAS thread: lbfgs makes hundreds of small (n x d) @ (d x classes) products, and
  # OpenBLAS's threads spin against each other on a busy machine (the sparse AE's probe ran
  # many times slower with two threads than with one).
  with warnings.catch_warnings(), threadpool_limits(1):
    # Counted below from n_iter_, the same condition scikit-learn warns on.
    warnings.simplefilter("ignore", ConvergenceWarning)
    clf.fit(scaler.transform(train_features), train_labels)
  if np.max(clf.n_iter_) >= max_iter:
    _count_not_converged(max_iter, np.shape(train_features))
  return float(np.mean(clf.predict(scaler.transform(eval_features)) != eval_labels))
