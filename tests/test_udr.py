"""UDR against an independent transcription of disentanglement_lib's compute_udr_sklearn
(evaluation/udr/metrics/udr.py) on the same codes, and its invariances."""
import numpy as np
import pytest
import scipy.stats
from sklearn import linear_model, preprocessing

import vaelab
from vaelab.evaluate.disentanglement.udr import gaussian_kl_per_latent

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning",
                                        "ignore::scipy.stats.ConstantInputWarning")


def dlib_udr(reps, kl, correlation, threshold=0.01, filter_low_kl=True):
  """dlib's steps one by one: StandardScaler, codes zeroed below KL 0.01, per ordered pair
  Lasso(alpha=0.1) |coef_|.T or per-latent-pair |spearmanr|, the KL mask, relative
  strength with np.nan_to_num, median over the column without the diagonal."""
  reps = [preprocessing.StandardScaler().fit_transform(r) * np.greater(k, 0.01)
          for r, k in zip(reps, kl)]
  masks = [k > threshold for k in kl]
  m = len(reps)
  scores = np.zeros((m, m, 1))
  for i in range(m):
    for j in range(m):
      if i == j:
        continue
      if correlation == "lasso":
        fit = linear_model.Lasso(alpha=0.1).fit(reps[i], reps[j])
        corr = np.transpose(np.absolute(fit.coef_))
      else:
        corr = np.zeros((reps[i].shape[1], reps[j].shape[1]))
        for a in range(reps[i].shape[1]):
          for b in range(reps[j].shape[1]):
            corr[a, b] = abs(scipy.stats.spearmanr(reps[i][:, a], reps[j][:, b],
                                                   nan_policy="omit")[0])
      if filter_low_kl:
        corr = corr[masks[i], ...][..., masks[j]]
      x = np.nanmean(np.nan_to_num(np.max(corr, axis=0)**2 / np.sum(corr, axis=0), 0))
      y = np.nanmean(np.nan_to_num(np.max(corr, axis=1)**2 / np.sum(corr, axis=1), 0))
      scores[i, j] = (x + y) / 2
  model = [np.median(np.delete(scores[:, i], i)) for i in range(m)]
  return np.array(model), scores[..., 0]


def _models(seed=0, n=400, d=6, m=4):
  """Models that share some factors: model 0 axis-aligned, others permuted / rotated /
  partly collapsed copies with noise, so the pairwise scores differ."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, 4))
  reps, kls = [], []
  for k in range(m):
    codes = np.zeros((n, d))
    perm = rng.permutation(4)
    codes[:, :4] = z[:, perm] * rng.choice([-1, 1], 4)
    if k % 2:  # rotate a pair: entangled
      a = rng.uniform(0.3, 1.2)
      rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
      codes[:, :2] = codes[:, :2] @ rot
    codes[:, 4:] = 0.05 * rng.normal(size=(n, d - 4))  # collapsed latents
    codes += 0.1 * rng.normal(size=codes.shape)
    kl = np.concatenate([rng.uniform(0.5, 3.0, 4), [0.005, 0.02][: d - 4]])
    if k == 2:
      kl[3] = 0.001  # an informative-looking latent the KL filter drops
    reps.append(codes)
    kls.append(kl)
  return reps, kls


@pytest.mark.parametrize("correlation", ["lasso", "spearman"])
def test_equals_dlib_formula(correlation):
  reps, kls = _models()
  want_model, want_pair = dlib_udr(reps, kls, correlation)
  got = vaelab.udr(reps, kls, correlation=correlation)
  assert got.pairwise.shape == (4, 4) and got.model_scores.shape == (4,)
  np.testing.assert_allclose(got.pairwise, want_pair, rtol=0, atol=1e-10)
  np.testing.assert_allclose(got.model_scores, want_model, rtol=0, atol=1e-10)
  assert len(set(np.round(got.pairwise[~np.eye(4, dtype=bool)], 6))) > 3  # not a constant


def test_threshold_and_unfiltered_equal_dlib():
  reps, kls = _models(seed=1, m=3)
  # A threshold above dlib's fixed 0.01 zeroing drops one more latent per model.
  want, _ = dlib_udr(reps, kls, "lasso", threshold=0.015)
  np.testing.assert_allclose(vaelab.udr(reps, kls, kl_filter_threshold=0.015).model_scores,
                             want, atol=1e-10)
  # No filter: dlib's filter_low_kl=False (zeroed latents stay in, Spearman NaNs count 0).
  want, _ = dlib_udr(reps, kls, "spearman", filter_low_kl=False)
  got = vaelab.udr(reps, kls, correlation="spearman", kl_filter_threshold=-np.inf)
  np.testing.assert_allclose(got.model_scores, want, atol=1e-10)


def test_invariances_and_entanglement():
  rng = np.random.default_rng(3)
  z = rng.uniform(size=(500, 5))
  kl = np.ones(5)
  perm, signs = rng.permutation(5), rng.choice([-1.0, 1.0], 5)
  copy = z[:, perm] * signs
  # Spearman: a permuted, sign-flipped, monotonically warped copy agrees perfectly.
  s = vaelab.udr([z, np.exp(copy)], [kl, kl], correlation="spearman")
  assert (s.model_scores > 0.8).all()
  np.testing.assert_allclose(
      s.pairwise, vaelab.udr([z, z], [kl, kl], correlation="spearman").pairwise, atol=1e-12)
  # A rotated pair disagrees, and a model scores lower the more it disagrees.
  a = np.pi / 4
  rotated = z.copy()
  rotated[:, :2] = z[:, :2] @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  for correlation in ("lasso", "spearman"):
    good = vaelab.udr([z, copy], [kl, kl], correlation=correlation).model_scores
    bad = vaelab.udr([z, rotated], [kl, kl], correlation=correlation).model_scores
    assert (bad < good - 0.05).all(), (correlation, good, bad)


def test_kl_filter_removes_noise_latents():
  # dlib's test_metric_kl: one shared latent, the rest noise with zero KL.
  rng = np.random.default_rng(4)
  shared = rng.uniform(size=(500, 1))
  kl = np.array([1.0, 0, 0, 0])
  reps = [np.concatenate([shared, rng.uniform(size=(500, 3))], 1) for _ in range(2)]
  assert (vaelab.udr(reps, [kl, kl]).model_scores > 0.8).all()
  assert (vaelab.udr(reps, [kl, kl], kl_filter_threshold=-1).model_scores < 0.35).all()


def test_gaussian_kl_and_errors():
  rng = np.random.default_rng(5)
  mean, logvar = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
  want = np.mean(0.5 * (mean**2 + np.exp(logvar) - logvar - 1), axis=0)
  np.testing.assert_allclose(gaussian_kl_per_latent(mean, logvar), want)
  with pytest.raises(ValueError, match="correlation"):
    vaelab.udr([mean, mean], [np.ones(3)] * 2, correlation="pearson")
  with pytest.raises(ValueError, match="model 1"):
    vaelab.udr([mean, mean[:40]], [np.ones(3)] * 2)
