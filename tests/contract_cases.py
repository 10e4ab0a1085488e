"""The runs the contract tests (tests/test_contract.py) hold every family and objective to.

A case is a config built from a file in configs/ (its `runlocal` variant where it has one),
shrunk by key names to a few seconds' size (`SHRINK`), on tiny data written here, with at
most one option changed: every value of every string option a family declares in
`Family.options` is run once, on the first config file of that family, the step's own
options (`data.binarize`) once, on the first family that trains on images, and each
further parameter group's optimizer (`Family.groups`) once as plain SGD. A new config file or a new option is
a new case without a new test.

Run as a script in a process with several (simulated) devices, it trains every case and
writes their per-step losses and final parameters:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/contract_cases.py SETUP.json OUT.npz
"""
from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from vaelab import config_base  # noqa: E402

STEPS = 4
BATCH = 8  # divisible by the 4 devices of the multi-device runs
SIDE = 16  # image side: a multiple of 2**len(conv_channels) for every conv config here


def _tuple_of(size):
  return lambda v: tuple(size for _ in v[:1]) if len(v) else ()


# Sizes by key name: any config that has the key is shrunk the same way.
SHRINK = {
    "batch_size": lambda v: BATCH, "num_train_steps": lambda v: STEPS,
    "log_every": lambda v: 1, "eval_every": lambda v: 10**6,
    "checkpoint_every": lambda v: 10**6, "eval.batch_size": lambda v: BATCH,
    "model.hidden": _tuple_of(16), "model.frame_hidden": _tuple_of(16),
    "model.decoder_hidden": _tuple_of(16), "model.discriminator_hidden": _tuple_of(16),
    "model.latent_dim": lambda v: min(v, 4), "model.belief_dim": lambda v: 8,
    "model.conv_channels": lambda v: tuple(8 for _ in v), "model.dense": lambda v: min(v, 16),
    "model.res_channels": lambda v: 8, "model.num_res_blocks": lambda v: min(v, 1),
    "model.num_codes": lambda v: min(v, 16), "model.channels": lambda v: 8,
    "model.num_blocks": lambda v: 1, "model.res_per_block": lambda v: 1,
    "data.num_eval": lambda v: BATCH, "data.num_train": lambda v: 4 * BATCH,
    # The final evaluation's sample sizes (tests that evaluate a shrunk config).
    "eval.disentanglement_num_train": lambda v: min(v, 100),
    "eval.disentanglement_num_eval": lambda v: min(v, 50),
    "eval.disentanglement_num_variance_estimate": lambda v: min(v, 200),
    "eval.disentanglement_batch_size": lambda v: min(v, 8),
    "eval.probe_train_size": lambda v: min(v, 64), "eval.num_pictures": lambda v: min(v, 4),
}
# Data sets replaced by the tiny npz files (by the channels their images have).
IMAGE_DATA = {"mnist": 1, "fashion_mnist": 1, "cifar10": 3, "npz": 1}
GLOBAL_OPTIONS = {"data.binarize": ("none", "threshold", "dynamic")}
# Settings an option value needs beside it: FSQ has no learned codebook to restart or to
# initialise by k-means, and at these sizes the encoder's outputs are so small that the
# paper's levels round every channel to 0 for all 4 steps (the decoder would see zeros,
# and every FSQ case would be the same run); 16 levels per channel move them off it.
COMPANIONS = {("model.quantizer", "fsq"): {"model.dead_code_steps": 0,
                                           "model.kmeans_init": False,
                                           "model.fsq_levels": (16, 16)}}


def write_data(directory: str) -> dict:
  """Tiny npz splits: blobs of SIDE x SIDE, grey (1 channel) and colour (3)."""
  from conftest import write_npz
  out = {}
  for channels in (1, 3):
    for split, n, seed in (("train", 64, 0), ("eval", BATCH * 2, 1)):
      path = os.path.join(directory, f"{split}{channels}.npz")
      write_npz(path, n, size=SIDE, seed=seed)
      if channels == 3:
        with np.load(path) as f:
          arrays = dict(f)
        arrays["image"] = np.repeat(arrays["image"], 3, axis=-1)
        np.savez(path, **arrays)
      out[f"{split}{channels}"] = path
  return out


def _config_files() -> list[str]:
  return sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path: str):
  try:
    return config_base.load_config(path + ":runlocal")
  except ValueError:  # no runlocal variant
    return config_base.load_config(path)


def shrink_sizes(config):
  """`config` at the contract's tiny sizes (SHRINK), every key kept."""
  flat = config_base.flat(config)
  return config_base.set_overrides(config, {k: f(flat[k]) for k, f in SHRINK.items()
                                            if k in flat})


def _shrink(config, data: dict, vq_workdirs: dict):
  config = shrink_sizes(config)
  flat = config_base.flat(config)
  overrides = {}
  if config.data.name in IMAGE_DATA:
    channels = IMAGE_DATA.get(config.data.name, 1)
    overrides["data.name"] = "npz"
    overrides["data.train_path"] = data[f"train{channels}"]
    overrides["data.eval_path"] = data[f"eval{channels}"]
  if "vq_workdir" in flat:
    overrides["vq_workdir"] = vq_workdirs["vqvae"]
  return config_base.set_overrides(config, overrides)


def base_cases() -> dict[str, str]:
  """{case name: config file} for every config file."""
  return {os.path.basename(p)[:-3]: p for p in _config_files()}


def option_cases() -> dict[str, tuple[str, str, str]]:
  """{case name: (config file, option key, value)}: each value of each family's options
  (and the global ones for image families), on the family's first config file."""
  from vaelab import models
  out, seen, global_done = {}, set(), False
  for path in _config_files():
    config = _load(path)
    family = models.get_family(config.model.name)
    if family.name in seen:
      continue
    options = dict(family.options)
    if family.transform_sources is None and not global_done:
      options.update(GLOBAL_OPTIONS)  # the step's own options, once, on a family of images
      global_done = True
    seen.add(family.name)
    flat = config_base.flat(config)
    for key, values in options.items():
      for value in values:
        if flat.get(key) != value:
          out[f"{family.name}-{key}={value}"] = (path, key, value)
    for group in family.groups:
      # Adam divides a gradient's scale away; plain SGD shows a group's gradient summed
      # over devices instead of averaged (4x on 4 devices).
      key = f"{group}_optimizer.name"
      out[f"{family.name}-{key}=sgd"] = (path, key, "sgd")
  out["vq_prior-over-vqvae2"] = (os.path.join(ROOT, "configs", "vq_prior_mnist.py"),
                                 "vq_workdir", "vqvae2")
  return out


def all_cases() -> list[str]:
  return sorted(base_cases()) + sorted(option_cases())


def config_of(case: str, data: dict, vq_workdirs: dict):
  """The shrunk config of `case`."""
  from vaelab import validation
  if case in base_cases():
    return _shrink(_load(base_cases()[case]), data, vq_workdirs)
  path, key, value = option_cases()[case]
  config = _shrink(_load(path), data, vq_workdirs)
  value = vq_workdirs[value] if key == "vq_workdir" else value
  config = config_base.set_overrides(config, {key: value, **COMPANIONS.get((key, value), {})})
  validation.validate(config, num_devices=4)
  return config


def prepare(root: str) -> dict:
  """The tiny data and the frozen VQ runs (vqvae, vqvae2) the prior cases read, in `root`:
  {"data": {split: path}, "vq": {name: workdir}}."""
  from vaelab.training import loop
  data = write_data(root)
  vq_workdirs = {}
  for name in ("vqvae", "vqvae2"):
    vq_workdirs[name] = os.path.join(root, name)
    loop.train(config_of(f"{name}_mnist", data, {}), vq_workdirs[name], evaluate=False)
  return {"data": data, "vq": vq_workdirs}


# Attention's key bias adds q.b to every logit of a query: softmax cancels it, so its
# gradient is zero in exact arithmetic and rounding noise in float32, which Adam scales up
# to steps of about the learning rate. Runs can be compared on it only bitwise.
UNOBSERVABLE = ("['attention']/['key']/['bias']",)


def assert_params(a: dict, b: dict, exact: bool, rtol: float = 1e-5, atol: float = 1e-5):
  """Two runs' flat parameters: bitwise, or within rtol / atol (1e-5: about 1% of the most
  that 4 Adam steps at the configs' learning rates move a weight)."""
  assert a.keys() == b.keys()
  for k in a:
    if exact:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    elif not k.endswith(UNOBSERVABLE):
      np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def flat_params(params) -> dict:
  """{path: array} of a parameter tree, on the host."""
  import jax
  return {"/".join(str(k) for k in path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_leaves_with_path(jax.device_get(params))}


def run(config, workdir=None, stop_after=None):
  """(per-step train losses, final parameters as a flat dict of arrays) of one run."""
  from vaelab.training import loop
  _, state, _, history = loop.train(config, workdir, evaluate=False, stop_after=stop_after)
  losses = [h["train/loss"] for h in history if "train/loss" in h]
  return losses, flat_params(state.params)


def main(setup_path: str, out_path: str):
  import jax
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  with open(setup_path) as f:
    setup = json.load(f)
  out = {"devices": np.int64(jax.device_count())}
  for case in setup["cases"]:
    losses, params = run(config_of(case, setup["data"], setup["vq_workdirs"]))
    out[f"{case}:losses"] = np.asarray(losses)
    out.update({f"{case}:param:{k}": v for k, v in params.items()})
  np.savez(out_path, **out)


if __name__ == "__main__":
  sys.path.insert(0, TESTS)
  main(*sys.argv[1:3])
