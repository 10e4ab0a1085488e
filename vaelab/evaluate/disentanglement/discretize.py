"""Discretizers of codes into integer bins, and the discrete mutual information they feed
(MIG, Modularity, IRS's factors, the unsupervised mutual-information score).

A discretizer is a function (codes (n, d), num_bins) -> integer bins (n, d);
disentanglement_lib's is the equal-width histogram with 20 bins.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import metrics as sk_metrics


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


def mutual_information(binned: np.ndarray, labels: np.ndarray,
                       columns: Sequence[int]) -> np.ndarray:
  """(d, L) mutual information in nats between each column of `binned` (n, d) and each
  of the `columns` of `labels` (n, L); NaN in the other columns. Each entry is
  disentanglement_lib's `mutual_info_score(label, code)`, in that argument order."""
  mi = np.full((binned.shape[1], labels.shape[1]), np.nan)
  for k in columns:
    mi[:, k] = [sk_metrics.mutual_info_score(labels[:, k], binned[:, i])
                for i in range(binned.shape[1])]
  return mi
