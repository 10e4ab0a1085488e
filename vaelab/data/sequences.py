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
"""
from __future__ import annotations

import numpy as np

from vaelab.data.base import SourceInfo
from vaelab.errors import ConfigError

# Split seeds: train and eval sequences are drawn from different streams.
TRAIN_SEED, EVAL_SEED = 1, 2


def _rngs(seed: int, indices: np.ndarray):
  return [np.random.default_rng([seed, int(i)]) for i in indices]


class MovingDigits:
  """`num_sequences` sequences of `seq_len` frames of a digit from `images` moving sideways."""

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


class Oscillator:
  """Noisy harmonic oscillator (the paper's 1-D experiment).

  The phase advances by 2 pi / period per step plus N(0, phase_noise^2); the amplitude is
  drawn from U(0.5, 1.5) and the initial phase from U(0, 2 pi) per sequence. Each step shows
  (A cos phase, -A sin phase) + N(0, obs_noise^2 I): position and velocity divided by the
  angular frequency, so both coordinates have the same range.
  """

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
    out = np.empty((len(indices), t, 2), np.float32)
    omega = 2 * np.pi / self.period
    for row, r in enumerate(_rngs(self.seed, indices)):
      amplitude, phase0 = r.uniform(0.5, 1.5), r.uniform(0, 2 * np.pi)
      steps = omega + self.phase_noise * r.standard_normal(t - 1)
      phase = phase0 + np.concatenate([[0.0], np.cumsum(steps)])
      clean = amplitude * np.stack([np.cos(phase), -np.sin(phase)], -1)
      out[row] = clean + self.obs_noise * r.standard_normal((t, 2))
    return {"image": out}


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
    params = np.array([(r.uniform(2.2, 2.9), r.uniform(-0.25, 0.25), r.uniform(0.35, 0.6),
                        r.uniform(-2.0, 2.0)) for r in _rngs(self.seed, indices)],
                      np.float32).reshape(-1, 4)
    cell, slant, width, dy = (params[:, k, None, None] for k in range(4))
    yy, xx = np.mgrid[:self.size, :self.size].astype(np.float32) + 0.5
    c = self.size / 2
    # Pixel centre -> font coordinates (column u in [0, 5), row v in [0, 7)).
    v = (yy - c - dy) / cell + 3.5
    u = (xx - c) / cell + 2.5 + slant * (v - 3.5)
    # Distance to the nearest lit font cell centre, in font units: strokes of width `width`.
    centres = np.argwhere(_BITMAPS.any(0))  # every cell some digit lights
    out = np.zeros((len(indices), self.size, self.size), np.float32)
    for k, (row, col) in enumerate(centres):
      lit = _BITMAPS[labels, row, col][:, None, None]
      d = np.maximum(np.abs(u - (col + 0.5)), np.abs(v - (row + 0.5)))
      out = np.maximum(out, lit * np.clip((width + 0.5 - d) / 0.35, 0.0, 1.0))
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
