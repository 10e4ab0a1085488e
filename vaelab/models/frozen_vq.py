"""A frozen, trained VQ-VAE / VQ-VAE-2 run, and the code maps of images under it.

`load_frozen(vq_workdir, image_shape)` rebuilds the VQ model from the run's own
`config.json` and restores its latest usable checkpoint (cached, so the data pipeline, the
prior's model and its sampler share one copy). `encode(frozen, source)` turns an image
source into a `CodeSource` (vaelab/data/vq_codes.py): one int32 map (N, H', W') per latent
level, extracted once, with the images' labels kept.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vaelab import checkpoint as checkpoint_lib
from vaelab import config_base, spmd
from vaelab.data.base import ModelInputSource, SourceInfo
from vaelab.data.vq_codes import CodeSource, code_key
from vaelab.errors import ConfigError
from vaelab.models import get_family
from vaelab.models.quantizer_spec import prior_num_codes

# The families whose models have `code_indices` / `decode_indices` and `LEVELS`.
VQ_FAMILIES = ("vqvae", "vqvae2")


@dataclasses.dataclass(frozen=True)
class FrozenVQ:
  config: ml_collections.ConfigDict
  model: object  # an unbound VQVAE / VQVAE2 module
  variables: dict  # {"params": ..., "vq": ...}
  step: int  # the checkpoint step the variables come from
  workdir: str

  @property
  def levels(self) -> tuple[str, ...]:
    return tuple(self.model.LEVELS)

  @property
  def num_codes(self) -> int:
    """The values a code takes (FSQ: the grid's size), what a prior over them models."""
    return prior_num_codes(self.config)

  def latent_shapes(self) -> tuple[tuple[int, int], ...]:
    """(H', W') of every level, LEVELS order."""
    family_module = importlib.import_module(f"vaelab.models.{self.config.model.name}")
    return tuple(tuple(s) for s in family_module.latent_shapes(self.model))

  def decode(self, codes: tuple):
    """Code maps (one per level, LEVELS order) -> images (B, H, W, C) in [0, 1]."""
    return _decode(self.model, self.variables, tuple(codes))


@functools.partial(jax.jit, static_argnums=0)
def _decode(model, variables, codes):
  return model.apply(variables, *codes, method="decode_indices")


def check_workdir(vq_workdir: str) -> None:
  """Raises ConfigError naming `vq_workdir` unless it holds a VQ run's config and a
  checkpoint; reads nothing heavy, so it can run before anything is compiled."""
  if not vq_workdir:
    raise ConfigError("vq_workdir is empty: give the workdir of a trained vqvae or vqvae2 run "
                      "(--config.vq_workdir=DIR)")
  config_path = os.path.join(vq_workdir, "config.json")
  if not os.path.isfile(config_path):
    raise ConfigError(f"vq_workdir={vq_workdir!r}: no config.json there; expected the "
                      f"workdir of a trained vqvae or vqvae2 run")
  ckpt_dir = os.path.join(vq_workdir, "checkpoints")
  steps = [d for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []) if d.isdigit()]
  if not steps:
    raise ConfigError(f"vq_workdir={vq_workdir!r}: no checkpoint in {ckpt_dir}; train the VQ "
                      f"model first")
  name = read_config(vq_workdir).model.name
  if name not in VQ_FAMILIES:
    raise ConfigError(f"vq_workdir={vq_workdir!r} holds a {name!r} run; a prior needs one of "
                      f"{VQ_FAMILIES}")
  try:
    prior_num_codes(read_config(vq_workdir))
  except ConfigError as e:  # e.g. a residual VQ: several codes per position
    raise ConfigError(f"vq_workdir={vq_workdir!r}: {e}") from e


def read_config(vq_workdir: str) -> ml_collections.ConfigDict:
  return config_base.read_saved(vq_workdir)


def load_frozen(vq_workdir: str, image_shape: tuple[int, ...]) -> FrozenVQ:
  """The VQ model of `vq_workdir` for images of `image_shape`, at its latest usable
  checkpoint. Raises ConfigError naming the workdir when nothing there restores.

  Cached per (workdir, image shape, checkpoints present): the data pipeline, the prior's
  model and its sampler share one restore, and a newer checkpoint is noticed."""
  check_workdir(vq_workdir)
  steps = tuple(sorted(os.listdir(os.path.join(vq_workdir, "checkpoints"))))
  return _load_frozen(os.path.abspath(vq_workdir), tuple(image_shape), steps)


@functools.lru_cache(maxsize=4)
def _load_frozen(vq_workdir: str, image_shape: tuple[int, ...], steps) -> FrozenVQ:
  config = read_config(vq_workdir)
  family = get_family(config.model.name)
  try:
    model = family.make_model(config, SourceInfo(tuple(image_shape)))
  except ConfigError as e:
    raise ConfigError(f"vq_workdir={vq_workdir!r}: its model does not fit the images of this "
                      f"config's data ({tuple(image_shape)}): {e}") from e
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  # Only the model's variables and the step are read: a prior does not care how the VQ
  # model was optimized (nor do the optimizer states of older runs have to match).
  template = {"params": variables["params"],
              "model_state": {k: v for k, v in variables.items() if k != "params"},
              "step": jnp.zeros((), jnp.int32)}
  ckpt = checkpoint_lib.Checkpointer(vq_workdir, int(config.keep_checkpoints))
  try:
    state = ckpt.restore(template, part=True)
  except Exception as e:  # a shape mismatch or damage in every checkpoint
    raise ConfigError(f"vq_workdir={vq_workdir!r}: no checkpoint there restores into its "
                      f"{config.model.name} model for images of shape {tuple(image_shape)} "
                      f"(is data.* the data the VQ model was trained on?): {e}") from e
  finally:
    ckpt.close()
  if state is None:
    raise ConfigError(f"vq_workdir={vq_workdir!r}: no checkpoint to restore")
  state = jax.device_get(state)
  variables = {"params": state["params"], **state["model_state"]}
  return FrozenVQ(config, model, variables, int(state["step"]), os.path.abspath(vq_workdir))


def encode(frozen: FrozenVQ, source, batch_size: int = 500) -> CodeSource:
  """Every image of `source` as code maps of `frozen`, fed as its run's evaluation feeds it
  (`ModelInputSource`: binarized, with the evaluation's fixed draws)."""
  inputs = ModelInputSource(source, frozen.config.data.binarize, int(frozen.config.seed))
  chunks, labels = [], []
  for start in range(0, len(source), batch_size):
    idx = np.arange(start, min(start + batch_size, len(source)))
    b = inputs.get(idx)
    chunks.append(jax.device_get(spmd.apply(frozen.model, frozen.variables, b["image"],
                                            method="code_indices")))
    if "label" in b:
      labels.append(b["label"])
  codes = {code_key(level): np.concatenate([c[i] for c in chunks]).astype(np.int32)
           for i, level in enumerate(frozen.levels)}
  return CodeSource(f"{source.name}/codes", codes, source.info.image_shape,
                    np.concatenate(labels) if labels else None, source.info.num_classes)
