"""Image grids written as PNG files."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
  """(N, H, W, C) in [0, 1] -> one (rows*(H+pad), ncols*(W+pad), C) canvas."""
  images = np.clip(np.asarray(images, np.float32), 0, 1)
  n, h, w, c = images.shape
  nrows = -(-n // ncols)
  canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, ncols)
    canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
           pad + col * (w + pad):pad + col * (w + pad) + w] = img
  return canvas


def save_grid(images, path: str, ncols: int = 8) -> str:
  canvas = tile(images, ncols)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if canvas.shape[-1] == 1:
    plt.imsave(path, canvas[..., 0], cmap="gray", vmin=0, vmax=1)
  else:
    plt.imsave(path, canvas)
  return path


def save_reconstructions(originals, reconstructions, path: str, ncols: int = 8) -> str:
  """Rows of originals, each followed by the row of their reconstructions."""
  originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
  n = (len(originals) // ncols) * ncols or len(originals)
  rows = []
  for start in range(0, n, ncols):
    rows += [originals[start:start + ncols], reconstructions[start:start + ncols]]
  return save_grid(np.concatenate(rows), path, ncols)
