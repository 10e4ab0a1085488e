"""disentanglement_lib's dSprites variants, rendered like procedural dSprites.

Each variant is the procedural sprite (`vaelab.data.dsprites`) repeated over 3 channels and
changed per image as disentanglement_lib's `data/ground_truth/dsprites.py` does:

  color_dsprites   the sprite times a colour drawn from U(0.5, 1)^3 (ColorDSprites);
  noisy_dsprites   min(sprite + U(0, 1)^(64x64x3), 1): white sprite on noise (NoisyDSprites);
  scream_dsprites  a random 64x64 crop of the user's image (`data.scream_path`, shrunk as
                   dlib shrinks scream.jpg: PIL's thumbnail to fit 350 x 274, values / 255),
                   mixed with a colour drawn from U(0, 1)^3 as (crop + colour) / 2, its pixels
                   under the sprite inverted (1 - x) (ScreamDSprites).

The factors are dSprites' six (color, shape, scale, orientation, pos_x, pos_y); the random
colour, noise and crop are not factors. dlib draws them afresh whenever it renders an image;
here they are a pure function of (DATA_SEED, image index), drawn with jax's counter-based
generator (colours, crops) or an integer hash (the noise's 12,288 values an image:
`noise_bits`), so an image is the same on every device count, on the host and on the
device, in training and in every score: each variant is one fixed data set of 737,280
images.

Bitwise agreement between programs (see dsprites.py on XLA's fused multiply-adds): the
uniforms are built from random bits (the float in [1, 2) with those mantissa bits, minus 1,
exact), and every product is by 0.5 or by a 0 / 1 sprite, so exact: fused or not, each
result is rounded once.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vaelab.data import dsprites
from vaelab.data.base import DeviceForm, SourceInfo
from vaelab.errors import ConfigError

NAMES = ("color_dsprites", "noisy_dsprites", "scream_dsprites")
# The variants' random colours, noise and crops are drawn from this seed, whatever the run's:
# the data set does not change with the model's seed.
DATA_SEED = 0
# dlib's `scream.thumbnail((350, 274, 3))`: the image shrunk to fit 350 wide, 274 high.
SCREAM_THUMBNAIL = (350, 274)
IMAGE_SIZE = dsprites.IMAGE_SIZE
SCREAM_PAGE = ("https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg "
               "(disentanglement_lib's scream.jpg)")


def load_scream(path: str) -> np.ndarray:
  """The background image as dlib prepares it: (H, W, 3) float32 in [0, 1], H, W > 64."""
  from PIL import Image
  if not path:
    raise ConfigError("data.scream_path is empty: data.name='scream_dsprites' needs the "
                      f"background image, e.g. {SCREAM_PAGE}")
  if not os.path.isfile(path):
    raise ConfigError(f"data.scream_path={path!r}: no such file; scream_dsprites needs the "
                      f"background image, e.g. {SCREAM_PAGE}")
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      image.thumbnail(SCREAM_THUMBNAIL)
      array = np.asarray(image)
  except OSError as e:
    raise ConfigError(f"data.scream_path={path!r}: not an image PIL can read ({e})") from e
  if array.shape[0] <= IMAGE_SIZE or array.shape[1] <= IMAGE_SIZE:
    raise ConfigError(f"data.scream_path={path!r}: the image is {array.shape[1]} x "
                      f"{array.shape[0]} after shrinking to fit {SCREAM_THUMBNAIL}; dlib's "
                      f"crops need more than {IMAGE_SIZE} pixels each way")
  return (array * 1.0 / 255.0).astype(np.float32)


def _unit_uniform(key, shape):
  """U[0, 1) float32 from 23 random bits, computed exactly (no rounding, nothing to fuse)."""
  bits = jax.random.bits(key, shape, jnp.uint32)
  one_to_two = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)
  return one_to_two - 1.0


def image_keys(indices):
  """One key per image, from (DATA_SEED, image index) only."""
  base = jax.random.key(DATA_SEED)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)


def _color(sprite, keys, arrays):
  color = jax.vmap(lambda k: 0.5 + 0.5 * _unit_uniform(k, (3,)))(keys)
  return sprite * color[:, None, None, :]


def lowbias32(x):
  """A 32-bit integer hash (Wellons' lowbias32): exact uint32 arithmetic on every backend."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def noise_bits(indices):
  """(n, 64, 64, 3) uint32 random words of each image: a hash of (DATA_SEED, image index)
  mixed with a hash of the pixel: threefry's 12,288 words an image cost more than the
  train step they feed on a CPU, the hash a small part of it."""
  image = lowbias32(jnp.asarray(indices).astype(jnp.uint32) + jnp.uint32(
      (DATA_SEED * 0x9E3779B9 + 0x632BE5AB) % 2**32))
  pixel = lowbias32(jnp.arange(IMAGE_SIZE * IMAGE_SIZE * 3, dtype=jnp.uint32)
                    + jnp.uint32(0x5BD1E995)).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
  return lowbias32(image[:, None, None, None] ^ pixel)


def _noisy(sprite, indices, arrays):
  noise = jax.lax.bitcast_convert_type((noise_bits(indices) >> 9) | jnp.uint32(0x3F800000),
                                       jnp.float32) - 1.0
  return jnp.minimum(sprite + noise, 1.0)


def _scream(sprite, keys, arrays):
  scream = arrays["scream"]
  h, w = scream.shape[0], scream.shape[1]

  def one(key):
    kx, ky, kc = jax.random.split(key, 3)
    # dlib: randint(0, h - 64), randint(0, w - 64): the last start excluded.
    x0 = jax.random.randint(kx, (), 0, h - IMAGE_SIZE)
    y0 = jax.random.randint(ky, (), 0, w - IMAGE_SIZE)
    crop = jax.lax.dynamic_slice(scream, (x0, y0, 0), (IMAGE_SIZE, IMAGE_SIZE, 3))
    return (crop + _unit_uniform(kc, (3,))) * 0.5

  background = jax.vmap(one)(keys)
  return jnp.where(sprite == 1.0, 1.0 - background, background)


_APPLY = {"color_dsprites": _color, "noisy_dsprites": _noisy, "scream_dsprites": _scream}


def device_get(name: str, arrays, indices):
  """int32 indices (n,) -> {"image": (n, 64, 64, 3) float32, "factors"}, traceable."""
  indices = jnp.asarray(indices, jnp.int32)
  base = dsprites.device_get(arrays["dsprites"], indices)
  sprite = jnp.repeat(base["image"], 3, axis=-1)
  draws = indices if name == "noisy_dsprites" else image_keys(indices)
  return {"image": _APPLY[name](sprite, draws, arrays), "factors": base["factors"]}


@functools.lru_cache(maxsize=None)
def _get_jit(name: str):
  return jax.jit(functools.partial(device_get, name))


class DSpritesVariantSource:
  """All 737,280 images of a variant, rendered on demand; implements ArraySource."""

  def __init__(self, name: str, scream: np.ndarray | None = None):
    if name not in _APPLY:
      raise ConfigError(f"data.name={name!r}: expected one of {NAMES}")
    if name == "scream_dsprites" and scream is None:
      raise ConfigError("scream_dsprites needs its background image (data.scream_path)")
    self.name = name
    self.info = SourceInfo(image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), has_label=False,
                           factor_sizes=dsprites.FACTOR_SIZES,
                           factor_names=dsprites.FACTOR_NAMES)
    self._arrays = {"dsprites": dsprites.tables()}
    if name == "scream_dsprites":
      self._arrays["scream"] = np.asarray(scream, np.float32)
    self._host_arrays = None

  def __len__(self) -> int:
    return dsprites.NUM_IMAGES

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    factors = dsprites.index_to_factors(indices)  # validates the range
    if self._host_arrays is None:
      self._host_arrays = jax.device_put(self._arrays)
    out = np.empty((len(indices), IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    get = _get_jit(self.name)
    for start, stop, size in dsprites._buckets(len(indices)):  # noqa: SLF001
      chunk = dsprites._pad(indices[start:stop].astype(np.int32), size)  # noqa: SLF001
      out[start:stop] = np.asarray(get(self._host_arrays, chunk)["image"])[:stop - start]
    return {"image": out, "factors": factors}

  def render_factors(self, factors: np.ndarray) -> np.ndarray:
    """(n, 6) factor values -> their images (each image's colour keyed by its index)."""
    return self.get(dsprites.factors_to_index(np.asarray(factors)))["image"]

  def device_form(self) -> DeviceForm:
    # A renderer, like dSprites': its own dispatch (dsprites.DSpritesSource.device_form).
    return DeviceForm(arrays=self._arrays, get=functools.partial(device_get, self.name),
                      fuse=False)


def make_source(data_cfg) -> DSpritesVariantSource:
  scream = load_scream(data_cfg.scream_path) if data_cfg.name == "scream_dsprites" else None
  return DSpritesVariantSource(data_cfg.name, scream)


def check(data_cfg) -> None:
  """What a run needs before anything compiles: the background image for scream."""
  if data_cfg.name == "scream_dsprites":
    load_scream(data_cfg.scream_path)
