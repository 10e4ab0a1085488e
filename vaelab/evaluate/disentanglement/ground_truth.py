"""Ground truths: the factors of variation and the observations they generate.

The metrics need more than a data set: they must draw observations whose factors
share a chosen value. `GroundTruth` is that interface, with two implementations:

  * `ProceduralGroundTruth`: any factor combination can be rendered
    (procedural dSprites, `vaelab.data.dsprites.render`);
  * `TableGroundTruth`: a finite data set with a `factors` array (npz, TFDS
    dsprites/shapes3d); observations are real rows, and a group with a fixed
    factor is drawn among the rows that have the value, so no metric ever asks
    for a combination the data set lacks.

`codes_ground_truth` is a table whose observations are precomputed codes: with the
identity as representation, the sampled protocols score fixed data.
"""
from __future__ import annotations

import copy

import types
from typing import Callable, Protocol, Sequence

import numpy as np

from vaelab.data import dsprites
from vaelab.evaluate.disentanglement import sampling

# Rows read per `get` call when a table's factors are collected.
_TABLE_READ_CHUNK = 4096


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
  """Indices of the factors that take more than one value (the ones the metrics score).

  Constant factors (size 1, such as dSprites' color) are left out of every score:
  disentanglement_lib's dSprites drops color from its factors (its
  `latent_factor_indices` are 1..5), and a factor that never varies can be neither
  predicted from nor measured by a code.
  """
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

  def blind(self) -> "ProceduralGroundTruth":
    """This ground truth drawing the same factors from the same generator, with (n, 0)
    placeholders for observations: a replay of codes encoded once (`members`)."""
    return ProceduralGroundTruth(lambda f: np.zeros((len(f), 0), np.float32),
                                 self.factor_sizes, self.factor_names)

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

  def blind(self) -> "TableGroundTruth":
    """This ground truth drawing the same rows from the same generator, with (n, 0)
    placeholders for observations: a replay of codes encoded once (`members`)."""
    other = copy.copy(self)
    other._images = lambda rows: np.zeros((len(rows), 0), np.float32)
    return other

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

  def covers_grid(self) -> bool:
    """Whether every combination of the factor values has a row (a file of the whole
    grid), so that pictures may ask for any combination."""
    if self._lookup is None:
      self._build_lookup()
    keys = self._lookup[0]
    distinct = 1 + int(np.count_nonzero(keys[1:] != keys[:-1])) if len(keys) else 0
    return distinct == int(np.prod(np.array(self.factor_sizes, np.float64)))

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
  root = source
  while root is not None and not hasattr(root, "render_factors") and not hasattr(
      root, "table_factors"):
    root = getattr(root, "_source", None)
  if root is not None and hasattr(root, "render_factors"):
    # A procedural set (the dSprites variants): every combination, drawn uniformly.
    return ProceduralGroundTruth(root.render_factors, root.info.factor_sizes,
                                 root.info.factor_names)
  if root is not None:
    # An official file: its whole table (as dlib samples the whole data set), the factors
    # given, so that no image is read to collect them.
    return TableGroundTruth(root, factors=root.table_factors)
  return TableGroundTruth(source)


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
  codes, factors = sampling.check_codes_factors(codes, factors, "codes_ground_truth")
  indexed = np.stack([np.unique(col, return_inverse=True)[1].reshape(-1)
                      for col in factors.T], axis=1)
  names = tuple(factor_names) if factor_names is not None else None
  return TableGroundTruth(_CodeSource(codes, indexed, names), factors=indexed)
