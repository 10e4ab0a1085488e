"""Discretizers of codes into integer bins, for the metrics that estimate a discrete mutual
information (MIG).

A discretizer is a function (codes (n, d), num_bins) -> integer bins (n, d);
disentanglement_lib's is the equal-width histogram with 20 bins.
"""
from __future__ import annotations

import numpy as np


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


def resolve(discretizer):
  """The function `discretizer` names ("histogram", "quantile"), or `discretizer` itself."""
  if callable(discretizer):
    return discretizer
  if discretizer not in DISCRETIZERS:
    raise ValueError(f"discretizer={discretizer!r}: expected one of {sorted(DISCRETIZERS)} "
                     "or a function (codes (n, d), num_bins) -> integer bins (n, d)")
  return DISCRETIZERS[discretizer]

