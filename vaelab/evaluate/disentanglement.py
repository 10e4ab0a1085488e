"""Disentanglement metrics: BetaVAE score, FactorVAE score, MIG and DCI disentanglement.

The four supervised scores of the disentanglement literature, each computed with
the protocol and the default sample sizes of disentanglement_lib (Locatello et
al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations"), so that numbers are comparable with that study.
The representation is a function from a batch of observations to codes; for a
VAE it is the posterior mean.

The metrics need more than a data set: they must draw observations whose factors
share a chosen value. `GroundTruth` is that interface, with two implementations:

  * `ProceduralGroundTruth`: any factor combination can be rendered
    (procedural dSprites, `vaelab.data.dsprites.render`);
  * `TableGroundTruth`: a finite data set with a `factors` array (npz, TFDS
    dsprites/shapes3d); observations are real rows, and a group with a fixed
    factor is drawn among the rows that have the value, so no metric ever asks
    for a combination the data set lacks.

Constant factors (size 1, such as dSprites' color) are left out of every score:
disentanglement_lib's dSprites drops color from its factors (its
`latent_factor_indices` are 1..5), and a factor that never varies can be neither
predicted from nor measured by a code.

Any representation can be scored, from codes computed elsewhere or from an encoder:
`scores(codes=z, factors=y)` (disentanglement_lib's `compute_*_on_fixed_data`; BetaVAE
and FactorVAE draw their groups among the rows, `codes_ground_truth`) or
`scores(represent=f, ground_truth=gt)`. It returns a `Scores` with per-factor MIG, the
latent x factor mutual information (d, F), the DCI importance matrix (d, F), per-code
disentanglement and per-factor completeness beside the scores; `disentanglement_metrics`
flattens the same numbers into the `eval/` floats a run writes::

  from vaelab.evaluate import disentanglement
  s = disentanglement.scores(codes=z, factors=y)   # z (n, d) floats, y (n, F) labels
  s.mig.per_factor, s.mig.mutual_information       # (F,), (d, F) nats
  s.dci.disentanglement, s.dci.importance          # float, (d, F)
  disentanglement.scores(codes=z, factors=y, metrics=("mig",), discretizer="quantile")

DCI's importances come from disentanglement_lib's model, sklearn's
`GradientBoostingClassifier()` per factor, as reimplemented in `vaelab.evaluate.gbt`
(the same trees, several times faster); `dci_importance="forest"` is a faster
approximation, never the default. MIG's discretizer is disentanglement_lib's
equal-width histogram (20 bins) unless `discretizer=` says otherwise.

Everything is numpy / scikit-learn on the host. Observations are requested in
chunks of a few thousand (one `render` or `get` call per chunk, which is what
makes procedural dSprites affordable) and passed to `represent` in fixed-size
batches, the last one padded, so a jitted encoder compiles once.
"""
from __future__ import annotations

import dataclasses
import logging
import types
from typing import Callable, Protocol, Sequence

import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from vaelab.data import dsprites
from vaelab.evaluate import gbt

_log = logging.getLogger(__name__)

Represent = Callable[[np.ndarray], np.ndarray]

# Observations materialised at once: 4096 dSprites images are 64 MB of float32
# and one render call of this size costs ~0.4 s, so per-call overhead is nil.
_CHUNK_IMAGES = 4096
# Rows read per `get` call when a table's factors are collected.
_TABLE_READ_CHUNK = 4096


def default_sizes() -> dict[str, int]:
  """Sample sizes of disentanglement_lib's metric configs (unsupervised_study_v1).

  num_train:   points to fit each score's classifier / estimate MIG (all four metrics)
  num_eval:    points to evaluate it (BetaVAE, FactorVAE; DCI's num_test)
  batch_size:  observations behind one BetaVAE / FactorVAE point (pairs for BetaVAE)
  num_variance_estimate: observations for FactorVAE's global code variances
  represent_batch_size:  observations per `represent` call (not a protocol constant)
  """
  return {"num_train": 10000, "num_eval": 5000, "batch_size": 64,
          "num_variance_estimate": 10000, "represent_batch_size": 256}


# ---------------------------------------------------------------- ground truth


class GroundTruth(Protocol):
  """Factors of variation and the observations they generate.

  `sample_with_fixed(n, factor_index, rng)` returns `n` observations that share
  one value of factor `factor_index` (drawn from its marginal), the other factors
  random. `factor_index` may also be an (G,) array: G independent groups in one
  call, returned as (G, n, F) factors and (G, n, ...) observations.
  """

  factor_sizes: tuple[int, ...]

  def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
    ...

  def observations(self, factors: np.ndarray) -> np.ndarray:
    ...

  def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ...

  def sample_with_fixed(self, n: int, factor_index, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    ...


def varying_factors(ground_truth) -> tuple[int, ...]:
  """Indices of the factors that take more than one value (the ones the metrics score)."""
  found = getattr(ground_truth, "varying_factors", None)
  if found is None:
    found = tuple(k for k, s in enumerate(ground_truth.factor_sizes) if s > 1)
  if not found:
    raise ValueError(f"no factor varies (factor sizes {tuple(ground_truth.factor_sizes)}): "
                     "disentanglement metrics need at least one")
  return tuple(found)


def _group_indices(factor_index) -> tuple[np.ndarray, bool]:
  ks = np.asarray(factor_index, dtype=np.int64)
  return ks.reshape(-1), ks.ndim == 0


class ProceduralGroundTruth:
  """Factors drawn uniformly and independently; any combination is rendered on request."""

  def __init__(self, render: Callable[[np.ndarray], np.ndarray], factor_sizes: Sequence[int],
               factor_names: Sequence[str] | None = None):
    self._render = render
    self.factor_sizes = tuple(int(s) for s in factor_sizes)
    self.factor_names = tuple(factor_names) if factor_names is not None else None
    self.varying_factors = tuple(k for k, s in enumerate(self.factor_sizes) if s > 1)

  def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes))).astype(np.int32)

  def observations(self, factors: np.ndarray) -> np.ndarray:
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(self.factor_sizes):
      raise ValueError(f"factors must be (n, {len(self.factor_sizes)}), got {factors.shape}")
    bad = (factors < 0) | (factors >= np.array(self.factor_sizes))
    if bad.any():
      raise ValueError(f"factor vector {factors[bad.any(1)][0].tolist()} outside the sizes "
                       f"{self.factor_sizes}")
    return np.asarray(self._render(factors), np.float32)

  def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    factors = self.sample_factors(n, rng)
    return factors, self.observations(factors)

  def sample_with_fixed(self, n: int, factor_index, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    ks, scalar = _group_indices(factor_index)
    num_f = len(self.factor_sizes)
    factors = self.sample_factors(ks.size * n, rng).reshape(ks.size, n, num_f)
    groups = np.arange(ks.size)
    # The first member's value is a uniform draw, i.e. the factor's marginal.
    factors[groups, :, ks] = factors[groups, 0, ks][:, None]
    obs = self.observations(factors.reshape(-1, num_f))
    obs = obs.reshape((ks.size, n) + obs.shape[1:])
    return (factors[0], obs[0]) if scalar else (factors, obs)


class TableGroundTruth:
  """The factors of a finite data set (a source whose `get` returns "factors").

  Factors are sampled as rows of the data set, so their joint distribution is the
  data's. `observations(factors)` looks each factor vector up (the first row that
  has it); `sample` and `sample_with_fixed` return the rows they drew instead, so
  they never need a combination the data set lacks.
  """

  def __init__(self, source, factors: np.ndarray | None = None):
    self._source = source
    if factors is None:
      factors = self._read_factors(source)
    factors = np.asarray(factors)
    if factors.ndim != 2 or len(factors) != len(source):
      raise ValueError(f"factors must be (len(source)={len(source)}, F), got {factors.shape}")
    self._factors = factors.astype(np.int64)
    sizes = getattr(source.info, "factor_sizes", None)
    if sizes is None:
      sizes = tuple(int(m) + 1 for m in self._factors.max(0))
    self.factor_sizes = tuple(int(s) for s in sizes)
    if len(self.factor_sizes) != factors.shape[1]:
      raise ValueError(f"source {source.name!r}: {factors.shape[1]} factors but factor_sizes "
                       f"{self.factor_sizes}")
    if (self._factors < 0).any() or (self._factors >= np.array(self.factor_sizes)).any():
      raise ValueError(f"source {source.name!r}: factors outside factor_sizes {self.factor_sizes}")
    self.factor_names = getattr(source.info, "factor_names", None)
    # Rows of each factor sorted by value: a group with value v of factor k is a
    # uniform draw from the contiguous run of v in column k.
    self._order = [np.argsort(col, kind="stable") for col in self._factors.T]
    self._sorted = [col[o] for col, o in zip(self._factors.T, self._order)]
    # A factor constant over the rows cannot be scored even if its nominal size is > 1.
    self.varying_factors = tuple(k for k, s in enumerate(self._sorted) if s[0] != s[-1])
    self._lookup = None

  @staticmethod
  def _read_factors(source) -> np.ndarray:
    chunks = []
    for start in range(0, len(source), _TABLE_READ_CHUNK):
      batch = source.get(np.arange(start, min(start + _TABLE_READ_CHUNK, len(source))))
      if "factors" not in batch:
        raise ValueError(f"source {source.name!r} has no 'factors' array")
      chunks.append(np.asarray(batch["factors"]))
    return np.concatenate(chunks)

  def __len__(self) -> int:
    return len(self._factors)

  def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
    return self._factors[rng.integers(0, len(self._factors), n)].astype(np.int32)

  def _images(self, rows: np.ndarray) -> np.ndarray:
    x = np.asarray(self._source.get(rows)["image"])
    # float64 observations are codes (`codes_ground_truth`): kept exact.
    return x if x.dtype == np.float64 else x.astype(np.float32)

  def _key(self, factors: np.ndarray):
    return factors.astype(np.int64) @ self._strides

  def _build_lookup(self):
    # One integer per factor vector (mixed radix over factor_sizes), sorted once;
    # a lookup is then a vectorized searchsorted.
    strides = np.cumprod((1,) + self.factor_sizes[:0:-1])[::-1]
    if float(np.prod(np.array(self.factor_sizes, np.float64))) >= 2.0**62:
      raise ValueError(f"factor_sizes {self.factor_sizes}: too many combinations to index")
    self._strides = strides.astype(np.int64)
    keys = self._key(self._factors)
    order = np.argsort(keys, kind="stable")  # stable: the first row with a key wins
    self._lookup = (keys[order], order)

  def rows_of(self, factors: np.ndarray) -> np.ndarray:
    """For each factor vector, the first row that has exactly those factors."""
    factors = np.asarray(factors).reshape(-1, len(self.factor_sizes))
    if self._lookup is None:
      self._build_lookup()
    sorted_keys, order = self._lookup
    bad = ((factors < 0) | (factors >= np.array(self.factor_sizes))).any(1)
    keys = self._key(np.where(bad[:, None], 0, factors))
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    missing = bad | (sorted_keys[pos] != keys)
    if missing.any():
      raise ValueError(f"source {self._source.name!r} has no example with factors "
                       f"{factors[missing][0].tolist()} ({int(missing.sum())} of "
                       f"{len(factors)} requested vectors are missing)")
    return order[pos]

  def observations(self, factors: np.ndarray) -> np.ndarray:
    return self._images(self.rows_of(factors))

  def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = rng.integers(0, len(self._factors), n)
    return self._factors[rows].astype(np.int32), self._images(rows)

  def sample_with_fixed(self, n: int, factor_index, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    ks, scalar = _group_indices(factor_index)
    # The shared value is that of a random row: the factor's marginal in the data.
    anchors = rng.integers(0, len(self._factors), ks.size)
    rows = np.empty((ks.size, n), np.int64)
    for k in np.unique(ks):
      sel = np.flatnonzero(ks == k)
      values = self._factors[anchors[sel], k]
      lo = np.searchsorted(self._sorted[k], values, "left")
      hi = np.searchsorted(self._sorted[k], values, "right")
      pick = lo[:, None] + (rng.random((sel.size, n)) * (hi - lo)[:, None]).astype(np.int64)
      rows[sel] = self._order[k][pick]
    obs = self._images(rows.reshape(-1))
    obs = obs.reshape((ks.size, n) + obs.shape[1:])
    factors = self._factors[rows].astype(np.int32)
    return (factors[0], obs[0]) if scalar else (factors, obs)


def ground_truth_from_source(source):
  """The `GroundTruth` of a source, or None when it has no factors.

  Procedural dSprites (or a subset of it, such as its held-out split) gets the
  whole procedural grid with uniform factors, as disentanglement_lib samples the
  whole data set; any other source with factors gets a `TableGroundTruth`.
  """
  if getattr(source.info, "factor_sizes", None) is None:
    return None
  root = source
  while root is not None and not isinstance(root, dsprites.DSpritesSource):
    root = getattr(root, "_source", None)  # SubsetSource keeps its parent here
  if root is not None:
    return ProceduralGroundTruth(dsprites.render, dsprites.FACTOR_SIZES, dsprites.FACTOR_NAMES)
  return TableGroundTruth(source)


# ---------------------------------------------------------------- helpers


class NonFiniteCodesError(ValueError):
  """`represent` returned NaN or inf (a diverged model): no score is meaningful."""


def _encode(represent: Represent, observations: np.ndarray, batch_size: int) -> np.ndarray:
  """Codes (n, d) float64 of (n, ...) observations, `batch_size` at a time."""
  n = len(observations)
  out = []
  for start in range(0, n, batch_size):
    x = observations[start:start + batch_size]
    m = len(x)
    if m < batch_size:  # pad so that every call has one shape (one jit compilation)
      x = np.concatenate([x, np.repeat(x[-1:], batch_size - m, axis=0)])
    z = np.asarray(represent(x))
    if z.ndim != 2 or z.shape[0] != batch_size:
      raise ValueError(f"represent must map ({batch_size}, ...) observations to "
                       f"({batch_size}, d) codes, got shape {z.shape}")
    out.append(z[:m])
  codes = np.concatenate(out).astype(np.float64)
  if not np.isfinite(codes).all():
    raise NonFiniteCodesError("represent returned non-finite codes")
  return codes


def _sample_codes(represent, ground_truth, n, rng, batch_size):
  """n (factors, codes) pairs, drawn in chunks."""
  factors, codes = [], []
  for start in range(0, n, _CHUNK_IMAGES):
    f, obs = ground_truth.sample(min(_CHUNK_IMAGES, n - start), rng)
    factors.append(np.asarray(f))
    codes.append(_encode(represent, obs, batch_size))
  return np.concatenate(factors), np.concatenate(codes)


def _grouped_codes(represent, ground_truth, factor_indices, group_size, rng, batch_size,
                   align=1):
  """Yields (slice, codes (P, group_size, d)) for chunks of groups with factor_indices fixed.

  Chunks hold a multiple of `align` groups (BetaVAE's pairs of one point stay together).
  """
  per_chunk = max(align, _CHUNK_IMAGES // group_size // align * align)
  for start in range(0, len(factor_indices), per_chunk):
    ks = factor_indices[start:start + per_chunk]
    _, obs = ground_truth.sample_with_fixed(group_size, ks, rng)
    z = _encode(represent, obs.reshape((-1,) + obs.shape[2:]), batch_size)
    yield slice(start, start + ks.size), z.reshape(ks.size, group_size, -1)


# ---------------------------------------------------------------- BetaVAE score


def _betavae_points(represent, ground_truth, rng, num_points, batch_size, represent_batch_size,
                    factors):
  labels = rng.choice(np.asarray(factors), size=num_points)
  features = None
  # A point is `batch_size` pairs, each pair a group of 2 sharing its own value of
  # the point's factor (disentanglement_lib fixes the factor within pairs, not
  # across the batch).
  pair_factor = np.repeat(labels, batch_size)
  for sl, z in _grouped_codes(represent, ground_truth, pair_factor, 2, rng,
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
  # any scale instead of stopping with a ConvergenceWarning.
  model = LogisticRegression(max_iter=1000)
  with threadpool_limits(1):  # two BLAS threads spin against each other under load
    model.fit(x_train, y_train)
  return {"betavae_score": float(np.mean(model.predict(x_eval) == y_eval)),
          "betavae_train_accuracy": float(np.mean(model.predict(x_train) == y_train))}


# ---------------------------------------------------------------- FactorVAE score

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
  for sl, z in _grouped_codes(represent, ground_truth, labels, batch_size, rng,
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
  _, codes = _sample_codes(represent, ground_truth, num_variance_estimate, rng,
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


# ---------------------------------------------------------------- MIG


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
  """disentanglement_lib's `_histogram_discretize`: per code dimension, `num_bins` bins
  of equal width over its range (bin indices 1..num_bins)."""
  codes = np.asarray(codes)
  out = np.empty(codes.shape, np.int64)
  for i in range(codes.shape[1]):
    edges = np.histogram_bin_edges(codes[:, i], num_bins)
    # Left edges only: the maximum falls into the last bin, not one past it.
    out[:, i] = np.digitize(codes[:, i], edges[:-1])
  return out


def quantile_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
  """Equal-mass bins: per code dimension, bin b holds the values between its b/num_bins
  and (b+1)/num_bins quantiles (ties stay together), so an outlier cannot empty all bins
  but one as it does with equal widths."""
  codes = np.asarray(codes)
  out = np.empty(codes.shape, np.int64)
  qs = np.linspace(0, 1, num_bins + 1)[1:-1]
  for i in range(codes.shape[1]):
    out[:, i] = np.searchsorted(np.quantile(codes[:, i], qs), codes[:, i], side="right")
  return out


DISCRETIZERS = {"histogram": histogram_discretize, "quantile": quantile_discretize}


def _discretizer(discretizer):
  if callable(discretizer):
    return discretizer
  if discretizer not in DISCRETIZERS:
    raise ValueError(f"discretizer={discretizer!r}: expected one of {sorted(DISCRETIZERS)} "
                     "or a function (codes (n, d), num_bins) -> integer bins (n, d)")
  return DISCRETIZERS[discretizer]


def _scored_factors(factors: np.ndarray, candidates: Sequence[int]) -> list[int]:
  return [k for k in candidates if np.unique(factors[:, k]).size > 1]


def _check_codes_factors(codes, factors, what):
  codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
  if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
    raise ValueError(f"{what}: codes must be (n, d) and factors (n, F) with the same n, got "
                     f"{codes.shape} and {factors.shape}")
  if not np.isfinite(codes).all():
    raise NonFiniteCodesError(f"{what}: the codes are not finite")
  return codes, factors


@dataclasses.dataclass
class MIGResult:
  """MIG and what it is made of. Per-factor arrays have one entry per factor column
  (NaN for a factor that does not vary, which no score includes)."""
  mig: float
  per_factor: np.ndarray  # (F,) (largest - second largest MI) / H(factor)
  mutual_information: np.ndarray  # (d, F) MI in nats between binned code i and factor j
  factor_entropy: np.ndarray  # (F,) in nats
  scored_factors: tuple[int, ...]


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, *, discretizer="histogram",
                   num_bins: int = 20, candidates: Sequence[int] | None = None) -> MIGResult:
  """MIG of precomputed codes (n, d) and their integer factors (n, F), as
  disentanglement_lib's `_compute_mig(mus.T, ys.T)` (its histogram discretizer with 20
  bins by default; `discretizer="quantile"` or a function for another binning)."""
  codes, factors = _check_codes_factors(codes, factors, "mig")
  num_f = factors.shape[1]
  keep = _scored_factors(factors, range(num_f) if candidates is None else candidates)
  if not keep:
    raise ValueError("mig: no factor varies in the sample")
  binned = _discretizer(discretizer)(codes, num_bins)
  mi = np.full((codes.shape[1], num_f), np.nan)
  entropy = np.full(num_f, np.nan)
  for k in keep:
    mi[:, k] = [sk_metrics.mutual_info_score(factors[:, k], binned[:, i])
                for i in range(codes.shape[1])]
    entropy[k] = sk_metrics.mutual_info_score(factors[:, k], factors[:, k])
  top = -np.sort(-mi[:, keep], axis=0)
  second = top[1] if len(top) > 1 else np.zeros_like(top[0])
  per_factor = np.full(num_f, np.nan)
  per_factor[keep] = (top[0] - second) / entropy[keep]
  return MIGResult(float(np.mean(per_factor[keep])), per_factor, mi, entropy, tuple(keep))


def mig(represent: Represent, ground_truth: GroundTruth, rng: np.random.Generator, *,
        num_train: int = 10000, num_bins: int = 20, represent_batch_size: int = 256,
        discretizer="histogram") -> dict[str, float]:
  """Mutual information gap (Chen et al. 2018), discretised as disentanglement_lib.

  Per factor: (largest - second largest) mutual information between a code
  dimension (histogram-discretised into `num_bins`) and the factor, divided by
  the factor's entropy; the mean over factors. Returns {"mig"}.
  """
  factors, codes = _sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  result = mig_from_codes(codes, factors, discretizer=discretizer, num_bins=num_bins,
                          candidates=varying_factors(ground_truth))
  return {"mig": result.mig}


# ---------------------------------------------------------------- DCI

DCI_IMPORTANCE = ("gbt", "forest")


def _forest():
  # Bagged CART trees on all features (max_features=None; a feature subsample forces
  # splits on irrelevant codes and spreads importance over them), leaves of >= 0.75% of
  # the points so that trees stop before fitting noise with irrelevant codes. Impurity
  # importances, like the boosted trees'. Not disentanglement_lib's model: DCI within
  # ~0.05 of it on average (0.10 at worst) on noisy and rotated synthetic codes.
  return RandomForestClassifier(n_estimators=20, max_features=None, min_samples_leaf=0.0075,
                                n_jobs=-1, random_state=0)


def _weighted_one_minus_entropy(importance: np.ndarray) -> tuple[float, np.ndarray]:
  """(sum_i rho_i (1 - H_K(P_i)), the per-row 1 - H_K(P_i)); P_i = row i normalised,
  K = #columns, rho_i = row i's share of the total (uniform when the total is 0)."""
  if importance.shape[1] == 1:
    # One column: every row is trivially concentrated (disentanglement_lib divides by
    # log 1 = 0 here and returns NaN).
    return 1.0, np.ones(len(importance))
  per_row = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
  total = importance.sum()
  weights = importance.sum(1) / total if total > 0 else np.full(len(importance),
                                                                1 / len(importance))
  return float(np.sum(per_row * weights)), per_row


@dataclasses.dataclass
class DCIResult:
  """DCI and what it is made of (per-factor arrays: NaN for a factor that does not vary)."""
  disentanglement: float
  completeness: float
  informativeness_train: float  # mean accuracy over factors (disentanglement_lib's)
  informativeness_test: float
  importance: np.ndarray  # (d, F) importance of code i for predicting factor j
  per_code_disentanglement: np.ndarray  # (d,) 1 - H_F(row i of importance)
  per_factor_completeness: np.ndarray  # (F,) 1 - H_d(column j of importance)
  per_factor_accuracy_train: np.ndarray  # (F,)
  per_factor_accuracy_test: np.ndarray  # (F,)
  scored_factors: tuple[int, ...]


def dci_from_codes(codes_train: np.ndarray, factors_train: np.ndarray,
                   codes_test: np.ndarray, factors_test: np.ndarray, *,
                   importance: str = "gbt", random_state=0,
                   candidates: Sequence[int] | None = None) -> DCIResult:
  """DCI of precomputed codes, as disentanglement_lib's `_compute_dci(mus_train.T,
  ys_train.T, mus_test.T, ys_test.T)`.

  importance="gbt" (the default) is disentanglement_lib's model,
  `GradientBoostingClassifier()` per factor, through `vaelab.evaluate.gbt`: the same
  trees as sklearn's with `random_state=random_state` (disentanglement_lib leaves it
  unseeded), many times faster. "forest" is a 20-tree random forest: faster still, not
  the reference (DCI up to ~0.1 away from it).
  """
  codes_train, factors_train = _check_codes_factors(codes_train, factors_train, "dci")
  codes_test, factors_test = _check_codes_factors(codes_test, factors_test, "dci")
  if importance not in DCI_IMPORTANCE:
    raise ValueError(f"importance={importance!r}: expected one of {DCI_IMPORTANCE}")
  num_f = factors_train.shape[1]
  keep = _scored_factors(factors_train,
                         range(num_f) if candidates is None else candidates)
  if not keep:
    raise ValueError("dci_disentanglement: no factor varies in the sample")
  if importance == "gbt":
    models = gbt.fit_many(codes_train, [factors_train[:, k] for k in keep],
                          [random_state] * len(keep))
  else:
    with threadpool_limits(1):
      models = [_forest().fit(codes_train, factors_train[:, k]) for k in keep]
  r = np.zeros((codes_train.shape[1], len(keep)))
  acc_train, acc_test = np.full(num_f, np.nan), np.full(num_f, np.nan)
  for j, (k, model) in enumerate(zip(keep, models)):
    r[:, j] = np.abs(model.feature_importances_)
    acc_train[k] = np.mean(model.predict(codes_train) == factors_train[:, k])
    acc_test[k] = np.mean(model.predict(codes_test) == factors_test[:, k])
  disentanglement, per_code = _weighted_one_minus_entropy(r)
  completeness, per_factor = _weighted_one_minus_entropy(r.T)
  importance_full = np.full((codes_train.shape[1], num_f), np.nan)
  importance_full[:, keep] = r
  completeness_full = np.full(num_f, np.nan)
  completeness_full[keep] = per_factor
  return DCIResult(disentanglement, completeness, float(np.nanmean(acc_train)),
                   float(np.nanmean(acc_test)), importance_full, per_code, completeness_full,
                   acc_train, acc_test, tuple(keep))


def dci_disentanglement(represent: Represent, ground_truth: GroundTruth,
                        rng: np.random.Generator, *, num_train: int = 10000,
                        num_test: int = 5000, importance: str = "gbt",
                        represent_batch_size: int = 256) -> dict[str, float]:
  """DCI (Eastwood & Williams 2018) from tree-ensemble feature importances.

  R (d, F) holds, per factor, the importance of each code dimension for a
  classifier predicting that factor. Disentanglement is sum_i rho_i (1 - H_F(P_i))
  with P_i = R_i / sum_j R_ij and rho_i = sum_j R_ij / sum R; completeness is the
  same over factors. Returns {"dci_disentanglement", "dci_completeness",
  "dci_informativeness_train", "dci_informativeness_test"} (informativeness is
  the mean classification accuracy, as disentanglement_lib reports it). The boosted
  trees' seed is drawn from `rng`.
  """
  if importance not in DCI_IMPORTANCE:
    raise ValueError(f"importance={importance!r}: expected one of {DCI_IMPORTANCE}")
  f_train, z_train = _sample_codes(represent, ground_truth, num_train, rng, represent_batch_size)
  f_test, z_test = _sample_codes(represent, ground_truth, num_test, rng, represent_batch_size)
  result = dci_from_codes(z_train, f_train, z_test, f_test, importance=importance,
                          random_state=int(rng.integers(2**31 - 1)),
                          candidates=varying_factors(ground_truth))
  return {"dci_disentanglement": result.disentanglement,
          "dci_completeness": result.completeness,
          "dci_informativeness_train": result.informativeness_train,
          "dci_informativeness_test": result.informativeness_test}


# ---------------------------------------------------------------- all four

METRICS = ("betavae", "factorvae", "mig", "dci")


def _checked_sizes(sizes):
  s = default_sizes()
  unknown = set(sizes or {}) - set(s)
  if unknown:
    raise ValueError(f"unknown disentanglement sizes {sorted(unknown)}; expected keys of "
                     f"{sorted(s)}")
  s.update({k: int(v) for k, v in (sizes or {}).items()})
  return s


def _metric_calls(represent, ground_truth, s, discretizer, num_bins, dci_importance):
  """Per metric, a function of its generator giving its structured result."""
  rb = s["represent_batch_size"]

  def mig_call(r):
    factors, codes = _sample_codes(represent, ground_truth, s["num_train"], r, rb)
    return mig_from_codes(codes, factors, discretizer=discretizer, num_bins=num_bins,
                          candidates=varying_factors(ground_truth))

  def dci_call(r):
    f_train, z_train = _sample_codes(represent, ground_truth, s["num_train"], r, rb)
    f_test, z_test = _sample_codes(represent, ground_truth, s["num_eval"], r, rb)
    return dci_from_codes(z_train, f_train, z_test, f_test, importance=dci_importance,
                          random_state=int(r.integers(2**31 - 1)),
                          candidates=varying_factors(ground_truth))

  return {
      "betavae": lambda r: betavae_score(
          represent, ground_truth, r, num_train=s["num_train"], num_eval=s["num_eval"],
          batch_size=s["batch_size"], represent_batch_size=rb),
      "factorvae": lambda r: factorvae_score(
          represent, ground_truth, r, num_train=s["num_train"], num_eval=s["num_eval"],
          batch_size=s["batch_size"], num_variance_estimate=s["num_variance_estimate"],
          represent_batch_size=rb),
      "mig": mig_call,
      "dci": dci_call,
  }


@dataclasses.dataclass
class Scores:
  """The four scores with their parts: `betavae` / `factorvae` are the dicts of
  `betavae_score` / `factorvae_score`; `mig` and `dci` hold the per-factor values and
  the (d, F) mutual-information and importance matrices. A metric not asked for (or
  whose codes were not finite) is None."""
  betavae: dict | None = None
  factorvae: dict | None = None
  mig: MIGResult | None = None
  dci: DCIResult | None = None
  factor_names: tuple[str, ...] | None = None

  def as_dict(self) -> dict[str, float]:
    """The flat floats `disentanglement_metrics` reports (without the eval/ prefix)."""
    out = dict(self.betavae or {})
    out.update(self.factorvae or {})
    if self.mig is not None:
      out["mig"] = self.mig.mig
    if self.dci is not None:
      out.update({"dci_disentanglement": self.dci.disentanglement,
                  "dci_completeness": self.dci.completeness,
                  "dci_informativeness_train": self.dci.informativeness_train,
                  "dci_informativeness_test": self.dci.informativeness_test})
    return {k: float(v) for k, v in out.items()}


class _CodeSource:
  """A table whose observations are codes: the source behind `codes_ground_truth`."""

  def __init__(self, codes, factors, factor_names):
    self.name = "codes"
    self._codes, self._factors = codes, factors
    self.info = types.SimpleNamespace(factor_sizes=None, factor_names=factor_names)

  def __len__(self) -> int:
    return len(self._codes)

  def get(self, rows):
    return {"image": self._codes[rows], "factors": self._factors[rows]}


def codes_ground_truth(codes: np.ndarray, factors: np.ndarray,
                       factor_names: Sequence[str] | None = None) -> TableGroundTruth:
  """A ground truth whose observations are precomputed codes (n, d) with their factors
  (n, F) (any labels; each column is re-indexed 0..m-1): with the identity as
  representation, BetaVAE and FactorVAE score fixed data, drawing their groups among
  the rows that share a factor value."""
  codes, factors = _check_codes_factors(codes, factors, "codes_ground_truth")
  indexed = np.stack([np.unique(col, return_inverse=True)[1].reshape(-1)
                      for col in factors.T], axis=1)
  names = tuple(factor_names) if factor_names is not None else None
  return TableGroundTruth(_CodeSource(codes, indexed, names), factors=indexed)


def _identity(x):
  return x


def scores(*, codes: np.ndarray | None = None, factors: np.ndarray | None = None,
           codes_test: np.ndarray | None = None, factors_test: np.ndarray | None = None,
           represent: Represent | None = None, ground_truth: GroundTruth | None = None,
           rng: np.random.Generator | int | None = None, metrics: Sequence[str] = METRICS,
           discretizer="histogram", num_bins: int = 20, dci_importance: str = "gbt",
           train_fraction: float = 2 / 3, sizes: dict | None = None,
           factor_names: Sequence[str] | None = None,
           dci_random_state: int | None = None) -> Scores:
  """Disentanglement scores of any representation, with their parts.

  Either precomputed `codes` (n, d) and `factors` (n, F) (disentanglement_lib's
  `compute_*_on_fixed_data`), or a `represent` function (a batch of observations ->
  (batch, d) codes) and a `ground_truth` (`ProceduralGroundTruth`, `TableGroundTruth`,
  `ground_truth_from_source(source)`) to sample from with disentanglement_lib's
  protocols and sample sizes (`sizes` overrides `default_sizes()`).

  On fixed data, MIG uses every row; DCI trains on `codes_test`/`factors_test`'s
  complement: the rows given as `codes`, tested on `codes_test`, or, without them, on
  the first `train_fraction` of the rows, tested on the rest (dlib's split_train_test);
  BetaVAE and FactorVAE draw their groups among the rows (`codes_ground_truth`).
  `discretizer` ("histogram", dlib's equal widths; "quantile", equal mass; or a function
  (codes, num_bins) -> bins) and `num_bins` are MIG's; `dci_importance` is "gbt"
  (dlib's boosted trees, exact) or "forest". `rng` (a Generator or a seed) drives all
  sampling and, unless `dci_random_state` fixes it, the boosted trees' seed (sklearn's
  `random_state`; disentanglement_lib leaves it unseeded); each metric gets its own
  child generator.

  Example, scoring codes computed elsewhere::

    from vaelab.evaluate import disentanglement
    s = disentanglement.scores(codes=z, factors=y)       # z (n, d) float, y (n, F) int
    s.mig.mig, s.mig.per_factor, s.mig.mutual_information  # float, (F,), (d, F)
    s.dci.disentanglement, s.dci.importance                # float, (d, F)
    s.dci.per_code_disentanglement, s.dci.per_factor_completeness
    s.betavae["betavae_score"], s.factorvae["factorvae_score"]
    disentanglement.scores(codes=z, factors=y, metrics=("mig",), discretizer="quantile")

  and a model's encoder on procedural dSprites::

    gt = disentanglement.ground_truth_from_source(vaelab.data.dsprites.DSpritesSource())
    s = disentanglement.scores(represent=lambda x: np.asarray(encode(x)), ground_truth=gt,
                               sizes={"num_train": 2000, "num_eval": 1000})
  """
  unknown = set(metrics) - set(METRICS)
  if unknown:
    raise ValueError(f"metrics={tuple(metrics)}: unknown {sorted(unknown)}; expected some of "
                     f"{METRICS}")
  if dci_importance not in DCI_IMPORTANCE:  # refused before any metric runs
    raise ValueError(f"dci_importance={dci_importance!r}: expected one of {DCI_IMPORTANCE}")
  _discretizer(discretizer)
  fixed = codes is not None or factors is not None
  if fixed == (represent is not None or ground_truth is not None):
    raise ValueError("scores: give either codes= and factors= (fixed data) or represent= "
                     "and ground_truth= (sampled), not both or neither")
  rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
      0 if rng is None else rng)
  s = _checked_sizes(sizes)
  children = dict(zip(METRICS, rng.spawn(len(METRICS))))
  out = Scores(factor_names=tuple(factor_names) if factor_names is not None else
               getattr(ground_truth, "factor_names", None))
  if not fixed:
    if represent is None or ground_truth is None:
      raise ValueError("scores: represent= and ground_truth= go together")
    calls = _metric_calls(represent, ground_truth, s, discretizer, num_bins, dci_importance)
    for name in metrics:
      setattr(out, name, calls[name](children[name]))
    return out

  if codes is None or factors is None:
    raise ValueError("scores: codes= and factors= go together")
  codes, factors = _check_codes_factors(codes, factors, "scores")
  if "mig" in metrics:
    out.mig = mig_from_codes(codes, factors, discretizer=discretizer, num_bins=num_bins)
  if "dci" in metrics:
    if (codes_test is None) != (factors_test is None):
      raise ValueError("scores: codes_test= and factors_test= go together")
    if codes_test is None:
      if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction}: expected a number in (0, 1)")
      pivot = int(len(codes) * train_fraction)
      split = codes[:pivot], factors[:pivot], codes[pivot:], factors[pivot:]
    else:
      split = (codes, factors) + _check_codes_factors(codes_test, factors_test, "scores")
    seed = (int(children["dci"].integers(2**31 - 1)) if dci_random_state is None
            else dci_random_state)
    out.dci = dci_from_codes(*split, importance=dci_importance, random_state=seed)
  table = [m for m in ("betavae", "factorvae") if m in metrics]
  if table:
    gt = codes_ground_truth(codes, factors, factor_names)
    calls = _metric_calls(_identity, gt, s, discretizer, num_bins, dci_importance)
    for name in table:
      setattr(out, name, calls[name](children[name]))
  return out


def disentanglement_metrics(represent: Represent, ground_truth: GroundTruth,
                            rng: np.random.Generator, sizes: dict | None = None, *,
                            dci_importance: str = "gbt", discretizer="histogram",
                            num_bins: int = 20) -> dict[str, float]:
  """All four scores (and their by-products) as a flat dict of `eval/` floats.

  `sizes` overrides entries of `default_sizes()` (an unknown key is an error, as
  a misspelled config key is). Each metric draws from its own child generator,
  so shrinking one metric's sample does not change the others' draws. A model
  whose codes are not finite gets NaN scores instead of an exception.
  `dci_importance` ("gbt": disentanglement_lib's boosted trees, the default; "forest")
  and MIG's `discretizer` / `num_bins` are as in `scores`, which also returns the
  per-factor values and matrices behind these numbers.
  """
  if dci_importance not in DCI_IMPORTANCE:
    raise ValueError(f"dci_importance={dci_importance!r}: expected one of {DCI_IMPORTANCE}")
  _discretizer(discretizer)
  s = _checked_sizes(sizes)
  calls = _metric_calls(represent, ground_truth, s, discretizer, num_bins, dci_importance)
  main = {"betavae": "betavae_score", "factorvae": "factorvae_score", "mig": "mig",
          "dci": "dci_disentanglement"}
  out = {}
  for (name, call), child in zip(calls.items(), rng.spawn(len(calls))):
    try:
      result = Scores(**{name: call(child)}).as_dict()
    except NonFiniteCodesError:
      _log.warning("%s: the representation is not finite; reporting NaN", main[name])
      result = {main[name]: float("nan")}
    out.update({f"eval/{k}": float(v) for k, v in result.items()})
  return out
