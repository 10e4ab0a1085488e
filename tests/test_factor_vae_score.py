"""The FactorVAE score (vaelab/evaluate/disentanglement/factor_vae.py); the FactorVAE family
is tests/test_factor_vae.py."""
from __future__ import annotations

import numpy as np

from disentanglement_cases import synthetic
from vaelab.evaluate import disentanglement as dis


def test_collapsed_codes_give_zero_factorvae():
  gt = synthetic()
  out = dis.factorvae_score(lambda x: np.full((len(x), 3), 0.5) + 0.01 * x[:, :3], gt,
                            np.random.default_rng(0), num_train=50, num_eval=50,
                            batch_size=8, num_variance_estimate=200)
  # std of 0.01 * f over f uniform in {0, 1, 2} is ~0.008 < 0.05: every dim collapsed.
  assert out == {"factorvae_score": 0.0, "factorvae_train_accuracy": 0.0,
                 "factorvae_num_active_dims": 0.0}
