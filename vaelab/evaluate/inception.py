"""The Inception-v3 of FID (pytorch-fid's FIDInceptionV3): 2048-d pool3 features of images.

FID is only comparable across papers when computed with the network of the original
TensorFlow implementation (the 2015-12-05 graph). pytorch-fid ports it to torchvision's
Inception-v3 with its own A, C and E blocks (average pools that do not count padding, a
max pool in the last E block) and publishes the weights (pt_inception-2015-12-05-6726825d.pth);
this module is the same network in JAX, reading those weights from the .npz that
`experiments/convert_inception_weights.py` writes (`eval.inception_weights`). Each
convolution's BatchNorm is folded into its kernel and bias by the converter, since it is
only ever used in inference form.

Inputs are images (B, H, W, C) in [0, 1], C = 1 repeated to 3: resized bilinearly to
299x299 (half-pixel centres without antialiasing, as torch's interpolate with
align_corners=False) and scaled to [-1, 1], as pytorch-fid does.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaelab import files
from vaelab.errors import ConfigError

KEY = "eval.inception_weights"
SIZE = 299
DIM = 2048
BN_EPS = 1e-3  # torchvision's BasicConv2d
CONVERT_COMMAND = ("python experiments/convert_inception_weights.py "
                   "--weights=pt_inception-2015-12-05-6726825d.pth --out=fid_inception.npz")


def _conv(name, cin, cout, k, stride=1, pad=0):
  kh, kw = (k, k) if isinstance(k, int) else k
  ph, pw = (pad, pad) if isinstance(pad, int) else pad
  return name, (kh, kw, cin, cout, stride, ph, pw)


def _block_a(p, cin, pool):
  return [_conv(f"{p}.branch1x1", cin, 64, 1),
          _conv(f"{p}.branch5x5_1", cin, 48, 1), _conv(f"{p}.branch5x5_2", 48, 64, 5, pad=2),
          _conv(f"{p}.branch3x3dbl_1", cin, 64, 1),
          _conv(f"{p}.branch3x3dbl_2", 64, 96, 3, pad=1),
          _conv(f"{p}.branch3x3dbl_3", 96, 96, 3, pad=1),
          _conv(f"{p}.branch_pool", cin, pool, 1)]


def _block_b(p, cin):
  return [_conv(f"{p}.branch3x3", cin, 384, 3, stride=2),
          _conv(f"{p}.branch3x3dbl_1", cin, 64, 1),
          _conv(f"{p}.branch3x3dbl_2", 64, 96, 3, pad=1),
          _conv(f"{p}.branch3x3dbl_3", 96, 96, 3, stride=2)]


def _block_c(p, cin, c7):
  return [_conv(f"{p}.branch1x1", cin, 192, 1),
          _conv(f"{p}.branch7x7_1", cin, c7, 1),
          _conv(f"{p}.branch7x7_2", c7, c7, (1, 7), pad=(0, 3)),
          _conv(f"{p}.branch7x7_3", c7, 192, (7, 1), pad=(3, 0)),
          _conv(f"{p}.branch7x7dbl_1", cin, c7, 1),
          _conv(f"{p}.branch7x7dbl_2", c7, c7, (7, 1), pad=(3, 0)),
          _conv(f"{p}.branch7x7dbl_3", c7, c7, (1, 7), pad=(0, 3)),
          _conv(f"{p}.branch7x7dbl_4", c7, c7, (7, 1), pad=(3, 0)),
          _conv(f"{p}.branch7x7dbl_5", c7, 192, (1, 7), pad=(0, 3)),
          _conv(f"{p}.branch_pool", cin, 192, 1)]


def _block_d(p, cin):
  return [_conv(f"{p}.branch3x3_1", cin, 192, 1),
          _conv(f"{p}.branch3x3_2", 192, 320, 3, stride=2),
          _conv(f"{p}.branch7x7x3_1", cin, 192, 1),
          _conv(f"{p}.branch7x7x3_2", 192, 192, (1, 7), pad=(0, 3)),
          _conv(f"{p}.branch7x7x3_3", 192, 192, (7, 1), pad=(3, 0)),
          _conv(f"{p}.branch7x7x3_4", 192, 192, 3, stride=2)]


def _block_e(p, cin):
  return [_conv(f"{p}.branch1x1", cin, 320, 1),
          _conv(f"{p}.branch3x3_1", cin, 384, 1),
          _conv(f"{p}.branch3x3_2a", 384, 384, (1, 3), pad=(0, 1)),
          _conv(f"{p}.branch3x3_2b", 384, 384, (3, 1), pad=(1, 0)),
          _conv(f"{p}.branch3x3dbl_1", cin, 448, 1),
          _conv(f"{p}.branch3x3dbl_2", 448, 384, 3, pad=1),
          _conv(f"{p}.branch3x3dbl_3a", 384, 384, (1, 3), pad=(0, 1)),
          _conv(f"{p}.branch3x3dbl_3b", 384, 384, (3, 1), pad=(1, 0)),
          _conv(f"{p}.branch_pool", cin, 192, 1)]


@functools.lru_cache(maxsize=None)
def convolutions() -> dict[str, tuple[int, ...]]:
  """Every BasicConv2d by its torchvision module name: (kh, kw, in, out, stride, pad_h,
  pad_w)."""
  return dict([
      _conv("Conv2d_1a_3x3", 3, 32, 3, stride=2), _conv("Conv2d_2a_3x3", 32, 32, 3),
      _conv("Conv2d_2b_3x3", 32, 64, 3, pad=1), _conv("Conv2d_3b_1x1", 64, 80, 1),
      _conv("Conv2d_4a_3x3", 80, 192, 3),
      *_block_a("Mixed_5b", 192, 32), *_block_a("Mixed_5c", 256, 64),
      *_block_a("Mixed_5d", 288, 64), *_block_b("Mixed_6a", 288),
      *_block_c("Mixed_6b", 768, 128), *_block_c("Mixed_6c", 768, 160),
      *_block_c("Mixed_6d", 768, 160), *_block_c("Mixed_6e", 768, 192),
      *_block_d("Mixed_7a", 768), *_block_e("Mixed_7b", 1280), *_block_e("Mixed_7c", 2048)])


def shapes() -> dict[str, tuple[int, ...]]:
  """The .npz's arrays: <conv>/kernel (kh, kw, in, out) HWIO and <conv>/bias (out,), the
  BatchNorm folded in."""
  out = {}
  for name, (kh, kw, cin, cout, *_) in convolutions().items():
    out[f"{name}/kernel"] = (kh, kw, cin, cout)
    out[f"{name}/bias"] = (cout,)
  return out


def convert_state_dict(sd: dict) -> dict[str, np.ndarray]:
  """The .npz's arrays from pytorch-fid's FID Inception state dict (numpy arrays by torch
  name: `<conv>.conv.weight` OIHW and `<conv>.bn.{weight,bias,running_mean,running_var}`;
  the 1008-way `fc` and any `num_batches_tracked` are not used). The BatchNorm is folded:
  kernel * gamma / sqrt(var + eps), bias beta - mean * gamma / sqrt(var + eps)."""
  out = {}
  for name in convolutions():
    w = np.asarray(sd[f"{name}.conv.weight"], np.float64)
    gamma, beta, mean, var = (np.asarray(sd[f"{name}.bn.{k}"], np.float64)
                              for k in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + BN_EPS)
    out[f"{name}/kernel"] = (np.transpose(w, (2, 3, 1, 0)) * scale).astype(np.float32)
    out[f"{name}/bias"] = (beta - mean * scale).astype(np.float32)
  return out


def _error(path, what: str) -> ConfigError:
  return ConfigError(f"{KEY}={path!r}: {what}. It is the .npz of FID Inception weights that "
                     f"`{CONVERT_COMMAND}` writes from pytorch-fid's published "
                     f"pt_inception-2015-12-05-6726825d.pth (that script needs torch); "
                     f"leave {KEY} empty to skip eval/rfid")


def _read(path, keep: bool) -> dict[str, np.ndarray]:
  return files.read_weights(path, shapes(), _error, keep)


def check_weights(path) -> None:
  """ConfigError naming eval.inception_weights unless `path` is a complete weights file."""
  _read(path, keep=False)


def load_weights(path) -> dict[str, jax.Array]:
  """The weights of `path` (the converter's .npz) as the params `features` takes."""
  return {k: jnp.asarray(v) for k, v in _read(path, keep=True).items()}


# ------------------------------------------------------------------ the network


def _basic(params, name, x):
  kh, kw, _, _, stride, ph, pw = convolutions()[name]
  y = jax.lax.conv_general_dilated(x, params[f"{name}/kernel"], (stride, stride),
                                   ((ph, ph), (pw, pw)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y + params[f"{name}/bias"])


def _max_pool(x, k, stride, pad=0):
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1),
                               padding)


def _avg_pool_3x3(x):
  """3x3, stride 1, padding 1, the mean over the pixels inside the image only
  (count_include_pad=False, pytorch-fid's change to torchvision's blocks)."""
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  count = jax.lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype), 0.0,
                                jax.lax.add, window, strides, padding)
  return total / count


def _a(p, n, x):
  b1 = _basic(p, f"{n}.branch1x1", x)
  b5 = _basic(p, f"{n}.branch5x5_2", _basic(p, f"{n}.branch5x5_1", x))
  b3 = _basic(p, f"{n}.branch3x3dbl_1", x)
  b3 = _basic(p, f"{n}.branch3x3dbl_3", _basic(p, f"{n}.branch3x3dbl_2", b3))
  bp = _basic(p, f"{n}.branch_pool", _avg_pool_3x3(x))
  return jnp.concatenate([b1, b5, b3, bp], -1)


def _b(p, n, x):
  b3 = _basic(p, f"{n}.branch3x3", x)
  bd = _basic(p, f"{n}.branch3x3dbl_1", x)
  bd = _basic(p, f"{n}.branch3x3dbl_3", _basic(p, f"{n}.branch3x3dbl_2", bd))
  return jnp.concatenate([b3, bd, _max_pool(x, 3, 2)], -1)


def _c(p, n, x):
  b1 = _basic(p, f"{n}.branch1x1", x)
  b7 = x
  for i in (1, 2, 3):
    b7 = _basic(p, f"{n}.branch7x7_{i}", b7)
  bd = x
  for i in (1, 2, 3, 4, 5):
    bd = _basic(p, f"{n}.branch7x7dbl_{i}", bd)
  bp = _basic(p, f"{n}.branch_pool", _avg_pool_3x3(x))
  return jnp.concatenate([b1, b7, bd, bp], -1)


def _d(p, n, x):
  b3 = _basic(p, f"{n}.branch3x3_2", _basic(p, f"{n}.branch3x3_1", x))
  b7 = x
  for i in (1, 2, 3, 4):
    b7 = _basic(p, f"{n}.branch7x7x3_{i}", b7)
  return jnp.concatenate([b3, b7, _max_pool(x, 3, 2)], -1)


def _e(p, n, x, max_pool: bool):
  b1 = _basic(p, f"{n}.branch1x1", x)
  b3 = _basic(p, f"{n}.branch3x3_1", x)
  b3 = jnp.concatenate([_basic(p, f"{n}.branch3x3_2a", b3),
                        _basic(p, f"{n}.branch3x3_2b", b3)], -1)
  bd = _basic(p, f"{n}.branch3x3dbl_2", _basic(p, f"{n}.branch3x3dbl_1", x))
  bd = jnp.concatenate([_basic(p, f"{n}.branch3x3dbl_3a", bd),
                        _basic(p, f"{n}.branch3x3dbl_3b", bd)], -1)
  # pytorch-fid's FIDInceptionE_2 (the last block) pools by max, FIDInceptionE_1 by mean:
  # a quirk of the TensorFlow graph its weights come from.
  pooled = _max_pool(x, 3, 1, pad=1) if max_pool else _avg_pool_3x3(x)
  bp = _basic(p, f"{n}.branch_pool", pooled)
  return jnp.concatenate([b1, b3, bd, bp], -1)


def preprocess(images):
  """Images (B, H, W, 1 or 3) in [0, 1] -> (B, 299, 299, 3) in [-1, 1], as pytorch-fid
  feeds its network."""
  x = jnp.asarray(images, jnp.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"Inception takes images (B, H, W, 1 or 3), got shape {x.shape}")
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, -1)
  x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 3), "bilinear", antialias=False)
  return 2.0 * x - 1.0


def _features(params, images):
  p, x = params, preprocess(images)
  for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
    x = _basic(p, name, x)
  x = _max_pool(x, 3, 2)
  x = _basic(p, "Conv2d_4a_3x3", _basic(p, "Conv2d_3b_1x1", x))
  x = _max_pool(x, 3, 2)
  for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
    x = _a(p, name, x)
  x = _b(p, "Mixed_6a", x)
  for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
    x = _c(p, name, x)
  x = _d(p, "Mixed_7a", x)
  x = _e(p, "Mixed_7b", x, max_pool=False)
  x = _e(p, "Mixed_7c", x, max_pool=True)
  return jnp.mean(x, axis=(1, 2))


features = jax.jit(_features)
features.__doc__ = """(params, images (B, H, W, C) in [0, 1]) -> pool3 features (B, 2048)."""


def features_in_chunks(params, images, chunk: int = 50) -> np.ndarray:
  """`features` of many images, `chunk` at a time (a 299x299 batch's activations are large),
  every chunk padded to the same size so that one program serves all of them."""
  images = np.asarray(images, np.float32)
  n = len(images)
  out = []
  for i in range(0, n, chunk):
    part = images[i:i + chunk]
    m = len(part)
    if m < chunk:
      part = np.concatenate([part, np.repeat(part[-1:], chunk - m, 0)])
    out.append(np.asarray(features(params, part))[:m])
  return np.concatenate(out) if out else np.zeros((0, DIM), np.float32)
