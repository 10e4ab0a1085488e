"""Input pipelines: every source (TFDS, npz files, procedural) behind one interface."""
from __future__ import annotations

import numpy as np

from vaelab.data.base import ArraySource, InMemorySource, SourceInfo, SubsetSource
from vaelab.errors import ConfigError

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "dsprites", "shapes3d")
# TFDS sets read batch by batch, resized and cropped to data.image_size
# (`vaelab.data.tfds_stream`, whose keys the configs add).
STREAMED_NAMES = ("imagenet2012",)
PROCEDURAL_NAMES = ("procedural_dsprites",)
# disentanglement_lib's dSprites variants, rendered like procedural dSprites
# (`vaelab.data.dsprites_variants`), and its data sets' official files
# (`vaelab.data.ground_truth_files`, read from data.path).
VARIANT_NAMES = ("color_dsprites", "noisy_dsprites", "scream_dsprites")
FILE_NAMES = ("dsprites_file", "shapes3d_file", "mpi3d_file", "smallnorb_file", "cars3d_file")
# Sequences for TD-VAE (`vaelab.data.sequences`); their keys (data.seq_len, ...) are set by
# the TD-VAE configs.
SEQUENCE_NAMES = ("moving_digits", "oscillator")
NAMES = (("npz",) + TFDS_NAMES + STREAMED_NAMES + PROCEDURAL_NAMES + VARIANT_NAMES + FILE_NAMES
         + SEQUENCE_NAMES)


def check(data_cfg) -> None:
  """What can be checked of `config.data` before anything is built: the variants' background
  image, the data sets' files (existence, shapes, dtypes, checksums)."""
  if data_cfg.name in VARIANT_NAMES:
    from vaelab.data import dsprites_variants
    dsprites_variants.check(data_cfg)
  elif data_cfg.name in FILE_NAMES:
    from vaelab.data import ground_truth_files
    ground_truth_files.check(data_cfg)
  elif data_cfg.name in STREAMED_NAMES:
    from vaelab.data import tfds_stream
    tfds_stream.check(data_cfg)


def make_sources(data_cfg) -> tuple[ArraySource, ArraySource]:
  """(train, eval) sources for `config.data`."""
  name = data_cfg.name
  if name == "npz":
    from vaelab.data import npz
    for key in ("train_path", "eval_path"):
      if not data_cfg[key]:
        raise ConfigError(f"data.{key} is empty: data.name='npz' needs an .npz file per split")
    return (npz.load_npz(data_cfg.train_path, "train"), npz.load_npz(data_cfg.eval_path, "eval"))
  if name in TFDS_NAMES:
    from vaelab.data import tfds_source
    data_dir = data_cfg.data_dir or None
    return (tfds_source.load_tfds(name, data_cfg.train_split, data_dir),
            tfds_source.load_tfds(name, data_cfg.eval_split, data_dir))
  if name in STREAMED_NAMES:
    from vaelab.data import tfds_stream
    return (tfds_stream.load(data_cfg, data_cfg.train_split, data_cfg.train_crop),
            tfds_stream.load(data_cfg, data_cfg.eval_split, "center"))
  if name == "procedural_dsprites":
    from vaelab.data import dsprites
    return _held_out(dsprites.DSpritesSource(), data_cfg)
  if name in VARIANT_NAMES:
    from vaelab.data import dsprites_variants
    return _held_out(dsprites_variants.make_source(data_cfg), data_cfg)
  if name in FILE_NAMES:
    from vaelab.data import ground_truth_files
    return _held_out(ground_truth_files.load(data_cfg), data_cfg)
  if name in SEQUENCE_NAMES:
    return _sequence_sources(data_cfg)
  raise ConfigError(f"data.name={name!r}: expected one of {NAMES}")


def _held_out(full, data_cfg):
  """(train, eval) of a procedural set or an official file. Held-out images are a fixed random sample of the
  grid, and training draws from the rest of it, so eval/elbo, eval/nll, eval/recon_sse are
  held-out numbers. (The disentanglement metrics sample the whole grid, as
  disentanglement_lib does: they score the factors, not the pixels.)"""
  rng = np.random.default_rng(12345)
  held = np.sort(rng.choice(len(full), int(data_cfg.num_eval), replace=False))
  rest = np.ones(len(full), bool)  # np.setdiff1d would sort the whole grid per build
  rest[held] = False
  return (SubsetSource(full, np.flatnonzero(rest), name=f"{data_cfg.name}/train"),
          SubsetSource(full, held, name=f"{data_cfg.name}/eval"))


def _sequence_sources(data_cfg):
  from vaelab.data import sequences
  if "seq_len" not in data_cfg:
    raise ConfigError(f"data.name={data_cfg.name!r} needs the sequence keys (data.seq_len, "
                      f"data.num_train, ...) of a TD-VAE config, e.g. "
                      f"configs/tdvae_{data_cfg.name}.py")
  if data_cfg.name == "oscillator":
    return sequences.oscillator_sources(data_cfg)
  # Moving digits from the digit images of two npz files, or procedural glyphs without them.
  if bool(data_cfg.train_path) != bool(data_cfg.eval_path):
    raise ConfigError(f"data.train_path={data_cfg.train_path!r}, data.eval_path="
                      f"{data_cfg.eval_path!r}: moving digits need both npz files of digit "
                      f"images, or neither (procedural glyphs)")
  if not data_cfg.train_path:
    return sequences.moving_digits_sources(data_cfg)
  from vaelab.data import npz
  return sequences.moving_digits_sources(data_cfg, npz.load_npz(data_cfg.train_path, "train"),
                                         npz.load_npz(data_cfg.eval_path, "eval"))
