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
passed to the shape's implicit inside-test.

One renderer, on the host and on the device
-------------------------------------------
The renderer is jax code (`_canvas`), traced inside the train step through
`DSpritesSource.device_form()` and jitted for the host path (`render`,
`DSpritesSource.get`), so the two cannot diverge; both are bitwise the float32
numpy renderer this module had before (checked over the whole grid). That
takes care, because XLA is free to compile the same float32 expression
differently in different programs:
  * it contracts a * b + c into a fused multiply-add (one rounding instead of
    two) wherever the product feeds an add in the same fusion (on this CPU: 12%
    of the ellipse test's sums differed from numpy's; XLA's GPU backends
    allow the contraction too). The products of the rotation (cos(theta) / scale times a pixel's
    offset) are therefore precomputed on the host as float32 tables, one row
    per (scale, orientation, position) (`tables()`, 3.9 MB), so the device only
    adds and subtracts table rows; the few products that feed an add inside
    the inside-tests pass through `_rounded`, an integer OR with a zero that
    XLA cannot prove to be zero, which it can neither fuse through nor fold
    away (an optimization barrier or reduce_precision is removed before fusion).
  * a division by a constant becomes a multiplication by its reciprocal: the
    code divides by nothing at run time.
Every pixel of the 64x64 canvas is evaluated (the numpy renderer looked at a
32x32 window around the shape: every pixel outside it lies 16 px or more from
the centre along a row or a column, beyond the 14.1 px of the largest shape).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaelab.data.base import DeviceForm, SourceInfo

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
  """Position factor index -> continuous pixel coordinate of the shape's centre (float64)."""
  return MARGIN + POSITIONS[pos_idx] * (IMAGE_SIZE - 2 * MARGIN)


def _offsets(centre: np.ndarray) -> np.ndarray:
  """(m,) float64 centres -> (m, 64) float32 offsets of the pixel centres from them.

  Computed in float64 and rounded once, as the numpy renderer did. An offset along the
  rows is the screen-flipped v of that renderer negated (cy - (row + 0.5) = -offset),
  exactly, since rounding is symmetric.
  """
  return ((np.arange(IMAGE_SIZE) + 0.5)[None, :] - centre[:, None]).astype(np.float32)


def _rotation(theta: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """cos(theta) / scale and sin(theta) / scale, in float64 rounded once to float32."""
  inv_scale = 1.0 / np.asarray(scale, np.float64)
  theta = np.asarray(theta, np.float64)
  return ((np.cos(theta) * inv_scale).astype(np.float32),
          (np.sin(theta) * inv_scale).astype(np.float32))


@functools.lru_cache(maxsize=1)
def tables() -> dict[str, np.ndarray]:
  """The renderer's float32 product tables, the arrays of the device form.

  "cos" and "sin" are (6 * 40, 32, 64): row [scale * 40 + orientation, pos, j] holds
  cos(theta) / scale (resp. sin) times the offset of pixel j from the centre at `pos`,
  rounded to float32 on the host, so no program can fuse these products into adds.
  """
  c, s = _rotation(ORIENTATIONS[None, :], SCALES[:, None])  # (6, 40)
  d = _offsets(_centre_px(np.arange(FACTOR_SIZES[4])))  # (32, 64)
  shape = (FACTOR_SIZES[2] * FACTOR_SIZES[3], FACTOR_SIZES[4], IMAGE_SIZE)
  out = {"cos": (c[:, :, None, None] * d).reshape(shape),
         "sin": (s[:, :, None, None] * d).reshape(shape)}
  for v in out.values():
    v.flags.writeable = False  # shared by every caller
  return out


def _rounded(x, zero):
  """x, bitwise, as a value XLA must materialize: a product passed through this is
  rounded to float32 before it is added (no fused multiply-add). `zero` is an int32 zero
  computed from the inputs, so no compiler pass can fold the OR away."""
  return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, jnp.int32) | zero,
                                      jnp.float32)


def _canvas(shape, cos_col, sin_col, cos_row, sin_row):
  """(n, 64, 64, 1) float32 images of 0 / 1 from the shape ids (n,) int32 and, per image,
  the (n, 64) rows of cos(theta) / scale (resp. sin) times the pixels' offsets from the
  centre along the columns (x) and along the rows.

  Shape coordinates of pixel (row, col), v pointing up (offsets along the rows point down):
    u =  cos * dx + sin * dy =  cos_col[col] - sin_row[row]
    v =  cos * dy - sin * dx = -cos_row[row] - sin_col[col]
  """
  zero = jnp.minimum(shape, 0)[:, None, None]  # shape ids are >= 0; XLA cannot know it
  u = cos_col[:, None, :] - sin_row[:, :, None]
  v = -cos_row[:, :, None] - sin_col[:, None, :]
  square = jnp.maximum(jnp.abs(u), jnp.abs(v)) <= SQUARE_HALF_SIDE
  a = u * (1.0 / ELLIPSE_SEMI_AXES[0])
  b = v * (1.0 / ELLIPSE_SEMI_AXES[1])
  ellipse = _rounded(a * a, zero) + _rounded(b * b, zero) <= 1.0
  x = u * (1.0 / HEART_UNIT)
  y = _rounded(v * (1.0 / HEART_UNIT), zero) + _HEART_CENTROID_Y
  x2 = x * x
  r = _rounded(x2, zero) + _rounded(y * y, zero) - 1.0
  heart = r * r * r <= x2 * y * y * y
  shape = shape[:, None, None]
  inside = jnp.where(shape == 0, square, jnp.where(shape == 1, ellipse, heart))
  return inside.astype(jnp.float32)[..., None]


def _render_factors(arrays, factors):
  """(n, 6) int32 factors -> images, reading the rotation products from `tables()`."""
  row = factors[:, 2] * FACTOR_SIZES[3] + factors[:, 3]
  cos, sin = jnp.asarray(arrays["cos"]), jnp.asarray(arrays["sin"])  # numpy when closed over
  px, py = factors[:, 4], factors[:, 5]
  return _canvas(factors[:, 1], cos[row, px], sin[row, px], cos[row, py], sin[row, py])


_STRIDES32 = _STRIDES.astype(np.int32)
_RADICES32 = _RADICES.astype(np.int32)


def device_get(arrays, indices):
  """The device form's get: int32 indices (n,) -> {"image", "factors"}, traceable in jit."""
  indices = jnp.asarray(indices, jnp.int32)
  factors = (indices[:, None] // _STRIDES32) % _RADICES32
  return {"image": _render_factors(arrays, factors), "factors": factors}


_render_jit = jax.jit(_render_factors)
_canvas_jit = jax.jit(_canvas)

# Host requests are rendered in chunks of at most _CHUNK images (32 MB of output each), each
# padded to 64, 256, 1024 or _CHUNK images: a process compiles at most four shapes, and a
# small request renders at most 4x the images it asked for, still a small render.
_CHUNK = 2048
_MIN_BUCKET = 64


@functools.lru_cache(maxsize=1)
def _host_tables():
  return jax.device_put(tables())


def _buckets(n: int):
  """(start, stop, padded size) of the chunks of an n-image request."""
  for start in range(0, n, _CHUNK):
    stop = min(n, start + _CHUNK)
    size = _MIN_BUCKET
    while size < stop - start:
      size *= 4
    yield start, stop, min(size, _CHUNK)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)])


def render(factors: np.ndarray) -> np.ndarray:
  """(n, 6) int factor values -> (n, 64, 64, 1) float32 numpy images of 0.0 / 1.0.

  The jitted device renderer, run on jax's default device in bounded chunks.
  """
  factors = np.asarray(factors)
  factors_to_index(factors)  # validates shape and ranges
  factors = factors.reshape(-1, len(FACTOR_SIZES)).astype(np.int32)
  out = np.empty((len(factors), IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
  for start, stop, size in _buckets(len(factors)):
    out[start:stop] = np.asarray(
        _render_jit(_host_tables(), _pad(factors[start:stop], size)))[:stop - start]
  return out


def _rasterize(shape: np.ndarray, scale: np.ndarray, theta: np.ndarray, cx: np.ndarray,
               cy: np.ndarray) -> np.ndarray:
  """Render from continuous values: shape id, scale, angle (rad), centre in pixels.

  All arguments are (n,) arrays; the centre must keep the shape inside the canvas (within
  MARGIN of the border, as `render` guarantees). The products are rounded on the host,
  as `tables()` rounds them for the grid.
  """
  shape = np.asarray(shape, np.int32).reshape(-1)
  if shape.size == 0:
    return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
  c, s = _rotation(theta, scale)
  dx = _offsets(np.asarray(cx, np.float64).reshape(-1))
  dy = _offsets(np.asarray(cy, np.float64).reshape(-1))
  c, s = c.reshape(-1, 1), s.reshape(-1, 1)
  return np.asarray(_canvas_jit(shape, c * dx, s * dx, c * dy, s * dy))


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

  def device_form(self) -> DeviceForm:
    """The same renderer on the device: 3.9 MB of tables, no host work per batch. Its own
    dispatch: compiled into the default job's train step it made the loop slower (fused and
    unfused runs alternating), with or without a barrier on the batch."""
    return DeviceForm(arrays=tables(), get=device_get, fuse=False)
