"""Image quality of a model's reconstructions, for families that compose it into their final
evaluation (a tokenizer's): eval/psnr, eval/ssim, eval/probe_fid and eval/rfid.

- eval/psnr, eval/ssim: dm_pix's PSNR and SSIM (max_val 1) of each scored evaluation image
  and its reconstruction (`model.reconstruct`), averaged over the images. A perfect
  reconstruction has an infinite PSNR; each image's PSNR is capped at PSNR_CAP dB so that
  one such image does not make the mean infinite (dm_pix's value wherever it is below the
  cap). SSIM's Gaussian window is 11 pixels, or the image's side where that is smaller.
- eval/probe_fid (data with labels, eval.probe_fid): the Frechet distance between the
  images and their reconstructions in the features of a small classifier trained on the
  data (evaluate/probe_fid.py). Comparable only between models on the same data and
  settings; NOT with rFID or any published FID.
- eval/rfid (only when eval.inception_weights names the FID Inception's weights): the same
  distance in pytorch-fid's Inception pool3 features (evaluate/fid.py, inception.py); a
  paper's rFID only at its image count and resolution.
Scored: the first eval.quality_images images of the evaluation split (0: all of it), read
in batches of eval.batch_size, as the model sees them (binarized as in training).
"""
from __future__ import annotations

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from vaelab import checks, spmd
from vaelab.errors import ConfigError
from vaelab.evaluate import fid, inception, probe_fid

PSNR_CAP = 100.0  # dB: an MSE of 1e-10 on images in [0, 1]
SSIM_FILTER = 11
INCEPTION_CHUNK = 50
# What identifies the training split beside its contents (probe-FID's cache key).
DATA_IDENTITY = ("name", "train_path", "data_dir", "train_split", "path", "num_eval",
                 "binarize")


def config_keys(c) -> None:
  """The eval.* keys of image quality, added to a family's config."""
  # The FID Inception's .npz (experiments/convert_inception_weights.py); "": no rFID.
  c.eval.inception_weights = ""
  c.eval.probe_fid = True  # probe-FID where the data has labels
  c.eval.probe_fid_steps = 1000  # the probe classifier's training steps (part of its cache key)
  c.eval.probe_fid_cache = ""  # folder of cached classifiers; "": ~/.cache/vaelab/probe_fid
  c.eval.quality_images = 0  # evaluation images scored (the first ones); 0: all


def validate(config) -> None:
  """ConfigError naming the key; the weights file is read (not kept) when given."""
  e = config.eval
  if not isinstance(e.inception_weights, str):
    raise ConfigError(f"eval.inception_weights={e.inception_weights!r}: a path (str), or '' "
                      f"for no rFID")
  if e.inception_weights:
    inception.check_weights(e.inception_weights)
  if not isinstance(e.probe_fid, bool):
    raise ConfigError(f"eval.probe_fid={e.probe_fid!r}: expected True or False")
  checks.integer(e.probe_fid_steps, "eval.probe_fid_steps", 1)
  if not isinstance(e.probe_fid_cache, str):
    raise ConfigError(f"eval.probe_fid_cache={e.probe_fid_cache!r}: a folder (str), or '' "
                      f"for ~/.cache/vaelab/probe_fid")
  checks.integer(e.quality_images, "eval.quality_images", 0)


@functools.partial(jax.jit, static_argnums=2)
def _scores(x, r, filter_size: int):
  psnr = jnp.minimum(pix.psnr(x, r), PSNR_CAP)
  ssim = pix.ssim(x, r, max_val=1.0, filter_size=filter_size)
  return psnr, ssim


def scores(images, reconstructions):
  """Per-image (PSNR capped at PSNR_CAP, SSIM) of images (B, H, W, C) in [0, 1]."""
  filter_size = min(SSIM_FILTER, *np.shape(images)[1:3])
  return _scores(jnp.asarray(images, jnp.float32), jnp.asarray(reconstructions, jnp.float32),
                 filter_size)


def _padded(x, size: int):
  """x with its last row repeated up to `size` rows: every batch one shape, one compile."""
  m = len(x)
  return x if m == size else np.concatenate([x, np.repeat(x[-1:], size - m, 0)])


def final_analyses(config, model, variables, train_source, eval_source) -> dict[str, float]:
  """Family.final_analyses: eval/psnr, eval/ssim, and eval/probe_fid and eval/rfid where
  they apply (see the module's docstring)."""
  e = config.eval
  n = len(eval_source) if int(e.quality_images) == 0 else min(int(e.quality_images),
                                                               len(eval_source))
  batch = min(int(e.batch_size), n)
  probe = None
  if e.probe_fid and train_source.info.has_label and n >= 2:
    identity = {k: config.data.get(k) for k in DATA_IDENTITY}
    probe, _ = probe_fid.classifier(train_source, int(e.probe_fid_steps),
                                    e.probe_fid_cache, identity)
  inception_params = (inception.load_weights(e.inception_weights)
                      if e.inception_weights and n >= 2 else None)
  psnr, ssim = [], []
  feats = {"probe": ([], []), "inception": ([], [])}
  for start in range(0, n, batch):
    idx = np.arange(start, min(start + batch, n))
    m = len(idx)
    x = np.asarray(eval_source.get(idx)["image"], np.float32)
    r = np.asarray(spmd.apply(model, variables, _padded(x, batch), method="reconstruct"),
                   np.float32)[:m]
    p, s = scores(_padded(x, batch), _padded(r, batch))
    psnr.append(np.asarray(p)[:m])
    ssim.append(np.asarray(s)[:m])
    if probe is not None:
      feats["probe"][0].append(probe.features(x))
      feats["probe"][1].append(probe.features(r))
    if inception_params is not None:
      feats["inception"][0].append(inception.features_in_chunks(inception_params, x,
                                                                INCEPTION_CHUNK))
      feats["inception"][1].append(inception.features_in_chunks(inception_params, r,
                                                                INCEPTION_CHUNK))
  out = {"eval/psnr": float(np.mean(np.concatenate(psnr))),
         "eval/ssim": float(np.mean(np.concatenate(ssim)))}
  if probe is not None:
    out["eval/probe_fid"] = fid.distance_of_features(*map(np.concatenate, feats["probe"]))
  if inception_params is not None:
    out["eval/rfid"] = fid.distance_of_features(*map(np.concatenate, feats["inception"]))
  return out
