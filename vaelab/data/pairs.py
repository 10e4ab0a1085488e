"""Pairs of images that differ in a few ground-truth factors: the weakly-supervised data of
Locatello et al. 2020 ("Weakly-Supervised Disentanglement Without Compromises").

A pair's first image is the training split's example the batch visits (a uniform draw over
the split, as every batch is); its second has the same factors but k of them, chosen as
disentanglement_lib's `simple_dynamics` chooses them (methods/weak/train_weak_lib.py):

  k_observed = k, or for k = -1 a draw from randint(1, F) (F: the factors that vary);
  the number changed is a uniform choice between 1 and k_observed;
  that many distinct factors, uniformly, each given a new value uniform over its range
  (which may be its old value: dlib draws it the same way).

The label of a pair (`pair_label`, for the `labels` aggregation) is the last factor chosen,
numbered among the factors that vary (dSprites: shape 0, scale 1, orientation 2, pos_x 3,
pos_y 4, dlib's numbering; the colour takes one value and never changes).

The second image is drawn from the whole factor grid, as dlib draws it, the held-out images
included. Which factors change is a function of (seed, step, row of the global batch)
through `spmd.example_keys` (the stream `PAIR_STREAM` of each example's key, apart from
the step's binarization and sampling streams), so a pair does not depend on the device
count, on a population, or on where a run was resumed. On the device (`DeviceForm.keyed`)
both images are rendered in one call from the renderer's tables, and the host path gives
the same arrays bitwise.

A batch's "image" is (n, 2, H, W, C): the step binarizes both images as any image, and a
family of pairs reads them apart (models/weak_vae.py); "factors" is (n, 2, F_all).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaelab import spmd
from vaelab.data.base import DeviceForm, SourceInfo, SubsetSource
from vaelab.errors import ConfigError

# The stream of an example's key that draws its pair (the step uses streams 0 and 1).
PAIR_STREAM = 2
# Keys of examples asked for outside the train step (a host `get` without keys).
_UNKEYED_SEED = 0


_example_keys = jax.jit(spmd.example_keys)


def pair_factors(keys, factors, varying: tuple, sizes: tuple, k: int):
  """(second image's factors (n, F_all) int32, labels (n,) int32) of first images' factors
  `factors` (n, F_all), one pair per key: the factors at positions `varying` (with `sizes`
  values each) may change, as `simple_dynamics` changes them for `k` (-1: drawn per pair)."""
  varying_idx = jnp.asarray(varying, jnp.int32)
  num = len(varying)
  sizes = jnp.asarray(sizes, jnp.int32)

  def one(key, f):
    key = jax.random.fold_in(key, PAIR_STREAM)
    k_key, n_key, order_key, value_key = jax.random.split(key, 4)
    k_observed = jnp.int32(k) if k != -1 else jax.random.randint(k_key, (), 1, num)
    changed = jnp.where(jax.random.bernoulli(n_key), k_observed, 1)
    order = jax.random.permutation(order_key, num)  # choice(num, changed, replace=False)
    chosen = jnp.zeros((num,), bool).at[order].set(jnp.arange(num) < changed)
    values = jax.random.randint(value_key, (num,), 0, sizes)
    new = jnp.where(chosen, values, f[varying_idx])
    return f.at[varying_idx].set(new), order[changed - 1]

  return jax.vmap(one)(keys, jnp.asarray(factors, jnp.int32))


def _strides(sizes) -> np.ndarray:
  return np.array([int(np.prod(sizes[i + 1:])) for i in range(len(sizes))], np.int64)


class PairSource:
  """Pairs (first image, second image with k factors changed) over a training split whose
  examples come from a factor grid `grid`: a source indexed by the row-major index of its
  factors (procedural dSprites' whole grid), `indices` the split's rows of it."""

  keyed = True

  def __init__(self, grid, indices: np.ndarray, k: int, name: str):
    self._grid, self._indices = grid, np.asarray(indices)
    sizes = tuple(int(s) for s in grid.info.factor_sizes)
    self.factor_sizes = sizes
    self.varying = tuple(i for i, s in enumerate(sizes) if s > 1)
    self.varying_sizes = tuple(sizes[i] for i in self.varying)
    self.k = int(k)
    self.name = name
    base = grid.info
    self.info = SourceInfo(image_shape=(2, *base.image_shape), has_label=False,
                           factor_sizes=base.factor_sizes, factor_names=base.factor_names)
    self._strides = _strides(sizes)
    self._pairs = jax.jit(functools.partial(pair_factors, varying=self.varying,
                                            sizes=self.varying_sizes, k=self.k))

  @property
  def single_info(self) -> SourceInfo:
    """The info of one image of a pair."""
    return self._grid.info

  def __len__(self) -> int:
    return len(self._indices)

  def get(self, indices: np.ndarray, keys=None) -> dict[str, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    if keys is None:
      keys = _example_keys(np.uint32(_UNKEYED_SEED), np.uint32(spmd.EVAL_STREAM),
                           indices.astype(np.int32))
    first = self._indices[indices]
    factors = (first[:, None] // self._strides) % np.asarray(self.factor_sizes)
    second_factors, labels = map(np.asarray, self._pairs(keys, factors.astype(np.int32)))
    second = second_factors.astype(np.int64) @ self._strides
    out = self._grid.get(np.concatenate([first, second]))
    n = len(indices)
    return {"image": np.stack([out["image"][:n], out["image"][n:]], axis=1),
            "factors": np.stack([out["factors"][:n], out["factors"][n:]], axis=1),
            "pair_label": labels.astype(np.int32)}

  def device_form(self) -> DeviceForm | None:
    grid = self._grid.device_form() if hasattr(self._grid, "device_form") else None
    if grid is None:
      return None
    strides = self._strides.astype(np.int32)
    sizes = np.asarray(self.factor_sizes, np.int32)
    pairs = functools.partial(pair_factors, varying=self.varying, sizes=self.varying_sizes,
                              k=self.k)

    def get(arrays, indices, keys):
      first = jnp.take(arrays["indices"], indices)
      factors = (first[:, None] // strides) % sizes
      second_factors, labels = pairs(keys, factors)
      second = jnp.sum(second_factors * strides, axis=-1)
      out = grid.get(arrays["grid"], jnp.concatenate([first, second]))
      n = indices.shape[0]
      return {"image": jnp.stack([out["image"][:n], out["image"][n:]], axis=1),
              "factors": jnp.stack([out["factors"][:n], out["factors"][n:]], axis=1),
              "pair_label": labels}

    return DeviceForm({"grid": grid.arrays, "indices": self._indices.astype(np.int32)}, get,
                      fuse=grid.fuse, keyed=True)


def _check_grid(grid, sizes) -> None:
  """Refuses a source whose rows are not the row-major grid of its factors (checked on a
  few rows: the first, the last and a fixed sample)."""
  n = int(np.prod(sizes))
  rows = np.unique(np.concatenate([[0, n - 1], np.random.default_rng(0).integers(0, n, 14)]))
  got = np.asarray(grid.get(rows)["factors"])
  want = (rows[:, None] // _strides(sizes)) % np.asarray(sizes)
  if not np.array_equal(got, want):
    raise ConfigError(f"data.name={grid.name!r}: its examples are not the row-major grid of "
                      f"its factors, which pairs need to find an image by its factors")


def pair_source(train, k: int):
  """The pairs over training split `train`: a source whose examples are a whole factor grid
  (len = the product of its factor sizes, in row-major order), or a subset of one."""
  grid, indices = train, None
  if isinstance(train, SubsetSource):
    grid, indices = train._source, train._indices
  sizes = grid.info.factor_sizes
  if sizes is None or len(grid) != int(np.prod(sizes)):
    raise ConfigError(f"data.name={train.name!r}: pairs need a source with ground-truth "
                      f"factors whose examples are their whole grid (procedural_dsprites)")
  _check_grid(grid, sizes)
  num_varying = sum(int(s) > 1 for s in sizes)
  k = int(k)
  if not (k == -1 or 1 <= k <= num_varying) or (k == -1 and num_varying < 2):
    raise ConfigError(f"data.pair_k={k}: expected the number of factors a pair changes, 1 to "
                      f"{num_varying} (the factors of {train.name!r} that vary), or -1 to "
                      f"draw it per pair (needs at least 2 such factors)")
  if indices is None:
    indices = np.arange(len(grid))
  return PairSource(grid, indices, k, name=f"{train.name}/pairs")
