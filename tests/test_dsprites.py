"""Tests for the procedural dSprites source (vaelab.data.dsprites)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab.data import dsprites as ds
from vaelab.data.base import InMemorySource, SourceInfo, SubsetSource

SIZES = (1, 3, 6, 40, 32, 32)
NAMES = ("color", "shape", "scale", "orientation", "pos_x", "pos_y")
SQUARE, ELLIPSE, HEART = 0, 1, 2
# Documented centre of a shape along an axis: pos 0 -> 14.5 px, pos 1 -> 49.5 px.
CENTRE_LO, CENTRE_HI = 14.5, 49.5
STEP_PX = (CENTRE_HI - CENTRE_LO) / 31


def _f(shape, scale=5, orient=0, x=16, y=16):
  return [0, shape, scale, orient, x, y]


def _render(rows):
  return ds.render(np.array(rows, dtype=np.int32))[..., 0]


def _centroid(img):
  """(row, col) centroid of a (64, 64) binary image."""
  r, c = np.nonzero(img)
  return r.mean(), c.mean()


def _iou(a, b):
  a, b = a > 0.5, b > 0.5
  return (a & b).sum() / (a | b).sum()


# ------------------------------------------------------------------ source / info


def test_len_and_info():
  src = ds.DSpritesSource()
  assert len(src) == 737280 == int(np.prod(SIZES))
  assert src.name == "dsprites"
  assert isinstance(src.info, SourceInfo)
  assert src.info.image_shape == (64, 64, 1)
  assert tuple(src.info.factor_sizes) == SIZES
  assert tuple(src.info.factor_names) == NAMES
  assert src.info.has_label is False


def test_get_types_shapes_binary():
  src = ds.DSpritesSource()
  idx = np.random.default_rng(0).integers(0, len(src), size=300)
  out = src.get(idx)
  assert set(out) == {"image", "factors"}
  img, fac = out["image"], out["factors"]
  assert img.dtype == np.float32 and img.shape == (300, 64, 64, 1)
  assert fac.dtype == np.int32 and fac.shape == (300, 6)
  assert np.all((img == 0.0) | (img == 1.0))
  np.testing.assert_array_equal(fac, ds.index_to_factors(idx))
  # Every image is non-empty.
  assert np.all(img.reshape(300, -1).sum(1) > 0)


def test_get_deterministic_and_batch_independent():
  src = ds.DSpritesSource()
  idx = np.array([5, 123456, 737279, 400000, 5])
  a, b = src.get(idx), src.get(idx)
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["factors"], b["factors"])
  # Same index twice in a batch -> same image; order and batch mates don't matter.
  np.testing.assert_array_equal(a["image"][0], a["image"][4])
  rev = src.get(idx[::-1])
  np.testing.assert_array_equal(rev["image"], a["image"][::-1])
  one = src.get(np.array([123456]))
  np.testing.assert_array_equal(one["image"][0], a["image"][1])


# ------------------------------------------------------------------ index <-> factors


def test_index_ordering_is_row_major_pos_y_fastest():
  np.testing.assert_array_equal(ds.index_to_factors(np.array([0]))[0], [0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(ds.index_to_factors(np.array([737279]))[0],
                                [s - 1 for s in SIZES])
  np.testing.assert_array_equal(ds.index_to_factors(np.array([1]))[0], [0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(ds.index_to_factors(np.array([32]))[0], [0, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(ds.index_to_factors(np.array([32 * 32]))[0],
                                [0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(ds.index_to_factors(np.array([40 * 32 * 32]))[0],
                                [0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(ds.index_to_factors(np.array([6 * 40 * 32 * 32]))[0],
                                [0, 1, 0, 0, 0, 0])
  assert int(ds.factors_to_index(np.array([0, 2, 5, 39, 31, 31]))) == 737279
  assert int(ds.factors_to_index(np.array([0, 1, 2, 3, 4, 5]))) == (
      1 * 6 * 40 * 32 * 32 + 2 * 40 * 32 * 32 + 3 * 32 * 32 + 4 * 32 + 5)


def test_index_factor_round_trip():
  rng = np.random.default_rng(1)
  idx = np.concatenate([[0, 737279], rng.integers(0, 737280, size=5000)])
  fac = ds.index_to_factors(idx)
  assert fac.dtype == np.int32 and fac.shape == (len(idx), 6)
  assert np.all(fac >= 0) and np.all(fac < np.array(SIZES))
  np.testing.assert_array_equal(ds.factors_to_index(fac), idx)
  # And the other direction, from random factors.
  fac2 = np.stack([rng.integers(0, s, size=1000) for s in SIZES], axis=1)
  np.testing.assert_array_equal(ds.index_to_factors(ds.factors_to_index(fac2)), fac2)


def test_out_of_range_rejected():
  with pytest.raises(ValueError):
    ds.index_to_factors(np.array([737280]))
  with pytest.raises(ValueError):
    ds.index_to_factors(np.array([-1]))
  with pytest.raises(ValueError):
    ds.factors_to_index(np.array([0, 3, 0, 0, 0, 0]))
  with pytest.raises(ValueError):
    ds.render(np.array([[0, 0, 0, 40, 0, 0]]))


# ------------------------------------------------------------------ geometry


def test_shapes_stay_inside_frame():
  # Largest scale, extreme positions (corners), every orientation, every shape.
  rows = [_f(sh, 5, o, x, y) for sh in range(3) for o in range(40)
          for x in (0, 31) for y in (0, 31)]
  imgs = _render(rows)
  area = imgs.reshape(len(rows), -1).sum(1)
  assert np.all(area > 0)
  border = imgs.copy()
  border[:, 1:-1, 1:-1] = 0
  frac = border.reshape(len(rows), -1).sum(1) / area
  assert frac.max() < 0.02, f"max border fraction {frac.max():.3f}"


def test_shape_sizes_are_plausible():
  sq, el, he = _render([_f(SQUARE), _f(ELLIPSE), _f(HEART)])
  # Square at scale 1 is about a third of the frame wide.
  r, c = np.nonzero(sq)
  assert 16 <= c.max() - c.min() + 1 <= 24 and 16 <= r.max() - r.min() + 1 <= 24
  # Ellipse at orientation 0 is elongated horizontally, aspect ~2:1.
  r, c = np.nonzero(el)
  w, h = c.max() - c.min() + 1, r.max() - r.min() + 1
  assert 1.6 < w / h < 2.5
  # Heart: tip points down at orientation 0 -> the bottom row is much narrower
  # than the widest row, and the widest row lies in the upper half.
  r, c = np.nonzero(he)
  widths = he.sum(1)[r.min():r.max() + 1]
  assert widths[-1] < 0.3 * widths.max()
  assert np.argmax(widths) < len(widths) / 2


def test_random_images_nonempty():
  rng = np.random.default_rng(2)
  imgs = ds.DSpritesSource().get(rng.integers(0, 737280, size=512))["image"]
  assert np.all(imgs.reshape(512, -1).sum(1) >= 20)


def test_area_grows_with_scale():
  for sh in range(3):
    for o, x, y in [(0, 16, 16), (7, 0, 31), (23, 31, 5)]:
      area = _render([_f(sh, s, o, x, y) for s in range(6)]).reshape(6, -1).sum(1)
      assert np.all(np.diff(area) > 0), (sh, o, area)
      # Area ~ scale^2: scale 1 vs 0.5 -> ~4x.
      assert 3.2 < area[5] / area[0] < 5.0, (sh, area)


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_pos_x_moves_right_along_columns(shape):
  imgs = _render([_f(shape, 5, 0, x, 10) for x in range(32)])
  cent = np.array([_centroid(im) for im in imgs])
  rows, cols = cent[:, 0], cent[:, 1]
  assert np.ptp(rows) < 0.5  # no vertical motion
  steps = np.diff(cols)
  # Binary pixels: an axis-aligned square edge jumps in whole pixels, so single
  # steps vary (0.5 .. 2 px) around the mean of 35/31 px.
  assert np.all(steps > 0.4) and np.all(steps <= 2.01), steps
  assert abs(steps.mean() - STEP_PX) < 0.05
  # Endpoints are where the docstring says.
  assert abs(cols[0] - CENTRE_LO) < 0.7 and abs(cols[-1] - CENTRE_HI) < 0.7


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_pos_y_moves_down_along_rows(shape):
  imgs = _render([_f(shape, 5, 0, 20, y) for y in range(32)])
  cent = np.array([_centroid(im) for im in imgs])
  rows, cols = cent[:, 0], cent[:, 1]
  assert np.ptp(cols) < 0.5  # no horizontal motion
  steps = np.diff(rows)
  # Binary pixels: an axis-aligned square edge jumps in whole pixels, so single
  # steps vary (0.5 .. 2 px) around the mean of 35/31 px.
  assert np.all(steps > 0.4) and np.all(steps <= 2.01), steps
  assert abs(steps.mean() - STEP_PX) < 0.05
  assert abs(rows[0] - CENTRE_LO) < 0.7 and abs(rows[-1] - CENTRE_HI) < 0.7


def test_rotation_changes_ellipse_but_not_its_area():
  imgs = _render([_f(ELLIPSE, 5, o) for o in range(40)])
  area = imgs.reshape(40, -1).sum(1)
  assert area.max() / area.min() < 1.08
  # ~92 degrees apart: mostly disjoint apart from the middle.
  assert _iou(imgs[0], imgs[10]) < 0.5
  # ~92 degrees -> elongated vertically.
  r, c = np.nonzero(imgs[10])
  assert (r.max() - r.min()) > 1.6 * (c.max() - c.min())
  # Counter-clockwise on screen: at ~46 degrees the major axis goes up-right,
  # i.e. row decreases as column increases.
  r, c = np.nonzero(imgs[5])
  assert np.corrcoef(r, c)[0, 1] < -0.5
  # Rotation is about the centre: the centroid does not move.
  cents = np.array([_centroid(im) for im in imgs])
  assert np.ptp(cents, axis=0).max() < 0.6


def test_heart_rotation_matters_and_keeps_area():
  imgs = _render([_f(HEART, 5, o) for o in range(40)])
  area = imgs.reshape(40, -1).sum(1)
  assert area.max() / area.min() < 1.08
  # A heart has no rotational symmetry: ~180 degrees is far from 0.
  assert _iou(imgs[0], imgs[20]) < 0.85
  assert _iou(imgs[0], imgs[10]) < 0.85


def test_square_quarter_turn_symmetry():
  sq = _render([_f(SQUARE, 5, o) for o in (0, 10, 5, 39)])
  # orientation index 10 = 92.3 degrees: nearly the same as 0.
  assert _iou(sq[0], sq[1]) > 0.85
  # 46 degrees: a diamond, clearly different.
  assert _iou(sq[0], sq[2]) < 0.8
  # orientation index 39 = 2 pi: same as 0 (first and last coincide).
  assert np.sum(sq[0] != sq[3]) <= 2
  # Exactly pi/2 (off the factor grid) is (almost) pixel-identical to 0.
  one = np.ones(2)
  exact = ds._rasterize(np.zeros(2, int), one, np.array([0.0, np.pi / 2]),
                        32.3 * one, 30.7 * one)[..., 0]
  assert np.sum(exact[0] != exact[1]) <= 2


def test_shapes_differ_at_same_factors():
  for o, s in [(0, 5), (13, 2), (30, 0)]:
    imgs = _render([_f(sh, s, o, 12, 20) for sh in range(3)])
    for i in range(3):
      for j in range(i + 1, 3):
        assert np.sum(imgs[i] != imgs[j]) > 0.1 * imgs[i].sum(), (o, s, i, j)


def _reference_image(shape, scale, theta, cx, cy):
  """Slow, straightforward full-canvas rendering (no windowing, float64)."""
  jj, ii = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)  # x = col, y = row
  dx, dy = jj - cx, cy - ii
  u = (np.cos(theta) * dx + np.sin(theta) * dy) / scale
  v = (-np.sin(theta) * dx + np.cos(theta) * dy) / scale
  if shape == SQUARE:
    m = (np.abs(u) <= ds.SQUARE_HALF_SIDE) & (np.abs(v) <= ds.SQUARE_HALF_SIDE)
  elif shape == ELLIPSE:
    a, b = ds.ELLIPSE_SEMI_AXES
    m = (u / a) ** 2 + (v / b) ** 2 <= 1
  else:
    x = u / ds.HEART_UNIT
    y = v / ds.HEART_UNIT + ds._HEART_CENTROID_Y
    m = (x ** 2 + y ** 2 - 1) ** 3 - x ** 2 * y ** 3 <= 0
  return m.astype(np.float32)


def test_matches_reference_renderer():
  rng = np.random.default_rng(3)
  fac = np.stack([rng.integers(0, s, size=40) for s in SIZES], axis=1)
  fac[:8, 2] = 5  # include big shapes in corners
  fac[:8, 4] = [0, 31] * 4
  fac[:8, 5] = [0, 0, 31, 31] * 2
  imgs = ds.render(fac)[..., 0]
  pos = np.linspace(0, 1, 32)
  for f, img in zip(fac, imgs):
    ref = _reference_image(f[1], np.linspace(0.5, 1, 6)[f[2]],
                           np.linspace(0, 2 * np.pi, 40)[f[3]],
                           CENTRE_LO + pos[f[4]] * (CENTRE_HI - CENTRE_LO),
                           CENTRE_LO + pos[f[5]] * (CENTRE_HI - CENTRE_LO))
    # float32 vs float64 may flip a pixel centre lying exactly on an edge.
    assert np.sum(img != ref) <= 2, f


# ------------------------------------------------------------------ one renderer, host and device


def _numpy_render(factors):
  """The float32 numpy renderer this module had before the jax one (windowed, per shape):
  the reference that keeps today's runs bitwise what they were."""
  factors = np.asarray(factors, np.int64)
  shape = factors[:, 1]
  scale, theta = ds.SCALES[factors[:, 2]], ds.ORIENTATIONS[factors[:, 3]]
  cx, cy = (ds.MARGIN + ds.POSITIONS[factors[:, k]] * (64 - 2 * ds.MARGIN) for k in (4, 5))
  n, w = len(factors), 32
  out = np.zeros((n, 64, 64), np.float32)
  x0 = np.clip(np.round(cx - w / 2), 0, 64 - w).astype(np.int64)
  y0 = np.clip(np.round(cy - w / 2), 0, 64 - w).astype(np.int64)
  cols, rows = x0[:, None] + np.arange(w), y0[:, None] + np.arange(w)
  dx = (cols + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]
  dy = (cy[:, None] - (rows + 0.5)).astype(np.float32)[:, :, None]
  c = (np.cos(theta) * (1.0 / scale)).astype(np.float32)[:, None, None]
  s = (np.sin(theta) * (1.0 / scale)).astype(np.float32)[:, None, None]
  u, v = c * dx + s * dy, c * dy - s * dx
  a, b = ds.ELLIPSE_SEMI_AXES
  x, y = u * (1.0 / ds.HEART_UNIT), v * (1.0 / ds.HEART_UNIT) + ds._HEART_CENTROID_Y
  x2 = x * x
  r = x2 + y * y - 1.0
  inside = np.where(shape[:, None, None] == 0,
                    np.maximum(np.abs(u), np.abs(v)) <= ds.SQUARE_HALF_SIDE,
                    np.where(shape[:, None, None] == 1,
                             (u * (1.0 / a)) ** 2 + (v * (1.0 / b)) ** 2 <= 1.0,
                             r * r * r <= x2 * y * y * y))
  out[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = inside
  return out[..., None]


@pytest.fixture(scope="module")
def sample():
  """A few thousand indices: the grid's corners and a random sample, with their host images."""
  idx = np.concatenate([[0, 737279],
                        np.random.default_rng(7).integers(0, 737280, size=3998)]).astype(np.int32)
  return idx, ds.DSpritesSource().get(idx)


def test_host_renderer_is_bitwise_the_numpy_renderer(sample):
  idx, host = sample
  np.testing.assert_array_equal(host["image"], _numpy_render(ds.index_to_factors(idx)))


def _hashes(image):
  """Pixel count and a weighted pixel sum per image, both exact: any flipped pixel shows."""
  flat = image.reshape(image.shape[0], -1)
  weights = jnp.asarray(np.random.default_rng(0).integers(1, 1 << 20, flat.shape[1]), jnp.int32)
  return flat.sum(1), (flat.astype(jnp.int32) * weights).sum(1)


def test_device_form_is_bitwise_the_host_path(sample):
  idx, host = sample
  form = ds.DSpritesSource().device_form()
  assert set(form.arrays) == {"cos", "sin"}
  assert all(a.dtype == np.float32 for a in form.arrays.values())
  arrays = jax.device_put(form.arrays)
  out = jax.jit(form.get)(arrays, jnp.asarray(idx))
  assert set(out) == set(host)
  for k in host:
    assert out[k].dtype == host[k].dtype and out[k].shape == host[k].shape, k
    np.testing.assert_array_equal(np.asarray(out[k]), host[k], err_msg=k)
  # Rendered inside larger programs, where XLA fuses the renderer into what consumes it: the
  # tables as arguments, and closed over as constants (which XLA may fold).
  expected = [np.asarray(h) for h in _hashes(jnp.asarray(host["image"]))]
  fused = jax.jit(lambda a, i: _hashes(form.get(a, i)["image"]))(arrays, jnp.asarray(idx))
  const = jax.jit(lambda i: _hashes(form.get(form.arrays, i)["image"]))(jnp.asarray(idx))
  for got in (fused, const):
    for g, e in zip(got, expected):
      np.testing.assert_array_equal(np.asarray(g), e)


def test_a_subset_of_the_renderer_keeps_its_own_dispatch():
  """The procedural train split is a SubsetSource: a renderer compiled into the train step
  made it slower (DSpritesSource.device_form), and so it does a subset's."""
  index = np.arange(10)
  assert SubsetSource(ds.DSpritesSource(), index).device_form().fuse is False
  images = InMemorySource("images", np.zeros((10, 4, 4, 1), np.float32))
  assert images.device_form().fuse and SubsetSource(images, index).device_form().fuse


def test_render_chunks_large_requests(monkeypatch, sample):
  idx, host = sample
  monkeypatch.setattr(ds, "_CHUNK", 48)  # 100 images: chunks of 48, 48 and 4 (padded)
  got = ds.render(ds.index_to_factors(idx[:100]))
  assert got.dtype == np.float32 and got.shape == (100, 64, 64, 1)
  np.testing.assert_array_equal(got, host["image"][:100])
  assert ds.render(np.zeros((0, 6), np.int32)).shape == (0, 64, 64, 1)


def test_rounded_products_are_not_fused_into_adds():
  # XLA contracts a * b + c into one fused multiply-add (measured on this CPU: 23% of the
  # results of such a jitted expression differ from numpy's, 12% of the renderer's ellipse
  # sums), so that a renderer's pixels could depend on the program around it. Products
  # passed through _rounded are rounded before the add, as numpy rounds them.
  a, b, c = np.random.default_rng(0).standard_normal((3, 100000)).astype(np.float32)
  zero = np.zeros(a.shape, np.int32)
  got = jax.jit(lambda a, b, c, z: ds._rounded(a * b, z) + c)(a, b, c, zero)
  np.testing.assert_array_equal(np.asarray(got), a * b + c)
