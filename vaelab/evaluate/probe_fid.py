"""probe-FID: the Frechet distance between the evaluation images and their reconstructions
in the penultimate features of a small classifier trained on the data's own labels.

rFID needs the FID Inception's weights (a download) and scores images as ImageNet's
classifier sees them, which says little about 28x28 digits. probe-FID works offline on any
labelled data set, with a feature space fitted to that data: a small conv net trained for
`eval.probe_fid_steps` steps on the training split with a fixed seed. Its numbers are NOT
comparable with rFID nor with any published FID (another network, another feature space,
another dimension), nor between data sets or step counts: only between models evaluated on
the same data with the same settings, which then share one classifier.

The classifier is trained with plain `jax.jit` on one device, so that it (and the score)
does not depend on the run's device count, and cached per data set in
`eval.probe_fid_cache` (default: ~/.cache/vaelab/probe_fid, or $XDG_CACHE_HOME's): a file
named by a hash of what identifies the data set and the training (its name, paths, size,
image shape, classes, a hash of some of its images and labels, the steps, the backend), so
that a changed data set trains a new classifier instead of reusing a stale one, and every
model of a study is scored by the same one. Writes are atomic (a temporary file renamed), so
concurrent runs at worst train the same classifier twice.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import serialization

from vaelab.evaluate import fid

# Part of the cache key: a change to the network or its training below must change it.
RECIPE = "conv16-32-64_grid4_dense128_adam1e-3_batch64_seed0_v1"
SEED = 0
BATCH = 64
LEARNING_RATE = 1e-3
GRID = 4
FEATURE_CHUNK = 256
# Images whose bytes enter the cache key, spread over the split.
HASHED_IMAGES = 16


class Classifier(nn.Module):
  """Three 3x3 convolutions (the last two strided), the maps resampled to a 4x4 grid and a
  128-unit layer whose ReLU output is the feature space: small enough to train on a CPU,
  the same size for any image size. The grid keeps where things are (a global mean pool
  misclassified several times as many MNIST digits at the same cost)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, features: bool = False):
    h = nn.relu(nn.Conv(16, (3, 3))(x))
    h = nn.relu(nn.Conv(32, (3, 3), strides=2)(h))
    h = nn.relu(nn.Conv(64, (3, 3), strides=2)(h))
    # Linear resampling with antialiasing: an area-weighted mean where it shrinks the maps.
    h = jax.image.resize(h, (h.shape[0], GRID, GRID, h.shape[-1]), "linear")
    f = nn.relu(nn.Dense(128)(h.reshape(h.shape[0], -1)))
    if features:
      return f
    return nn.Dense(self.num_classes)(f)


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vaelab", "probe_fid")


def _num_classes(source) -> int:
  if source.info.num_classes:
    return int(source.info.num_classes)
  top = 0
  for i in range(0, len(source), 10000):
    top = max(top, int(source.get(np.arange(i, min(i + 10000, len(source))))["label"].max()))
  return top + 1


def cache_key(source, steps: int, identity: dict | None = None) -> str:
  """A hash of what identifies the training split and the classifier's training: `identity`
  (the config's data name and paths), the source's name, size, image shape and classes, the
  bytes of HASHED_IMAGES of its images and labels, the steps, the recipe and the backend."""
  n = len(source)
  idx = np.unique(np.linspace(0, n - 1, min(n, HASHED_IMAGES)).astype(np.int64))
  batch = source.get(idx)
  h = hashlib.sha256()
  h.update(json.dumps({"identity": identity or {}, "name": source.name, "n": n,
                       "shape": list(source.info.image_shape),
                       "classes": source.info.num_classes, "steps": int(steps),
                       "recipe": RECIPE, "backend": jax.default_backend()},
                      sort_keys=True, default=str).encode())
  h.update(np.ascontiguousarray(batch["image"], np.float32).tobytes())
  h.update(np.ascontiguousarray(batch["label"], np.int64).tobytes())
  return h.hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def _train_step(num_classes: int):
  model, tx = Classifier(num_classes), optax.adam(LEARNING_RATE)

  def loss_fn(params, x, y):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return model, tx, step


def train_classifier(source, steps: int, num_classes: int | None = None) -> dict:
  """The classifier's params after `steps` Adam steps on batches of BATCH examples drawn
  (with replacement, from SEED) from `source`, which needs labels."""
  num_classes = num_classes or _num_classes(source)
  model, tx, step = _train_step(num_classes)
  shape = tuple(source.info.image_shape)
  params = jax.jit(model.init)(jax.random.key(SEED), jnp.zeros((1,) + shape))["params"]
  opt_state = tx.init(params)
  rng = np.random.default_rng(SEED)
  for _ in range(int(steps)):
    b = source.get(np.sort(rng.integers(0, len(source), BATCH)))
    params, opt_state, _ = step(params, opt_state, b["image"], b["label"].astype(np.int32))
  return jax.device_get(params)


@dataclasses.dataclass
class Probe:
  """A trained classifier whose penultimate features probe-FID compares."""
  params: dict
  num_classes: int

  def features(self, images) -> np.ndarray:
    """(N, 128) features of images (N, H, W, C) in [0, 1], FEATURE_CHUNK at a time (padded:
    one program)."""
    images = np.asarray(images, np.float32)
    out = []
    for i in range(0, len(images), FEATURE_CHUNK):
      part = images[i:i + FEATURE_CHUNK]
      m = len(part)
      if m < FEATURE_CHUNK:
        part = np.concatenate([part, np.zeros((FEATURE_CHUNK - m,) + part.shape[1:],
                                              part.dtype)])
      out.append(np.asarray(_features(Classifier(self.num_classes), self.params, part))[:m])
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=0)
def _features(model, params, x):
  return model.apply({"params": params}, x, features=True)


def _read(path):
  with open(path, "rb") as f:
    state = serialization.msgpack_restore(f.read())
  return state["params"], int(state["num_classes"])


def _write(path, params, num_classes: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = serialization.msgpack_serialize({"params": params, "num_classes": num_classes})
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def classifier(source, steps: int, cache_dir: str = "",
               identity: dict | None = None) -> tuple[Probe, bool]:
  """(the data set's probe classifier, whether it came from the cache): read from
  `cache_dir` (default_cache_dir() when empty) where a file of this data set's key exists,
  else trained on `source` (the training split, with labels) and written there."""
  cache_dir = cache_dir or default_cache_dir()
  path = os.path.join(cache_dir, f"{cache_key(source, steps, identity)}.msgpack")
  if os.path.isfile(path):
    try:
      params, num_classes = _read(path)
      return Probe(params, num_classes), True
    except Exception as e:  # a foreign or damaged file: train again and replace it
      logging.warning("probe-FID: cached classifier %s unreadable (%s); training anew", path, e)
  num_classes = _num_classes(source)
  params = train_classifier(source, steps, num_classes)
  try:
    _write(path, params, num_classes)
  except OSError as e:  # a read-only cache costs time, not the result
    logging.warning("probe-FID: could not cache the classifier in %s (%s)", path, e)
  return Probe(params, num_classes), False


def probe_fid(probe: Probe, images, reconstructions) -> float:
  """The Frechet distance between the probe's features of `images` and of `reconstructions`
  (N >= 2 each, (N, H, W, C) in [0, 1]). Not comparable with rFID (see the module's
  docstring)."""
  return fid.distance_of_features(probe.features(images), probe.features(reconstructions))
