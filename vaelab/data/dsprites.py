"""Procedural dSprites: 2D shapes rendered on the fly from their factor values.

dSprites (Matthey et al. 2017) is the standard benchmark for disentanglement:
every 64x64 binary image is fully determined by six independent factors
(color, shape, scale, orientation, pos_x, pos_y), and the dataset is the full
Cartesian product of their values, 1 * 3 * 6 * 40 * 32 * 32 = 737280 images.

We regenerate the images here instead of loading the published npz because

  * nothing has to be downloaded (no network, no 26 MB file, no licence
    bookkeeping), and the 737280 images never have to sit in memory: an image
    is rendered from its index when a batch asks for it;
  * the ground-truth factors come for free and exactly, which is what the
    disentanglement metrics (beta-VAE / FactorVAE score, MIG, ...) need: they
    must both read the factors of an example and render an example with chosen
    factors (`render`, `factors_to_index`).

The images are not pixel-identical to the original sprites, but the factor
grid, the value ranges and the index ordering are those of the original.

Conventions
-----------
Index <-> factors is the mixed-radix, row-major mapping of the original npz:
the last factor (pos_y) varies fastest, the first (color) slowest.

Factor values (as in the original):
  color        1 value   (white)
  shape        3 values  0 = square, 1 = ellipse, 2 = heart
  scale        6 values  linspace(0.5, 1, 6)
  orientation 40 values  linspace(0, 2*pi, 40) (first == last; for the square
                         and the ellipse many orientations coincide too)
  pos_x, pos_y 32 values each, linspace(0, 1, 32)

Image axes: image[row, col, 0]. pos_x moves the shape along the columns
(axis 2 of a batch, left -> right); pos_y moves it along the rows (axis 1,
top -> bottom). A shape's centre (the centroid of its area) lies at pixel
coordinate MARGIN + pos * (64 - 2 * MARGIN) along each axis, pixel j covering
[j, j + 1), so pos = 0 -> 14.5 and pos = 1 -> 49.5, one step = 35/31 ~ 1.13 px.
Orientation theta rotates the shape counter-clockwise as seen on screen.

Sizes at scale 1 (shape coordinates in pixels): the square has side 20 px (its
diagonal half-length 14.14 px is the largest extent of any shape), the ellipse
has semi-axes 12 x 6 px (aspect 2:1, so its orientation is visible), the heart
(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with 10 px per unit is ~23 x 22 px. MARGIN is
chosen larger than the largest extent, so every shape at every position and
orientation lies inside the frame.

A pixel is foreground (1.0) iff its centre lies inside the shape: the centre is
translated to the shape's centre, rotated by -theta, divided by the scale and
passed to the shape's implicit inside-test. Rendering is vectorized over the
batch and evaluated only on a 32x32 window around each shape.
"""
from __future__ import annotations

import numpy as np

from vaelab.data.base import SourceInfo

IMAGE_SIZE = 64
FACTOR_NAMES = ("color", "shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737280

SHAPE_NAMES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)

# Shape geometry at scale 1, in pixels.
SQUARE_HALF_SIDE = 10.0
ELLIPSE_SEMI_AXES = (12.0, 6.0)
HEART_UNIT = 10.0  # pixels per unit of the implicit heart curve
# Centroid of the region (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 is (0, 0.2935); we
# put it at the shape's centre so that rotation and position act on the centroid.
_HEART_CENTROID_Y = 0.2935
# Largest distance of any shape point from its centre at scale 1 (the square's
# half-diagonal; ellipse: 12, heart: 1.2935 * 10 = 12.9).
MAX_EXTENT = SQUARE_HALF_SIDE * np.sqrt(2.0)
MARGIN = 14.5
assert MARGIN > MAX_EXTENT

# Shapes are evaluated on a WINDOW x WINDOW patch whose top-left pixel is
# round(centre - WINDOW / 2); it contains every pixel centre within WINDOW/2 - 1
# of the shape's centre, which must cover MAX_EXTENT.
_WINDOW = 32
assert _WINDOW / 2 - 1 >= MAX_EXTENT

_RADICES = np.array(FACTOR_SIZES, dtype=np.int64)
# Stride of each factor in the flat index (row-major: last factor fastest).
_STRIDES = np.array([int(np.prod(FACTOR_SIZES[i + 1:])) for i in range(len(FACTOR_SIZES))],
                    dtype=np.int64)


def factors_to_index(factors: np.ndarray) -> np.ndarray:
  """(..., 6) integer factor values -> (...,) int64 flat indices."""
  factors = np.asarray(factors)
  if factors.shape[-1:] != (len(FACTOR_SIZES),):
    raise ValueError(f"factors must have a last axis of size {len(FACTOR_SIZES)}, "
                     f"got shape {factors.shape}")
  factors = factors.astype(np.int64)
  bad = (factors < 0) | (factors >= _RADICES)
  if bad.any():
    col = int(np.argwhere(bad)[0][-1])
    raise ValueError(f"factor {FACTOR_NAMES[col]!r} outside [0, {FACTOR_SIZES[col]}): "
                     f"{factors[bad][0]}")
  return factors @ _STRIDES


def index_to_factors(indices: np.ndarray) -> np.ndarray:
  """(...,) flat indices -> (..., 6) int32 factor values (inverse of factors_to_index)."""
  indices = np.asarray(indices)
  if not np.issubdtype(indices.dtype, np.integer):
    raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
  indices = indices.astype(np.int64)
  if indices.size and (indices.min() < 0 or indices.max() >= NUM_IMAGES):
    raise ValueError(f"indices must lie in [0, {NUM_IMAGES}), got range "
                     f"[{indices.min()}, {indices.max()}]")
  return ((indices[..., None] // _STRIDES) % _RADICES).astype(np.int32)


def _centre_px(pos_idx: np.ndarray) -> np.ndarray:
  """Position factor index -> continuous pixel coordinate of the shape's centre."""
  return MARGIN + POSITIONS[pos_idx] * (IMAGE_SIZE - 2 * MARGIN)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside-test in shape coordinates (pixels at scale 1, v pointing up)."""
  if shape == 0:
    return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE
  if shape == 1:
    a, b = ELLIPSE_SEMI_AXES
    return (u * (1.0 / a)) ** 2 + (v * (1.0 / b)) ** 2 <= 1.0
  if shape == 2:
    x = u * (1.0 / HEART_UNIT)
    y = v * (1.0 / HEART_UNIT) + _HEART_CENTROID_Y
    x2 = x * x
    r = x2 + y * y - 1.0
    return r * r * r <= x2 * y * y * y
  raise ValueError(f"unknown shape {shape}")


def render(factors: np.ndarray) -> np.ndarray:
  """(n, 6) int factor values -> (n, 64, 64, 1) float32 images of 0.0 / 1.0."""
  factors = np.asarray(factors)
  factors_to_index(factors)  # validates shape and ranges
  factors = factors.reshape(-1, len(FACTOR_SIZES)).astype(np.int64)
  return _rasterize(factors[:, 1], SCALES[factors[:, 2]], ORIENTATIONS[factors[:, 3]],
                    _centre_px(factors[:, 4]), _centre_px(factors[:, 5]))


def _rasterize(shape: np.ndarray, scale: np.ndarray, theta: np.ndarray, cx: np.ndarray,
               cy: np.ndarray) -> np.ndarray:
  """Render from continuous values: shape id, scale, angle (rad), centre in pixels.

  All arguments are (n,) arrays; the centre must keep the shape inside the canvas
  (within MARGIN of the border, as `render` guarantees).
  """
  shape = np.asarray(shape, dtype=np.int64)
  cx = np.asarray(cx, dtype=np.float64)
  cy = np.asarray(cy, dtype=np.float64)
  n = shape.shape[0]
  out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
  if n == 0:
    return out[..., None]

  # Top-left pixel of each image's window, kept inside the canvas.
  x0 = np.clip(np.round(cx - _WINDOW / 2), 0, IMAGE_SIZE - _WINDOW).astype(np.int64)
  y0 = np.clip(np.round(cy - _WINDOW / 2), 0, IMAGE_SIZE - _WINDOW).astype(np.int64)
  offs = np.arange(_WINDOW)
  cols = x0[:, None] + offs  # (n, W)
  rows = y0[:, None] + offs  # (n, W)
  # Pixel centres relative to the shape's centre; v points up (screen y flipped).
  dx = (cols + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]  # (n, 1, W)
  dy = (cy[:, None] - (rows + 0.5)).astype(np.float32)[:, :, None]  # (n, W, 1)

  theta = np.asarray(theta, dtype=np.float64)
  inv_scale = 1.0 / np.asarray(scale, dtype=np.float64)
  c = (np.cos(theta) * inv_scale).astype(np.float32)[:, None, None]
  s = (np.sin(theta) * inv_scale).astype(np.float32)[:, None, None]

  window = np.zeros((n, _WINDOW, _WINDOW), dtype=bool)
  for shape_id in range(len(SHAPE_NAMES)):  # loop over the 3 shapes, not over images
    sel = np.flatnonzero(shape == shape_id)
    if sel.size == 0:
      continue
    # Rotate by -theta and divide by the scale: shape coordinates.
    u = c[sel] * dx[sel] + s[sel] * dy[sel]
    v = c[sel] * dy[sel] - s[sel] * dx[sel]
    window[sel] = _inside(shape_id, u, v)

  out[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = window
  return out[..., None]


class DSpritesSource:
  """All 737280 dSprites images, rendered on demand; implements ArraySource."""

  name = "dsprites"
  info = SourceInfo(image_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), has_label=False,
                    factor_sizes=FACTOR_SIZES, factor_names=FACTOR_NAMES)

  def __len__(self) -> int:
    return NUM_IMAGES

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    factors = index_to_factors(np.asarray(indices).reshape(-1))
    return {"image": render(factors), "factors": factors}
