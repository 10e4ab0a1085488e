"""Keys every config has, and the variant-string parser the config files share. A
family's own keys are set by its module's `config_keys` (vaelab/models/<family>.py)."""
from __future__ import annotations

import importlib.util
import os

import ml_collections


def parse_arg(arg: str | None, **defaults):
  """`configs/NAME.py:runlocal,key=value` -> ConfigDict of the variant's settings.

  A bare word sets a boolean flag (`runlocal`), `key=value` sets a typed default.
  """
  out = ml_collections.ConfigDict(dict(defaults))
  for part in (arg or "").split(","):
    if not part:
      continue
    key, _, value = part.partition("=")
    if key not in out:
      raise ValueError(f"unknown config variant {key!r}; known: {sorted(out.keys())}")
    if not value:
      out[key] = True
    else:
      out[key] = type(defaults[key])(value) if not isinstance(defaults[key], bool) else (
          value.lower() in ("1", "true", "yes"))
  return out


def load_config(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """`configs/NAME.py[:variant]` as the command line would load it (locked: a misspelled
  override raises KeyError naming it), with dotted-key `overrides` set. For notebooks
  and scripts; relative paths are taken from the repository root."""
  path, _, arg = path.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  spec = importlib.util.spec_from_file_location(
      "config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  config.lock()
  return set_overrides(config, overrides or {})


def flat(config) -> dict:
  """{dotted key: value} of every leaf of a ConfigDict (or nested dict)."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if hasattr(value, "items"):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = value

  walk(config, "")
  return out


def read_saved(workdir: str) -> ml_collections.ConfigDict:
  """The config a run wrote to `workdir`/config.json, locked, with JSON's lists back as the
  tuples the configs hold."""
  import json
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir!r} is not the workdir of a run")
  with open(path) as f:
    saved = json.load(f)

  def tuples(node):
    if isinstance(node, dict):
      return {k: tuples(v) for k, v in node.items()}
    if isinstance(node, list):
      return tuple(tuples(v) for v in node)
    return node

  config = ml_collections.ConfigDict(tuples(saved))
  # A key every config has now, which the run's older config.json may lack, takes its default.
  have = flat(config)
  defaults = {k: v for k, v in flat(base_config()).items() if k not in have}
  for key, value in defaults.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config


def set_overrides(config, overrides: dict):
  """Sets dotted keys ("model.hidden") of `config`; an unknown key raises KeyError."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"config has no key {key!r}")
    node[leaf] = value
  return config


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128  # global, split over all devices
  c.num_train_steps = 1000
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does
  # Activations' dtype: float32 | bfloat16 | float16 (mixed precision); parameters, optimizer
  # state and the objectives stay float32 (models/nets.py).
  c.dtype = "float32"

  c.data = ml_collections.ConfigDict()
  # npz | mnist | fashion_mnist | cifar10 | dsprites | shapes3d (TFDS) | imagenet2012 (TFDS,
  # streamed: its keys come with data/tfds_stream.config_keys) | procedural_dsprites |
  # color_dsprites | noisy_dsprites | scream_dsprites (rendered) | dsprites_file |
  # shapes3d_file | mpi3d_file | smallnorb_file | cars3d_file (official files at data.path)
  c.data.name = "mnist"
  c.data.train_path = ""  # for npz
  c.data.eval_path = ""  # for npz
  c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
  c.data.train_split = "train"  # TFDS split names
  c.data.eval_split = "test"
  c.data.num_eval = 10000  # held-out sample size of procedural sets and official files
  c.data.path = ""  # the official file (or folder) of a *_file data set
  c.data.scream_path = ""  # scream_dsprites' background image (dlib's scream.jpg)
  # A file with a published checksum must match it (computed once, cached in FILE.sha256).
  c.data.verify = True
  c.data.binarize = "none"  # none | threshold | dynamic
  # Where batches are made: auto (on the devices when the source has a device form that
  # fits: in-memory arrays, procedural dSprites) | device | host (a prefetching thread).
  c.data.placement = "auto"

  c.model = ml_collections.ConfigDict()
  c.model.name = "vae"
  c.model.encoder = "mlp"  # mlp | conv; the decoder mirrors it
  c.model.hidden = (512, 512)
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.activation = "relu"
  c.model.latent_dim = 32

  c.loss = ml_collections.ConfigDict()

  c.optimizer = optimizer_section()

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500
  c.eval.num_pictures = 32
  c.eval.probe_train_size = 10000  # training examples the linear probe is fitted on
  # Disentanglement metrics of the features, computed at the end when the data has
  # ground-truth factors; sizes as in disentanglement_lib (SAP, Modularity / Explicitness
  # and DCI test on num_eval points; IRS and the unsupervised scores use num_train).
  c.eval.disentanglement = True
  c.eval.disentanglement_metrics = ("betavae", "factorvae", "mig", "dci", "sap", "modularity",
                                    "irs", "unsupervised")
  c.eval.disentanglement_num_train = 10000
  c.eval.disentanglement_num_eval = 5000
  c.eval.disentanglement_batch_size = 64  # observations per BetaVAE / FactorVAE point
  c.eval.disentanglement_num_variance_estimate = 10000
  # DCI's importance model: gbt (disentanglement_lib's GradientBoostingClassifier, exact) |
  # forest (a faster random forest, not dlib's numbers).
  c.eval.dci_importance = "gbt"
  # Score the representation in periodic evaluations too, every this many steps (0: at the
  # end only), at this fraction of the sample sizes above: the metrics' curves.
  # The metrics' draws: one seed for every run, as disentanglement_lib evaluates every model,
  # so that runs are compared on the same samples (and a population draws them once).
  c.eval.disentanglement_seed = 0
  c.eval.disentanglement_every = 0
  c.eval.disentanglement_curve_fraction = 0.2
  return c


def optimizer_section(**settings) -> ml_collections.ConfigDict:
  """An optimizer's keys: `optimizer.*` of every config, and `<group>_optimizer.*` of each
  further parameter group a family trains (FactorVAE's discriminator_optimizer)."""
  o = ml_collections.ConfigDict()
  o.name = "adam"  # adam | adamw | sgd (b1 = momentum)
  o.learning_rate = 1e-3
  o.schedule = "constant"  # constant | cosine | warmup_cosine
  o.warmup_steps = 0
  o.b1 = 0.9
  o.b2 = 0.999
  o.weight_decay = 0.0  # adamw only
  o.grad_clip_norm = 0.0  # 0: no clipping
  o.update(settings)
  return o

