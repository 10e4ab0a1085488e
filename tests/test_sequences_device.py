"""The sequence sources' device forms (vaelab.data.sequences): the values `get` returns, read
on the device, also inside larger jitted programs; and the host renderers they are built from
(glyphs, oscillator) bitwise what they were."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab.data import sequences
from vaelab.data.base import InMemorySource


def _digits(n=30, size=6, seed=0):
  """uint8 digit images with labels, as an npz split gives them."""
  rng = np.random.default_rng(seed)
  return InMemorySource("digits", rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8),
                        label=rng.integers(0, 10, n))


def _check(source, indices):
  """The device form's get, jitted (arrays as arguments and as constants), equals get."""
  form = source.device_form()
  assert form is not None
  host = source.get(indices)
  arrays = jax.device_put(form.arrays)
  dev = jax.jit(form.get)(arrays, jnp.asarray(indices, jnp.int32))
  assert set(dev) == set(host)
  for k in host:
    assert dev[k].dtype == host[k].dtype and dev[k].shape == host[k].shape, k
    np.testing.assert_array_equal(np.asarray(dev[k]), host[k], err_msg=k)
  # Inside a larger program (XLA fuses the gathers and conversions into what consumes them):
  # per-example sums of the bits of the frames, which any changed value would show.
  def bits(get, a, i):
    img = get(a, i)["image"]
    return jax.lax.bitcast_convert_type(img, jnp.int32).reshape(len(i), -1).sum(1)
  expected = host["image"].view(np.int32).reshape(len(indices), -1).sum(1, dtype=np.int32)
  idx = jnp.asarray(indices, jnp.int32)
  for got in (jax.jit(functools.partial(bits, form.get))(arrays, idx),
              jax.jit(lambda i: bits(form.get, form.arrays, i))(idx)):
    np.testing.assert_array_equal(np.asarray(got), expected)
  return form


def test_moving_digits_from_uint8_images():
  # More sequences than digits (each digit twice) and fewer (every other digit).
  for num in (60, 13):
    src = sequences.MovingDigits(_digits(), num, 7, sequences.TRAIN_SEED, "m")
    form = _check(src, np.concatenate([np.arange(num), [num - 1, 0, 3]]))
    # k / 255 images travel as uint8, converted through the host's own table.
    assert form.arrays["images"].dtype == np.uint8
    assert form.arrays["uint8_to_float"].dtype == np.float32
    assert len(form.arrays["images"]) == len(np.unique(src.digit_indices()))


def test_moving_digits_from_glyphs_and_from_float_images():
  src = sequences.MovingDigits(sequences.Glyphs(50, 3, "g"), 40, 5, sequences.EVAL_SEED, "m")
  form = _check(src, np.arange(40))
  assert form.arrays["images"].dtype == np.float32  # glyph intensities are not k / 255
  # Float images that happen to be k / 255 still travel as uint8; others as float32.
  x = np.random.default_rng(1).random((20, 5, 5, 1)).astype(np.float32)
  for image, dtype in ((np.round(x * 255) / np.float32(255), np.uint8), (x, np.float32)):
    src = sequences.MovingDigits(InMemorySource("f", image.astype(np.float32)), 20, 4, 1, "m")
    assert _check(src, np.arange(20)).arrays["images"].dtype == dtype
    assert "label" not in src.device_form().arrays


def test_oscillator_device_form():
  src = sequences.Oscillator(300, 50, 23.0, 0.1, 0.02, sequences.TRAIN_SEED, "o")
  form = _check(src, np.random.default_rng(0).integers(0, 300, 64))
  assert form.arrays["image"].shape == (300, 50, 2)


def test_device_forms_refuse_arrays_too_large(monkeypatch):
  monkeypatch.setattr(sequences, "_DEVICE_FORM_BYTES", 1000)
  assert sequences.Oscillator(300, 50, 23.0, 0.1, 0.02, 1, "o").device_form() is None
  assert sequences.MovingDigits(_digits(), 60, 7, 1, "m").device_form() is None


# --- the host renderers, bitwise what they were ---------------------------------------------

def _old_glyphs(num_images, seed, indices):
  """Glyphs.get as it was written first: every font cell over the whole batch (float64)."""
  g = sequences.Glyphs(num_images, seed, "g")
  labels = (indices % 10).astype(np.int32)
  params = np.array([(r.uniform(2.2, 2.9), r.uniform(-0.25, 0.25), r.uniform(0.35, 0.6),
                      r.uniform(-2.0, 2.0)) for r in sequences._rngs(seed, indices)],
                    np.float32).reshape(-1, 4)
  cell, slant, width, dy = (params[:, k, None, None] for k in range(4))
  yy, xx = np.mgrid[:g.size, :g.size].astype(np.float32) + 0.5
  c = g.size / 2
  v = (yy - c - dy) / cell + 3.5
  u = (xx - c) / cell + 2.5 + slant * (v - 3.5)
  out = np.zeros((len(indices), g.size, g.size), np.float32)
  for row, col in np.argwhere(sequences._BITMAPS.any(0)):
    lit = sequences._BITMAPS[labels, row, col][:, None, None]
    d = np.maximum(np.abs(u - (col + 0.5)), np.abs(v - (row + 0.5)))
    out = np.maximum(out, lit * np.clip((width + 0.5 - d) / 0.35, 0.0, 1.0))
  return out[..., None]


def _old_oscillator(src, indices):
  out = np.empty((len(indices), src.seq_len, 2), np.float32)
  omega = 2 * np.pi / src.period
  for row, r in enumerate(sequences._rngs(src.seed, indices)):
    amplitude, phase0 = r.uniform(0.5, 1.5), r.uniform(0, 2 * np.pi)
    steps = omega + src.phase_noise * r.standard_normal(src.seq_len - 1)
    phase = phase0 + np.concatenate([[0.0], np.cumsum(steps)])
    out[row] = (amplitude * np.stack([np.cos(phase), -np.sin(phase)], -1)
                + src.obs_noise * r.standard_normal((src.seq_len, 2)))
  return out


def test_glyphs_are_bitwise_the_first_renderer():
  idx = np.concatenate([np.arange(200), np.random.default_rng(0).integers(0, 60000, 200)])
  got = sequences.Glyphs(60000, sequences.TRAIN_SEED, "g").get(idx)
  assert got["image"].dtype == np.float32
  # The first renderer returned float64; sequences and the pipeline saw it as float32.
  expected = _old_glyphs(60000, sequences.TRAIN_SEED, idx)
  assert expected.dtype == np.float64
  np.testing.assert_array_equal(got["image"].view(np.uint32),
                                expected.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("noise", [(0.1, 0.02), (0.0, 0.0)])
def test_oscillator_is_bitwise_the_first_implementation(noise):
  src = sequences.Oscillator(1000, 80, 23.0, *noise, sequences.EVAL_SEED, "o")
  idx = np.array([0, 999, 5, 5, 17, 400])
  np.testing.assert_array_equal(src.get(idx)["image"].view(np.uint32),
                                _old_oscillator(src, idx).view(np.uint32))
