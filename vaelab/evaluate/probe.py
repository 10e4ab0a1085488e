"""Linear probe: multinomial logistic regression on frozen features (codes or raw pixels)."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def probe_error(train_features, train_labels, eval_features, eval_labels,
                max_iter: int = 200, C: float = 1.0) -> float:
  """Test error of a logistic regression fitted on standardized training features.

  NaN when the features are not finite (a diverged model), rather than an exception that
  would lose the rest of the evaluation.
  """
  if not (np.isfinite(train_features).all() and np.isfinite(eval_features).all()):
    return float("nan")
  scaler = StandardScaler().fit(train_features)
  clf = LogisticRegression(max_iter=max_iter, C=C)
  clf.fit(scaler.transform(train_features), train_labels)
  return float(np.mean(clf.predict(scaler.transform(eval_features)) != eval_labels))
