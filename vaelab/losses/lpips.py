"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1 with the VGG16 trunk: the perceptual term of a VQGAN's objective.

The trunk is torchvision's VGG16 `features` up to relu5_3; each of the five stages' last ReLU
output is normalised to unit length over channels, the squared difference of the two
images' normalised features is weighted per channel by the learned non-negative "lin"
weights, averaged over space and summed over stages. The weights are not trained here:
they come from the published PyTorch files through `experiments/convert_lpips_weights.py`,
which writes the .npz that `load_weights` reads (torch is not a dependency of vaelab).

Written as plain JAX functions of a flat dict of arrays rather than a Flax module: the
parameters are frozen and never initialised here, and a flat dict keyed as the .npz is,
is what the converter, the checks and the tests all address.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from vaelab import files
from vaelab.errors import ConfigError

KEY = "loss.lpips_weights"
# VGG16 `features`: channels of its 13 3x3 convolutions, "M" a 2x2 max pool.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# The convolutions (0-based, among the 13) whose ReLU output LPIPS compares: relu1_2,
# relu2_2, relu3_3, relu4_3, relu5_3.
TAPS = (1, 3, 6, 9, 12)
# The lpips package's ScalingLayer: ImageNet's statistics expressed for inputs in [-1, 1].
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# Four 2x2 pools before relu5_3: smaller images leave it no pixel.
MIN_SIZE = 16
CONVERT_COMMAND = ("python experiments/convert_lpips_weights.py --vgg16=vgg16-397923af.pth "
                   "--lin=PerceptualSimilarity/lpips/weights/v0.1/vgg.pth --out=lpips_vgg.npz")


def _conv_channels():
  out, cin = [], 3
  for c in VGG16:
    if c != "M":
      out.append((cin, c))
      cin = c
  return out


def shapes() -> dict[str, tuple[int, ...]]:
  """The .npz's arrays and their shapes: conv<i>_kernel (3, 3, in, out) HWIO, conv<i>_bias
  (out,), lin<k> (channels of tap k,)."""
  out = {}
  convs = _conv_channels()
  for i, (cin, cout) in enumerate(convs):
    out[f"conv{i}_kernel"] = (3, 3, cin, cout)
    out[f"conv{i}_bias"] = (cout,)
  for k, t in enumerate(TAPS):
    out[f"lin{k}"] = (convs[t][1],)
  return out


def convert_state_dicts(vgg16: dict, lin: dict) -> dict[str, np.ndarray]:
  """The .npz's arrays from torchvision's vgg16 state dict (`features.<j>.weight` OIHW,
  `features.<j>.bias`; the classifier's entries are ignored) and the lpips package's
  v0.1 vgg.pth (`lin<k>.model.1.weight`, or `.model.0.`, of shape (1, C, 1, 1)), both as
  dicts of numpy arrays. The j of `features.<j>` counts every layer of `features` (ReLUs
  and pools too)."""
  out, j, conv = {}, 0, 0
  for c in VGG16:
    if c == "M":
      j += 1  # the pool
      continue
    w = np.asarray(vgg16[f"features.{j}.weight"], np.float32)
    out[f"conv{conv}_kernel"] = np.transpose(w, (2, 3, 1, 0))
    out[f"conv{conv}_bias"] = np.asarray(vgg16[f"features.{j}.bias"], np.float32)
    conv += 1
    j += 2  # the convolution and its ReLU
  for k in range(len(TAPS)):
    # `model.1` behind the dropout lpips trains with (its published files), `model.0` when
    # a NetLinLayer was built without it.
    name = next((n for n in (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight") if n in lin),
                f"lin{k}.model.1.weight")
    out[f"lin{k}"] = np.asarray(lin[name], np.float32).reshape(-1)
  return out


def _error(path, what: str) -> ConfigError:
  return ConfigError(f"{KEY}={path!r}: {what}. It is the .npz of LPIPS-VGG16 weights that "
                     f"`{CONVERT_COMMAND}` writes from torchvision's vgg16 state dict and the "
                     f"lpips package's weights/v0.1/vgg.pth (that script needs torch)")


def _refused(name: str, a: np.ndarray) -> str | None:
  if not np.all(np.isfinite(a)):
    return "is not finite"
  if name.startswith("lin") and np.any(a < 0):
    return "has negative weights (LPIPS's are >= 0)"
  return None


def _read(path, keep: bool) -> dict[str, np.ndarray]:
  return files.read_weights(path, shapes(), _error, keep, _refused)


def check_weights(path) -> None:
  """ConfigError naming loss.lpips_weights unless `path` is a readable, complete weights file
  (for a family's validate, before anything compiles)."""
  _read(path, keep=False)


def load_weights(path) -> dict[str, jax.Array]:
  """The weights of `path` (a converter's .npz) as the params `distance` takes."""
  return {k: jnp.asarray(v) for k, v in _read(path, keep=True).items()}


# Maps at most this small are convolved as one matrix product of their nine shifted copies.
SMALL_MAP = 4


def _conv3x3(h, kernel):
  """A 'same' 3x3 convolution. XLA:CPU's convolution is pathologically slow on 2x2 maps
  with 512 channels (VGG's last stage for 32x32 images: two orders of magnitude slower than
  the same product written as a matmul), so small maps take the explicit form."""
  _, H, W, C = h.shape
  if min(H, W) > SMALL_MAP:
    return jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  p = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate([p[:, dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3)],
                         axis=-1)
  return cols @ kernel.reshape(9 * C, -1)


def _features(params, x):
  """The five tapped ReLU outputs of the VGG16 trunk on images x (B, H, W, 3) in [-1, 1]."""
  h = (x - SHIFT) / SCALE
  out, conv = [], 0
  for c in VGG16:
    if c == "M":
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      continue
    h = jax.nn.relu(_conv3x3(h, params[f"conv{conv}_kernel"]) + params[f"conv{conv}_bias"])
    if conv in TAPS:
      out.append(h)
    conv += 1
  return out


def _unit(f, eps=1e-10):
  """f / (|f| + eps) over channels, as lpips normalises. The norm's square root is taken
  only where the sum is positive: where every channel is 0 (a pixel no ReLU passes) its
  derivative is infinite and would turn the gradient into NaN, though the value is 0."""
  s = jnp.sum(f * f, axis=-1, keepdims=True)
  positive = s > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)
  return f / (norm + eps)


def _prepare(x):
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"LPIPS takes images (B, H, W, 1 or 3), got shape {x.shape}")
  if min(x.shape[1:3]) < MIN_SIZE:
    raise ValueError(f"LPIPS-VGG16 needs images of at least {MIN_SIZE}x{MIN_SIZE} (four "
                     f"2x2 pools before relu5_3), got {x.shape[1:3]}")
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  return 2.0 * x - 1.0


def distance(params, x, y):
  """LPIPS distance (B,) between images x and y (B, H, W, C) in [0, 1] (C = 1 is repeated to
  3 channels). Jittable and differentiable in both images."""
  x, y = _prepare(x), _prepare(y)
  # One pass over both images: one set of convolutions in the program, not two.
  n = x.shape[0]
  total = 0.0
  for k, f in enumerate(_features(params, jnp.concatenate([x, y]))):
    d = (_unit(f[:n]) - _unit(f[n:])) ** 2
    total = total + jnp.mean(jnp.sum(d * params[f"lin{k}"], axis=-1), axis=(1, 2))
  return total
