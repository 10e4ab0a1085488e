"""UDR, unsupervised model selection (Duan et al. 2020), as disentanglement_lib computes it.

Models trained with the same hyperparameters but different seeds are scored by how well
they agree: a disentangled model's informative latents each match one latent of every
other disentangled model, an entangled model's do not (the paper's premise). For each
ordered pair of models (i, j), the standardized codes of model i are related to model
j's by |Lasso coefficients| (alpha 0.1, model i's codes predicting model j's) or
|Spearman correlations|, giving R (d_i, d_j). Latents whose mean KL to the prior is at
most `kl_filter_threshold` are dropped, and the pair's score is the mean of
max(row)^2 / sum(row) over rows and over columns, averaged (dlib's
`relative_strength_disentanglement`). A model's UDR is the median of the scores of the
pairs (j, i) over the other models j.

No labels enter: the representations are codes of the same N observations, one (N, d)
array per model, and `kl` each model's mean KL per latent over those observations.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
import scipy.stats
from sklearn.linear_model import Lasso
from threadpoolctl import threadpool_limits

CORRELATIONS = ("lasso", "spearman")
# dlib zeroes the codes of latents below this KL whatever `kl_filter_threshold` is.
_ZERO_CODES_BELOW = 0.01
_LASSO_ALPHA = 0.1


@dataclasses.dataclass
class UDRResult:
  """UDR per model and its parts."""
  model_scores: np.ndarray  # (M,) median of pairwise[:, i] without the diagonal
  pairwise: np.ndarray  # (M, M) (i, j): model i's codes against model j's; 0 on the diagonal
  correlations: dict  # {(i, j): (d_i, d_j) |correlation| of model i's latents with model j's}
  informative: list  # per model, (d,) bool: mean KL above the threshold


def gaussian_kl_per_latent(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
  """(d,) mean over examples of KL(N(mean, exp(logvar)) || N(0, 1)) per latent, the `kl`
  UDR takes (disentanglement_lib's `compute_gaussian_kl`)."""
  mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
  return np.mean(0.5 * (mean**2 + np.exp(logvar) - logvar - 1.0), axis=0)


def _standardized(codes: np.ndarray) -> np.ndarray:
  # sklearn's StandardScaler: population std, a constant column divided by 1.
  std = codes.std(axis=0)
  return (codes - codes.mean(axis=0)) / np.where(std == 0, 1.0, std)


def _lasso(x: np.ndarray, y: np.ndarray, random_state) -> np.ndarray:
  model = Lasso(alpha=_LASSO_ALPHA, random_state=random_state).fit(x, y)
  return np.abs(np.asarray(model.coef_).reshape(y.shape[1], x.shape[1])).T


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  # Pearson correlation of ranks (average ranks for ties) is Spearman's rho; a constant
  # column has none (NaN), as scipy's spearmanr returns.
  rx = scipy.stats.rankdata(x, axis=0)
  ry = scipy.stats.rankdata(y, axis=0)
  rx = rx - rx.mean(0)
  ry = ry - ry.mean(0)
  with np.errstate(divide="ignore", invalid="ignore"):
    c = (rx.T @ ry) / np.outer(np.sqrt((rx**2).sum(0)), np.sqrt((ry**2).sum(0)))
  return np.abs(c)


def relative_strength(r: np.ndarray) -> float:
  """Mean over columns and over rows of max^2 / sum, the two averaged (NaN terms, such as
  an all-zero row, count as 0)."""
  if r.size == 0:
    return 0.0

  def side(axis):
    with np.errstate(divide="ignore", invalid="ignore"):
      ratio = np.max(r, axis=axis)**2 / np.sum(r, axis=axis)
    return np.nanmean(np.nan_to_num(ratio, nan=0.0))

  return float((side(0) + side(1)) / 2)


def udr(representations: Sequence[np.ndarray], kl: Sequence[np.ndarray],
        correlation: str = "lasso", kl_filter_threshold: float = 0.01,
        random_state=0) -> UDRResult:
  """UDR of M models (disentanglement_lib's `compute_udr_sklearn` on these codes).

  representations: M arrays (N, d_i), each model's mean codes of the same N observations.
  kl: M arrays (d_i,), each model's mean KL per latent (`gaussian_kl_per_latent`).
  correlation: "lasso" (UDR_L) or "spearman" (UDR_S).
  Returns a `UDRResult`: `model_scores` (M,), `pairwise` (M, M) and their parts.
  """
  if correlation not in CORRELATIONS:
    raise ValueError(f"correlation={correlation!r}: expected one of {CORRELATIONS}")
  reps = [np.asarray(r, np.float64) for r in representations]
  kls = [np.asarray(k, np.float64).reshape(-1) for k in kl]
  m = len(reps)
  if m < 2 or len(kls) != m:
    raise ValueError(f"udr: need >= 2 models with one kl vector each, got {m} "
                     f"representations and {len(kls)} kl vectors")
  for i, (r, k) in enumerate(zip(reps, kls)):
    if r.ndim != 2 or r.shape[0] != reps[0].shape[0] or r.shape[1] != k.shape[0]:
      raise ValueError(f"udr: model {i} has codes {r.shape} and kl {k.shape}; expected "
                       f"(N={reps[0].shape[0]}, d) and (d,)")
    if not np.isfinite(r).all():
      raise ValueError(f"udr: model {i}'s codes are not finite")
  informative = [k > kl_filter_threshold for k in kls]
  reps = [_standardized(r) * (k > _ZERO_CODES_BELOW) for r, k in zip(reps, kls)]
  pairwise = np.zeros((m, m))
  correlations = {}
  with threadpool_limits(1), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Lasso's convergence notes on all-zero targets
    for i in range(m):
      for j in range(m):
        if i == j:
          continue
        r = (_lasso(reps[i], reps[j], random_state) if correlation == "lasso"
             else _spearman(reps[i], reps[j]))
        correlations[i, j] = r
        pairwise[i, j] = relative_strength(r[informative[i]][:, informative[j]])
  off_diagonal = ~np.eye(m, dtype=bool)
  model_scores = np.array([np.median(pairwise[:, i][off_diagonal[:, i]]) for i in range(m)])
  return UDRResult(model_scores, pairwise, correlations, informative)
