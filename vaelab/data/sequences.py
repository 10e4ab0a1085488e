"""Sequence data for TD-VAE: moving digits and a noisy harmonic oscillator (Gregor et al. 2019).

Both are sources like every other (`get(indices) -> dict`), so their batches go through the
same sharded pipeline as images; an example is a whole sequence:

  moving digits  "image" float32 (n, T, H, W, C) in [0, 1], "direction" int32 (n,) of +-1,
                 and "label" where the digit images have one.
  oscillator     "image" float32 (n, T, 2): noisy (position, velocity / omega), not in [0, 1].

Everything about an example is a function of (split seed, example index): no global RNG, so
a batch is the same on any number of devices and after a resume.

Moving digits (the paper's moving-MNIST setting): a digit moves one pixel per step left or
right, wrapping around the edge, from a random horizontal offset, so its position alone never
reveals the direction. Sequence i of S shows digit image floor(i N / S) of the N in the split:
every image equally often, and images spread over the split when S < N (files such as
mnist_5k.npz are sorted by label). The offset and direction are drawn from (seed, i). Because
the motion wraps, frame t + J is exactly frame t rolled J pixels in the direction of motion.

Device forms (`device_form()`, see `vaelab.data.base.DeviceForm`): the train step reads a batch
of sequences on the device from arrays built once on the host, with the values `get` returns.
  moving digits  the digit images the sequences use (uint8 with a float32 lookup table when
                 they are exactly k / 255, as npz and TFDS digits are: XLA would turn a
                 division by 255 into a multiplication by its reciprocal, which rounds
                 differently; float32 otherwise), and per sequence its digit, offset and
                 direction; the device rolls the digit image (a gather: exact).
  oscillator     every sequence, precomputed (60,000 x 200 x 2 float32 = 96 MB); the device
                 gathers rows. The draws come from numpy's per-(seed, index) generators, which
                 no device program reproduces.
Either is None (the host path) where its arrays would exceed _DEVICE_FORM_BYTES.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaelab.data.base import DeviceForm, SourceInfo
from vaelab.errors import ConfigError

# Split seeds: train and eval sequences are drawn from different streams.
TRAIN_SEED, EVAL_SEED = 1, 2

# A device form is replicated on every device: beyond this many bytes the host path is kept.
_DEVICE_FORM_BYTES = 512 << 20
_CHUNK = 4096  # examples per host call while a device form is built
# uint8 k -> k / 255 exactly as the host converts (InMemorySource.get: float32 / 255.0).
_UINT8_TO_FLOAT = np.arange(256).astype(np.float32) / 255.0


def _rngs(seed: int, indices: np.ndarray):
  return [np.random.default_rng([seed, int(i)]) for i in indices]


class MovingDigits:
  """`num_sequences` sequences of `seq_len` frames of a digit from `images` moving sideways."""

  # Its device form is built from every sequence (about one epoch of host batches), so a
  # short run keeps the host path (data/pipeline.py).
  device_form_builds = True

  def __init__(self, images, num_sequences: int, seq_len: int, seed: int, name: str):
    shape = tuple(images.info.image_shape)
    if len(shape) != 3:
      raise ConfigError(f"data: moving digits are built from images (H, W, C); {images.name} "
                        f"has examples of shape {shape}")
    self.images, self.seq_len, self.seed = images, int(seq_len), int(seed)
    self.num_sequences = int(num_sequences)
    self.name = name
    self.info = SourceInfo(image_shape=(self.seq_len, *shape), has_label=images.info.has_label,
                           num_classes=images.info.num_classes)

  def __len__(self) -> int:
    return self.num_sequences

  def motion(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offset, direction) of each sequence: the digit is rolled offset + direction * t
    pixels to the right at frame t."""
    w = self.info.image_shape[2]
    draws = np.array([(r.integers(w), r.integers(2)) for r in _rngs(self.seed, indices)],
                     np.int64).reshape(-1, 2)
    return draws[:, 0], 2 * draws[:, 1] - 1

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    digits = self.images.get(indices * len(self.images) // self.num_sequences)
    img = digits["image"]  # (n, H, W, C)
    n, _, w, _ = img.shape
    offset, direction = self.motion(indices)
    shift = offset[:, None] + direction[:, None] * np.arange(self.seq_len)  # (n, T)
    # np.roll by s to the right: out[..., j] = img[..., (j - s) mod W].
    cols = (np.arange(w)[None, None, :] - shift[:, :, None]) % w  # (n, T, W)
    by_col = np.moveaxis(img, 2, 1)  # (n, W, H, C)
    frames = by_col[np.arange(n)[:, None, None], cols]  # (n, T, W, H, C)
    out = {"image": np.ascontiguousarray(np.moveaxis(frames, 2, 3), np.float32),
           "direction": direction.astype(np.int32)}
    if "label" in digits:
      out["label"] = digits["label"]
    return out

  def digit_indices(self) -> np.ndarray:
    """(num_sequences,) the index in `images` of each sequence's digit (int64: i * N overflows
    int32 for 60,000 x 60,000)."""
    return np.arange(self.num_sequences, dtype=np.int64) * len(self.images) // self.num_sequences

  def device_form(self) -> DeviceForm | None:
    """The digit images the sequences use, read once through `images.get`, and the motion of
    every sequence; None if they would exceed _DEVICE_FORM_BYTES."""
    digit = self.digit_indices()
    used = np.unique(digit)
    if used.size * int(np.prod(self.info.image_shape[1:])) * 4 > _DEVICE_FORM_BYTES:
      return None
    chunks = [self.images.get(used[i:i + _CHUNK]) for i in range(0, used.size, _CHUNK)]
    images = np.concatenate([np.asarray(c["image"], np.float32) for c in chunks])
    offset, direction = self.motion(np.arange(self.num_sequences))
    arrays = {"digit": np.searchsorted(used, digit).astype(np.int32),
              "offset": offset.astype(np.int32), "direction": direction.astype(np.int32)}
    quantized = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
    if np.array_equal(_UINT8_TO_FLOAT[quantized].view(np.uint32), images.view(np.uint32)):
      arrays["images"], arrays["uint8_to_float"] = quantized, _UINT8_TO_FLOAT.copy()
    else:
      arrays["images"] = images
    if "label" in chunks[0]:
      arrays["label"] = np.concatenate([c["label"] for c in chunks]).astype(np.int32)
    return DeviceForm(arrays=arrays, get=functools.partial(_moving_digits_get,
                                                          seq_len=self.seq_len))


class Oscillator:
  """Noisy harmonic oscillator (the paper's 1-D experiment).

  The phase advances by 2 pi / period per step plus N(0, phase_noise^2); the amplitude is
  drawn from U(0.5, 1.5) and the initial phase from U(0, 2 pi) per sequence. Each step shows
  (A cos phase, -A sin phase) + N(0, obs_noise^2 I): position and velocity divided by the
  angular frequency, so both coordinates have the same range.
  """

  device_form_builds = True  # as MovingDigits'

  def __init__(self, num_sequences: int, seq_len: int, period: float, obs_noise: float,
               phase_noise: float, seed: int, name: str):
    self.num_sequences, self.seq_len = int(num_sequences), int(seq_len)
    self.period, self.obs_noise = float(period), float(obs_noise)
    self.phase_noise, self.seed, self.name = float(phase_noise), int(seed), name
    self.info = SourceInfo(image_shape=(self.seq_len, 2))

  def __len__(self) -> int:
    return self.num_sequences

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    t = self.seq_len
    n = len(indices)
    # Each sequence's draws come from its own generator, in this order; the arithmetic is
    # batched (elementwise, and cumsum along each row: the values of one row at a time).
    amplitude, phase0 = np.empty((n, 1, 1)), np.empty((n, 1))
    step_noise, obs_noise = np.empty((n, t - 1)), np.empty((n, t, 2))
    for row, r in enumerate(_rngs(self.seed, indices)):
      amplitude[row], phase0[row] = r.uniform(0.5, 1.5), r.uniform(0, 2 * np.pi)
      step_noise[row] = r.standard_normal(t - 1)
      obs_noise[row] = r.standard_normal((t, 2))
    steps = 2 * np.pi / self.period + self.phase_noise * step_noise
    phase = phase0 + np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)
    clean = amplitude * np.stack([np.cos(phase), -np.sin(phase)], -1)
    return {"image": (clean + self.obs_noise * obs_noise).astype(np.float32)}

  def device_form(self) -> DeviceForm | None:
    """Every sequence, precomputed on the host; None if they would exceed _DEVICE_FORM_BYTES."""
    if self.num_sequences * self.seq_len * 2 * 4 > _DEVICE_FORM_BYTES:
      return None
    image = np.concatenate([self.get(np.arange(i, min(i + _CHUNK, self.num_sequences)))["image"]
                            for i in range(0, self.num_sequences, _CHUNK)])
    return DeviceForm(arrays={"image": image}, get=_gather_rows)


def _gather_rows(arrays, indices):
  return {k: jnp.asarray(v)[indices] for k, v in arrays.items()}


def _moving_digits_get(arrays, indices, *, seq_len: int):
  """MovingDigits.get on the device: the sequences' digits rolled by offset + direction * t."""
  arrays = {k: jnp.asarray(v) for k, v in arrays.items()}  # numpy when closed over
  digit = arrays["digit"][indices]
  img = arrays["images"][digit]  # (n, H, W, C)
  if "uint8_to_float" in arrays:
    img = arrays["uint8_to_float"][img]  # a lookup, bitwise the host's conversion
  direction = arrays["direction"][indices]
  shift = arrays["offset"][indices][:, None] + direction[:, None] * jnp.arange(seq_len)
  w = img.shape[2]
  cols = (jnp.arange(w)[None, None, :] - shift[:, :, None]) % w  # (n, T, W), as np.roll
  frames = jax.vmap(lambda im, c: jnp.moveaxis(im[:, c], 1, 0))(img, cols)  # (n, T, H, W, C)
  out = {"image": frames, "direction": direction}
  if "label" in arrays:
    out["label"] = arrays["label"][digit]
  return out


# A 5x7 bitmap font of the ten digits: procedural glyphs when no digit images are given.
_FONT = {
    0: ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    1: ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    2: ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    3: ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    4: ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    5: ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    6: ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    7: ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    8: ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    9: ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}
_BITMAPS = np.array([[[c == "1" for c in row] for row in _FONT[d]] for d in range(10)],
                    np.float32)  # (10, 7, 5)


_GLYPH_LOW, _GLYPH_HIGH = (2.2, -0.25, 0.35, -2.0), (2.9, 0.25, 0.6, 2.0)


class Glyphs:
  """28x28 digit glyphs rendered from the 5x7 font with a random size, slant, stroke width and
  vertical offset per (seed, index); label = index mod 10. Stands in for MNIST offline."""

  size = 28

  def __init__(self, num_images: int, seed: int, name: str):
    self.num_images, self.seed, self.name = int(num_images), int(seed), name
    self.info = SourceInfo(image_shape=(self.size, self.size, 1), has_label=True, num_classes=10)

  def __len__(self) -> int:
    return self.num_images

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    labels = (indices % 10).astype(np.int32)
    # (cell, slant, width, dy) per glyph: four uniform draws in this order (one call draws
    # them as four scalar calls would, low + (high - low) * the next double).
    params = np.array([r.uniform(_GLYPH_LOW, _GLYPH_HIGH) for r in _rngs(self.seed, indices)],
                      np.float32).reshape(-1, 4)
    cell, slant, width, dy = (params[:, k, None, None] for k in range(4))
    yy, xx = np.mgrid[:self.size, :self.size].astype(np.float32) + 0.5
    c = self.size / 2
    # Pixel centre -> font coordinates (column u in [0, 5), row v in [0, 7)), float32.
    v = (yy - c - dy) / cell + 3.5
    u = (xx - c) / cell + 2.5 + slant * (v - 3.5)
    # Strokes of width `width` around the lit font cells: the intensity falls off with the
    # (Chebyshev, float64) distance d to the nearest lit cell centre, clip((width + 0.5 - d) /
    # 0.35, 0, 1). That is the maximum over lit cells of each cell's own intensity (what this
    # computed before, cell by cell over the whole batch, far slower), exactly: the
    # intensity is a non-increasing function of d, and rounding is monotone.
    d = np.full(u.shape, np.inf)
    for digit in np.unique(labels):
      sel = np.flatnonzero(labels == digit)
      du = [np.abs(u[sel] - np.float64(col + 0.5)) for col in range(_BITMAPS.shape[2])]
      dv = [np.abs(v[sel] - np.float64(row + 0.5)) for row in range(_BITMAPS.shape[1])]
      nearest = np.full((sel.size,) + u.shape[1:], np.inf)
      for row, col in np.argwhere(_BITMAPS[digit]):
        np.minimum(nearest, np.maximum(du[col], dv[row]), out=nearest)
      d[sel] = nearest
    out = np.clip((width + 0.5 - d) / 0.35, 0.0, 1.0).astype(np.float32)
    return {"image": out[..., None], "label": labels}


def moving_digits_sources(data_cfg, train_images=None, eval_images=None):
  """(train, eval) moving-digit sources from image sources; procedural glyphs where None."""
  train_images = train_images or Glyphs(60000, TRAIN_SEED, "glyphs/train")
  eval_images = eval_images or Glyphs(10000, EVAL_SEED, "glyphs/eval")
  t = int(data_cfg.seq_len)
  return (MovingDigits(train_images, int(data_cfg.num_train), t, TRAIN_SEED,
                       f"moving_digits({train_images.name})"),
          MovingDigits(eval_images, int(data_cfg.num_eval), t, EVAL_SEED,
                       f"moving_digits({eval_images.name})"))


def oscillator_sources(data_cfg):
  kw = dict(seq_len=int(data_cfg.seq_len), period=float(data_cfg.period),
            obs_noise=float(data_cfg.obs_noise), phase_noise=float(data_cfg.phase_noise))
  return (Oscillator(int(data_cfg.num_train), seed=TRAIN_SEED, name="oscillator/train", **kw),
          Oscillator(int(data_cfg.num_eval), seed=EVAL_SEED, name="oscillator/eval", **kw))
