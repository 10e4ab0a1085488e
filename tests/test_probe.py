"""The linear probe (vaelab.evaluate.probe): lbfgs converges on correlated features, and a fit
that does not is counted and logged once instead of flooding the logs with warnings."""
import logging
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from vaelab.evaluate import probe


@pytest.fixture(scope="module")
def correlated():
  """Features like an autoencoder's codes: 50 units mixing 10 directions whose scales span
  three decades, the labels depending on all of them (3,000 training examples)."""
  rng = np.random.default_rng(0)
  e = rng.standard_normal((3300, 10))
  basis, _ = np.linalg.qr(rng.standard_normal((50, 10)))
  features = (e * np.logspace(0, -3, 10)) @ basis.T
  labels = np.argmax(e @ rng.standard_normal((10, 4)), 1)
  return features[:3000], labels[:3000], features[3000:], labels[3000:]


def _convergence_warnings(record):
  return [w for w in record if issubclass(w.category, ConvergenceWarning)]


def test_probe_converges_on_correlated_features(correlated, monkeypatch):
  tf, tl, ef, el = correlated
  # scikit-learn's usual 200 iterations stop short on these features (and warn).
  with warnings.catch_warnings(record=True) as record, threadpool_limits(1):
    warnings.simplefilter("always")
    short = LogisticRegression(max_iter=200).fit(StandardScaler().fit_transform(tf), tl)
  assert short.n_iter_.max() == 200 and _convergence_warnings(record)
  monkeypatch.setattr(probe, "_not_converged", 0)
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    err = probe.probe_error(tf, tl, ef, el)
  assert not _convergence_warnings(record) and probe.not_converged() == 0
  # Converged: what any larger budget gives (lbfgs follows the same iterates).
  assert err == probe.probe_error(tf, tl, ef, el, max_iter=5000)
  assert 0 < err < 0.5


def test_fits_stopped_short_are_counted_and_logged_once(correlated, monkeypatch, caplog):
  tf, tl, ef, el = correlated
  monkeypatch.setattr(probe, "_not_converged", 0)
  with warnings.catch_warnings(record=True) as record, caplog.at_level(logging.WARNING):
    warnings.simplefilter("always")
    for _ in range(2):
      assert 0 <= probe.probe_error(tf, tl, ef, el, max_iter=5) <= 1
  assert not _convergence_warnings(record)
  assert probe.not_converged() == 2
  logged = [r for r in caplog.records if "max_iter=5" in r.getMessage()]
  assert len(logged) == 1


def test_diverged_features_give_nan():
  x = np.ones((10, 3))
  x[2, 1] = np.nan
  assert np.isnan(probe.probe_error(x, np.arange(10) % 2, np.ones((4, 3)), np.arange(4) % 2))
