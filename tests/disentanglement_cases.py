"""Representations and ground truths shared by the disentanglement tests.

The synthetic ground truth's observations are the factor values themselves, so the
representation is chosen exactly: the true factors (each score at its maximum), noise
(chance), or factors mixed (a value the protocol fixes).
"""
from __future__ import annotations

import itertools

import numpy as np

from vaelab.data.base import InMemorySource
from vaelab.evaluate import disentanglement as dis

SIZES = (3, 6, 10, 10)
SMALL = {"num_train": 600, "num_eval": 300, "batch_size": 16, "num_variance_estimate": 600,
         "represent_batch_size": 128}
MAIN = ("eval/betavae_score", "eval/factorvae_score", "eval/mig", "eval/dci_disentanglement")


def synthetic(sizes=SIZES):
  return dis.ProceduralGroundTruth(lambda f: np.asarray(f, np.float32), sizes)


def identity(x):
  # Different units per code: no score may depend on the codes sharing a scale.
  return x * np.array([1.0, 0.5, 2.0, 1.5])[:x.shape[1]]


def mixed(x):
  z = np.array(x, np.float64)
  z[:, 2], z[:, 3] = x[:, 2] + x[:, 3], x[:, 2] - x[:, 3]
  return z


def mixed_first_two(x):
  z = np.array(x, np.float64)
  z[:, 0], z[:, 1] = x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]
  return z


def noise_fn(seed):
  rng = np.random.default_rng(seed)
  return lambda x: rng.normal(size=(len(x), 4))


def fixed_data(n, seed=0):
  rng = np.random.default_rng(seed)
  y = np.stack([rng.integers(0, s, n) for s in (2, 3, 5)], axis=1)
  z = np.concatenate([y + 0.4 * rng.normal(size=(n, 3)), rng.normal(size=(n, 2))], axis=1)
  z[:, :3] = z[:, :3] @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0]])
  return z, y


def table_source(keep=0.7, seed=0, sizes=(3, 4, 5), duplicates=True):
  """Images that spell out their factors; a random part of the grid, some rows twice."""
  rng = np.random.default_rng(seed)
  grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
  rows = grid[rng.random(len(grid)) < keep]
  if duplicates:
    rows = np.concatenate([rows, rows[:5]])
  rows = rows[rng.permutation(len(rows))]
  image = rows.astype(np.float32).reshape(len(rows), 1, 1, len(sizes))
  src = InMemorySource("table", image, factors=rows, factor_sizes=sizes)
  return src, grid, rows


def identity_observations(num_factors=10, num_values=10):
  """disentanglement_lib's IdentityObservationsData: the observations are the factors."""
  return dis.ProceduralGroundTruth(lambda f: np.asarray(f, np.float64),
                                   (num_values,) * num_factors)
