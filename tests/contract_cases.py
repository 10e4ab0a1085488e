"""The runs the contract tests (tests/test_contract.py) hold every family and objective to.

A case is a config built from a file in configs/ (its `runlocal` variant where it has one),
shrunk by key names to a few seconds' size (`SHRINK`), on tiny data written here, with at
most one option changed: every value of every string option a family declares in
`Family.options` is run once, on the first config file of that family; the step's own
options (`GLOBAL_OPTIONS`: binarization, non-finite policy, placement, mixed precision) once
each, on the config named by `STEP_OPTIONS_CONFIG`; and each further parameter group's
optimizer (`Family.groups`) once as plain SGD. A new config file or a new option is a new
case without a new test.

Config files outside configs/ join with VAELAB_CONTRACT_CONFIGS (files or folders,
separated by os.pathsep): a family defined outside vaelab is held to the same contract by
the config files that register it (`vaelab.register_family`). VAELAB_CONTRACT_FAMILY
(comma-separated `model.name`s) narrows every check to those families (`make contract
FAMILY=...`).

Run as a script in a process with several (simulated) devices, it trains every case and
writes their per-step losses and final parameters:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/contract_cases.py SETUP.json OUT.npz
"""
from __future__ import annotations

import functools
import glob
import json
import os
import sys
import tempfile

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
    # VQGAN: MaskGIT's trunk and the patch discriminator (two stride-2 layers leave 2x2
    # patches of a 16x16 image; three leave none).
    "model.filters": lambda v: 8, "model.channel_multipliers": lambda v: tuple(v)[:2],
    "model.disc_filters": lambda v: 8, "model.disc_layers": lambda v: min(v, 2),
    "loss.disc_start": lambda v: min(v, STEPS // 2),  # adversarial terms in half the steps
    # The adaptive weight divides by the norm of an untrained discriminator's input gradient
    # (hundreds here), which scales batched kernels' rounding past the vmap population's
    # 1e-5; a wrong reduction still moves the losses by percents at this weight.
    "loss.disc_weight": lambda v: min(v, 0.01),
    "data.num_eval": lambda v: BATCH, "data.num_train": lambda v: 4 * BATCH,
    # The final evaluation's sample sizes (tests that evaluate a shrunk config).
    "eval.disentanglement_num_train": lambda v: min(v, 100),
    "eval.disentanglement_num_eval": lambda v: min(v, 50),
    "eval.disentanglement_num_variance_estimate": lambda v: min(v, 200),
    "eval.disentanglement_batch_size": lambda v: min(v, 8),
    "eval.probe_train_size": lambda v: min(v, 64), "eval.num_pictures": lambda v: min(v, 4),
    # probe-FID's classifier: a few steps, cached for the test run, not in the user's cache.
    "eval.probe_fid_steps": lambda v: min(v, 20),
    "eval.probe_fid_cache": lambda v: os.path.join(
        os.environ.get("VAELAB_TEST_SHARED") or tempfile.gettempdir(), "probe_fid"),
}
# Data sets replaced by the tiny npz files (by the channels their images have).
IMAGE_DATA = {"mnist": 1, "fashion_mnist": 1, "cifar10": 3, "npz": 1}
# Streamed data sets, read as they are from a tiny preparation `write_data` makes: the
# colour blobs as PNGs larger than SIDE, so that every batch is resized and randomly cropped.
STREAMED_DATA = ("imagenet2012",)
# The step's own options, every family's: binarization, the non-finite policy (skip adds a
# select to the step), where batches are made (bitwise the same batches), mixed precision.
# They belong to no family, so they run on one named config (an image family with every
# option's code path: a plain autoencoder on images with labels), not on whichever config
# file sorts first.
STEP_OPTIONS_CONFIG = "ae_mnist"
GLOBAL_OPTIONS = {"data.binarize": ("none", "threshold", "dynamic"), "nonfinite": ("skip",),
                  "data.placement": ("host", "device"), "dtype": ("bfloat16",)}
# Settings an option value needs beside it: FSQ has no learned codebook to restart or to
# initialise by k-means, and at these sizes the encoder's outputs are so small that the
# paper's levels round every channel to 0 for all 4 steps (the decoder would see zeros,
# and every FSQ case would be the same run); 16 levels per channel move them off it.
COMPANIONS = {("model.quantizer", "fsq"): {"model.dead_code_steps": 0,
                                           "model.kmeans_init": False,
                                           "model.fsq_levels": (16, 16)},
             **{("model.quantizer", q): {"model.dead_code_steps": 0, "model.kmeans_init": False}
                for q in ("lfq", "bsq", "simvq")}}
# Companions that are files `write_data` makes: {(option, value): {key: its name in data}}.
# The LPIPS term reads a weights file; random weights exercise the same program.
DATA_COMPANIONS = {("loss.perceptual", "lpips"): {"loss.lpips_weights": "lpips"}}


# Options whose code is one module that every family declaring them builds the same way
# (the quantizer and its options, models/quantizer_spec.py, in VQ-VAE, VQ-VAE-2 and the VQGAN
# tokenizer): each value runs on the one family named here, whose model is the smallest that
# uses them; the other families run their own options.
def _shared_options() -> dict:
  from vaelab.models import quantizer_spec
  return {key: "vqvae" for key in quantizer_spec.OPTIONS}


SHARED_OPTIONS = _shared_options()


def write_data(directory: str) -> dict:
  """Tiny npz splits: blobs of SIDE x SIDE, grey (1 channel) and colour (3)."""
  from conftest import write_npz
  out = {}
  for channels in (1, 3):
    for split, n, seed in (("train", 64, 0), ("eval", BATCH * 2, 1),
                           ("evalbig", EVAL_IMAGES, 2), ("evalmany", 8192, 3)):
      path = os.path.join(directory, f"{split}{channels}.npz")
      write_npz(path, n, size=SIDE, seed=seed)
      if channels == 3:
        with np.load(path) as f:
          arrays = dict(f)
        arrays["image"] = np.repeat(arrays["image"], 3, axis=-1)
        np.savez(path, **arrays)
      out[f"{split}{channels}"] = path
  out["lpips"] = _write_lpips_weights(os.path.join(directory, "lpips.npz"))
  return out


def _write_streamed(data_dir: str, train: str, evalp: str) -> str:
  """imagenet2012 prepared from the colour splits, each image enlarged to 1.5 x 2 SIDE."""
  import io
  from PIL import Image
  from vaelab.data import tfds_source
  splits = {}
  for split, path in (("train", train), ("validation", evalp)):
    with np.load(path) as f:
      image, label = f["image"], f["label"]
    rows = []
    for i, (x, y) in enumerate(zip(image, label)):
      buf = io.BytesIO()
      Image.fromarray(x).resize((2 * SIDE, 3 * SIDE // 2), Image.BICUBIC).save(buf, "PNG")
      rows.append({"image": buf.getvalue(), "label": int(y), "file_name": f"{split}{i}.png"})
    splits[split] = rows
  tfds_source.prepare(data_dir, "imagenet2012", splits)
  return data_dir


def _write_lpips_weights(path: str) -> str:
  """Random LPIPS-VGG16 weights of the right shapes (the lin weights non-negative)."""
  from vaelab.losses import lpips
  rng = np.random.default_rng(0)
  arrays = {}
  for name, shape in lpips.shapes().items():
    scale = 1.0 / np.sqrt(np.prod(shape[:-1])) if name.endswith("kernel") else 0.01
    a = rng.normal(0, scale, shape).astype(np.float32)
    arrays[name] = np.abs(a) if name.startswith("lin") else a
  np.savez(path, **arrays)
  return path


def _config_files() -> list[str]:
  files = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
  for entry in filter(None, os.environ.get("VAELAB_CONTRACT_CONFIGS", "").split(os.pathsep)):
    entry = os.path.abspath(os.path.expanduser(entry))
    if os.path.isdir(entry):
      files += sorted(glob.glob(os.path.join(entry, "*.py")))
    elif os.path.isfile(entry):
      files.append(entry)
    else:
      raise FileNotFoundError(f"VAELAB_CONTRACT_CONFIGS names {entry}, which is neither a "
                              f"config file nor a folder of them")
  return files


def families_asked() -> set[str] | None:
  """The families VAELAB_CONTRACT_FAMILY narrows the checks to (None: every family)."""
  names = os.environ.get("VAELAB_CONTRACT_FAMILY", "").strip()
  return set(filter(None, (n.strip() for n in names.split(",")))) or None


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
  if config.data.name in STREAMED_DATA:
    overrides["data.data_dir"] = data["tfds"]
    overrides["data.image_size"] = SIDE
  if "vq_workdir" in flat:
    overrides["vq_workdir"] = vq_workdirs["vqvae"]
  return config_base.set_overrides(config, overrides)


# Built once per process: family_of asks for every case's family.
@functools.cache
def base_cases() -> dict[str, str]:
  """{case name: config file} for every config file."""
  return {os.path.basename(p)[:-3]: p for p in _config_files()}


@functools.cache
def option_cases() -> dict[str, tuple[str, str, str]]:
  """{case name: (config file, option key, value)}: each value of each family's options
  (and the global ones for image families), on the family's first config file."""
  from vaelab import models
  out, seen = {}, set()
  for path in _config_files():
    config = _load(path)
    family = models.get_family(config.model.name)
    flat = config_base.flat(config)
    if os.path.basename(path)[:-3] == STEP_OPTIONS_CONFIG:
      for key, values in GLOBAL_OPTIONS.items():
        for value in values:
          if flat.get(key) != value:
            out[f"step-{key}={value}"] = (path, key, value)
    if family.name in seen:
      continue
    seen.add(family.name)
    for key, values in family.options.items():
      for value in values:
        if SHARED_OPTIONS.get(key, family.name) != family.name:
          continue
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


def family_of(case: str) -> str:
  """The `model.name` a case trains."""
  if case in base_cases():
    return _load(base_cases()[case]).model.name
  return _load(option_cases()[case][0]).model.name


def all_cases() -> list[str]:
  """Every case, or those of the families VAELAB_CONTRACT_FAMILY names."""
  cases = sorted(base_cases()) + sorted(option_cases())
  asked = families_asked()
  return cases if asked is None else [c for c in cases if family_of(c) in asked]


def config_of(case: str, data: dict, vq_workdirs: dict):
  """The shrunk config of `case`."""
  from vaelab import validation
  if case in base_cases():
    return _shrink(_load(base_cases()[case]), data, vq_workdirs)
  path, key, value = option_cases()[case]
  config = _shrink(_load(path), data, vq_workdirs)
  value = vq_workdirs[value] if key == "vq_workdir" else value
  files = {k: data[name] for k, name in DATA_COMPANIONS.get((key, value), {}).items()}
  config = config_base.set_overrides(config, {key: value, **COMPANIONS.get((key, value), {}),
                                              **files})
  validation.validate(config, num_devices=4)
  return config


def prepare(root: str) -> dict:
  """The tiny data and the frozen VQ runs (vqvae, vqvae2) the prior cases read:
  {"data": {split: path}, "vq": {name: workdir}}. Made once per test run in the run's
  shared directory (VAELAB_TEST_SHARED, set by tests/conftest.py for every worker), by
  whichever process asks first; in `root` when there is none."""
  import fcntl
  shared = os.environ.get("VAELAB_TEST_SHARED")
  if shared:
    root = os.path.join(shared, "contract")
    os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the first to finish
    made = os.path.join(root, "prepared.json")
    if os.path.exists(made):
      with open(made) as f:
        return json.load(f)
    out = _prepare(root)
    with open(made + ".tmp", "w") as f:
      json.dump(out, f)
    os.replace(made + ".tmp", made)
    return out


def _prepare(root: str) -> dict:
  from vaelab.training import loop
  data = write_data(root)
  # Only the contract's cases read a streamed set: the other callers of write_data skip it.
  data["tfds"] = _write_streamed(os.path.join(root, "tfds"), data["train3"], data["eval3"])
  vq_workdirs = {}
  for name in ("vqvae", "vqvae2"):
    vq_workdirs[name] = os.path.join(root, name)
    loop.train(config_of(f"{name}_mnist", data, {}), vq_workdirs[name], evaluate=False)
  return {"data": data, "vq": vq_workdirs}


# Attention's key bias adds q.b to every logit of a query: softmax cancels it, so its
# gradient is zero in exact arithmetic and rounding noise in float32, which Adam scales up
# to steps of about the learning rate. Runs can be compared on it only bitwise.
UNOBSERVABLE = ("['attention']/['key']/['bias']",)


def assert_params(a: dict, b: dict, exact: bool, rtol: float = 1e-5, atol: float = 1e-5,
                  outliers: float = 0.0):
  """Two runs' flat parameters: bitwise, or within rtol / atol (1e-5: about 1% of the most
  that 4 Adam steps at the configs' learning rates move a weight), a fraction `outliers`
  of each array's entries excepted."""
  assert a.keys() == b.keys()
  for k in a:
    if exact:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    elif not k.endswith(UNOBSERVABLE):
      close = np.isclose(a[k], b[k], rtol=rtol, atol=atol)
      if np.mean(~close) > outliers:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


# How far the 1- and 4-device runs may part (tests/test_contract.py's docstring says why):
# weights whose gradient is at the rounding level may take Adam steps of opposite sign, in
# at most this fraction of the model's weights, and at most ARRAY_OUTLIERS of any one array
# (a fraction, or one weight where that is less); a wrong reduction reaches far more.
OUTLIER_FRACTION = 0.005
ARRAY_OUTLIERS = 0.05
# The most one Adam step moves a weight, in learning rates: |m_hat| / sqrt(v_hat) <= 1.01
# over the first 4 steps at (b1, b2) = (0.9, 0.999) (Cauchy-Schwarz), with room to spare.
ADAM_REACH = 1.5


def assert_same_run(got, want, config, steps: int = STEPS):
  """`got` and `want`, (losses, flat params) of two runs of `config` that differ only in the
  order of their floating-point sums (the device count), are the same run."""
  (got_losses, got_params), (losses, params) = got, want
  np.testing.assert_allclose(got_losses[0], losses[0], rtol=1e-5, err_msg="step 0's loss")
  np.testing.assert_allclose(got_losses, losses, rtol=5e-5, err_msg="per-step losses")
  assert got_params.keys() == params.keys()
  peak = max(v for k, v in config_base.flat(config).items()
             if k.endswith("optimizer.learning_rate"))
  reach = 2 * ADAM_REACH * peak * steps  # two runs, each up to ADAM_REACH * lr a step
  total = sum(p.size for k, p in params.items() if not k.endswith(UNOBSERVABLE))
  outliers = 0
  for k in params:
    if k.endswith(UNOBSERVABLE):
      continue
    a, b = np.asarray(got_params[k], np.float64), np.asarray(params[k], np.float64)
    far = ~np.isclose(a, b, rtol=1e-5, atol=1e-5)
    count = int(far.sum())
    if count == 0:
      continue
    worst = float(np.max(np.abs(a - b)[far]))
    assert count <= max(1, ARRAY_OUTLIERS * a.size) and worst <= reach, (
        f"{k}: {count} of {a.size} weights differ beyond rtol/atol 1e-5 (largest difference "
        f"{worst:.3g}; Adam's reach in {steps} steps of lr {peak:g}: {reach:.3g})")
    outliers += count
  assert outliers <= OUTLIER_FRACTION * total, (
      f"{outliers} of {total} weights differ beyond rtol/atol 1e-5 (at most "
      f"{OUTLIER_FRACTION:.1%} may, where a gradient is at the rounding level)")


def flat_params(params) -> dict:
  """{path: array} of a parameter tree, on the host."""
  import jax
  return {"/".join(str(k) for k in path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_leaves_with_path(jax.device_get(params))}


def run(config, workdir=None, stop_after=None, experiment=None):
  """(per-step train losses, final parameters as a flat dict of arrays) of one run
  (`experiment`: one built for a config differing only in population keys, reused)."""
  from vaelab.training import loop
  _, state, _, history = loop.train(config, workdir, evaluate=False, stop_after=stop_after,
                                    experiment=experiment)
  losses = [h["train/loss"] for h in history if "train/loss" in h]
  return losses, flat_params(state.params)


def resumed(config, workdir: str, experiment=None):
  """(losses, params) of `config` stopped after 2 steps with a checkpoint and resumed from it;
  the workdir must then hold the checkpoint of step 2."""
  first, _ = run(config, workdir, stop_after=2, experiment=experiment)
  assert len(first) == 2 and os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  rest, params = run(config, workdir, experiment=experiment)
  return first + rest, params


# Population keys that also set something static, so their configs train apart by design
# (TD-VAE's dt features are scaled by the longest trained jump); tests/test_contract.py
# checks that they do. Any other population key must put its member beside the config.
SPLIT_BY_DESIGN = {("tdvae", "loss.long_jump"), ("tdvae", "loss.max_jump")}


def population_keys(config) -> list[str]:
  """The keys a population may vary for `config`: the seed, the learning rates, each number
  of the family's hyperparameters."""
  from vaelab.training import population
  flat = config_base.flat(config)
  return list(population.ALWAYS) + sorted(
      k for k, v in flat.items() if k not in population.ALWAYS and isinstance(v, (int, float))
      and not isinstance(v, bool) and population.is_population_key(config, k))


@functools.cache
def population_cases() -> list[str]:
  """The config files whose populations the contract trains on 1 device: each family's first,
  and any other that has a population key the family's earlier files lack (the capacity
  objective's C_max beside the beta-VAE's beta). Another file of the family with the same
  keys would run the same population code on other data and sizes."""
  covered: dict[str, set] = {}
  out = []
  for case, path in sorted(base_cases().items()):
    config = shrink_sizes(_load(path))
    keys = set(population_keys(config))
    seen = covered.setdefault(config.model.name, set())
    if not keys <= seen:
      out.append(case)
      seen |= keys
  return out


def population_members(config) -> list:
  """`config`, a member with another seed, and a member with every other key a population
  may vary for it (population_keys) changed by a small amount (more than one where keys
  changed together reach something static: TD-VAE's jumps). Each key is first checked alone
  to keep its member in `config`'s population (or to be split by design); trained, a key
  that the population path mishandled (a number left static, an array not batched) parts
  the member from its run alone whichever other keys changed with it, so one member
  carries them all."""
  from vaelab.training import population
  changed = {}
  for key in population_keys(config):
    value = population._get(config, key)
    new = value + 1 if key == "seed" or isinstance(value, int) else value * 1.5 + 0.01
    other = population._with(config, {key: new})
    if population.groups([config, other]) == [[0, 1]]:
      changed[key] = new
    else:
      assert (config.model.name, key) in SPLIT_BY_DESIGN, (
          f"{key} is a population key of {config.model.name}, but a member with it changed "
          f"trains apart: it reaches something static (add it to SPLIT_BY_DESIGN if so)")
  members = [config, population._with(config, {"seed": changed.pop("seed")})]
  combined: list[dict] = [{}]
  for key, new in changed.items():  # keys that move something static together start anew
    trial = {**combined[-1], key: new}
    if population.groups([config, population._with(config, trial)]) == [[0, 1]]:
      combined[-1] = trial
    else:
      combined.append({key: new})
  return members + [population._with(config, c) for c in combined]


def population_runs(members: list, root: str, impl: str) -> list:
  """[(losses, params)] of each member trained in one population of `impl`."""
  from vaelab.training import population
  from vaelab.training import experiment as experiment_lib
  from vaelab.training import workdir as workdir_lib
  dirs = [os.path.join(root, f"{impl}{i}") for i in range(len(members))]
  population.train_population(members, dirs, impl, evaluate=False)
  out = []
  for d, c in zip(dirs, members):
    with open(os.path.join(d, "metrics.jsonl")) as f:
      losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    out.append((losses, flat_params(workdir_lib.restore_latest(experiment_lib.build(c), d).params)))
  return out


def family_cases() -> dict[str, str]:
  """{family: the case of its first config file}."""
  out = {}
  for case, path in sorted(base_cases().items()):
    out.setdefault(_load(path).model.name, case)
  return out


# The final evaluation on 4 devices runs at the case's own size, so that its train step is
# the case's program, compiled once, over an evaluation split of a few batches; and, for the
# family of STEP_OPTIONS_CONFIG only, at a size where each device does real work per batch
# over many batches (EVAL_MODEL, EVAL_IMAGES): with programs slower than their dispatch, a
# host that ran ahead piled up collectives until XLA:CPU aborted (docs/design.md;
# tests/test_main.py holds the command line to it at a larger size). That dispatch window is
# the loop's, not a family's. Keys a config lacks are left out.
EVAL_SIZE = {"eval.batch_size": lambda v: 8, "data.num_eval": lambda v: 4 * BATCH,
             # The scores' own code is device-free past the encoder, and every score equals
             # disentanglement_lib's on 1 device (test_disentanglement.py): one score keeps
             # the encoder's batches on the 4 devices, IWAE's K = 10 their real work.
             "eval.disentanglement_metrics": lambda v: ("mig",),
             "eval.iwae_ks": lambda v: tuple(k for k in v if k <= 10)}
EVAL_IMAGES = 512
EVAL_MODEL = {"model.hidden": lambda v: tuple(512 for _ in v[:1]),
              "model.conv_channels": lambda v: tuple(32 for _ in v),
              "model.dense": lambda v: 256, "data.num_eval": lambda v: EVAL_IMAGES}


def evaluation_config(case: str, data: dict, vq_workdirs: dict):
  config = config_of(case, data, vq_workdirs)
  flat = config_base.flat(config)
  sizes, big = dict(EVAL_SIZE), config.model.name == family_of(STEP_OPTIONS_CONFIG)
  if big:
    sizes.update(EVAL_MODEL)
  overrides = {k: f(flat[k]) for k, f in sizes.items() if k in flat}
  if flat["data.name"] == "npz" and big:
    channels = 3 if "3" in os.path.basename(flat["data.eval_path"]) else 1
    overrides["data.eval_path"] = data[f"evalbig{channels}"]
  return config_base.set_overrides(config, overrides)


def evaluate_on_devices(case: str, data: dict, vq_workdirs: dict, root: str) -> dict:
  """What the command line's three modes do, in this process, through the notebook API:
  train the case's steps and evaluate (--mode=train), evaluate the checkpoint again (--mode=eval),
  sample (--mode=sample); and the API's decode(encode(x)) against its reconstruction."""
  import vaelab
  from vaelab import models
  from vaelab.training import evaluation
  config = config_base.set_overrides(evaluation_config(case, data, vq_workdirs), {
      "checkpoint_every": STEPS})
  workdir = os.path.join(root, "four", f"eval_{case}")
  run = vaelab.train(config, workdir, evaluate=True)
  again = evaluation.evaluate_checkpoint(config, workdir)
  sampled = None
  if models.get_family(config.model.name).sample is not None:
    sampled = os.path.exists(evaluation.sample_checkpoint(config, workdir, num=4))
  out = {"train": run.results, "eval": again, "sampled": sampled, "roundtrip": None}
  if hasattr(run.model, "reconstruct"):
    x = run.experiment.eval_source.get(np.arange(4))["image"]
    out["roundtrip"] = float(np.max(np.abs(run.decode(run.encode(x)) - run.reconstruct(x))))
  return out


def main(setup_path: str, out_dir: str):
  """The 4-device half of the contract: every case's run; for one case per family, its run
  resumed from a checkpoint, its population members alone and in populations of both
  impls, and its final evaluation, --mode=eval and --mode=sample at a size with real work
  per device. Each
  result is written as it is done (`out_dir`/NAME.npz or .json, `publish`), so the tests
  compare while the rest runs."""
  import jax
  from absl import logging
  from vaelab.training import experiment as experiment_lib
  logging.set_verbosity(logging.WARNING)
  with open(setup_path) as f:
    setup = json.load(f)
  data, vq = setup["data"], setup["vq_workdirs"]
  root = os.path.join(out_dir, "workdirs")
  assert jax.device_count() == 4, jax.devices()

  def keep(name, result):
    losses, params = result
    publish(out_dir, name, {"losses": np.asarray(losses),
                            **{f"param:{k}": v for k, v in params.items()}})

  import time
  seconds = {}  # what each case cost here (experiments/suite_costs.py reads them)

  def timed(name, start):
    """Records a case's seconds, rewriting the file each time: the tests end this process
    once they have read its last result."""
    seconds[name] = time.perf_counter() - start
    if setup.get("costs"):
      publish(setup["costs"], "contract_four_devices", dict(seconds))
  began = time.perf_counter()
  for case in setup["cases"]:
    start = time.perf_counter()
    config = config_of(case, data, vq)
    keep(case, run(config))
    timed(case, start)
  print(f"cases: {time.perf_counter() - began:.0f} s", flush=True)
  if setup.get("negative"):  # a statistic of each device's shard where the batch's is meant
    from vaelab import spmd
    global_mean, spmd.global_mean = spmd.global_mean, lambda x: x
    try:
      keep(f"{setup['negative']}:per_device_statistic",
           run(config_of(setup["negative"], data, vq)))
    finally:
      spmd.global_mean = global_mean
  for case in setup["families"]:
    began = time.perf_counter()
    members = population_members(config_of(case, data, vq))
    exp = experiment_lib.build(members[0])
    keep(f"{case}:resumed", resumed(members[0], os.path.join(root, f"resume_{case}"), exp))
    runs = {f"member{i}": run(m, experiment=exp) for i, m in enumerate(members)}
    for impl in ("loop", "vmap"):
      for i, r in enumerate(population_runs(members, os.path.join(root, case), impl)):
        runs[f"{impl}{i}"] = r
    publish(out_dir, f"{case}:population", {
        f"{name}:{part}": v for name, (losses, params) in runs.items()
        for part, v in [("losses", np.asarray(losses))] +
        [(f"param:{k}", p) for k, p in params.items()]})
    populations = time.perf_counter()
    publish(out_dir, f"{case}:evaluation", evaluate_on_devices(case, data, vq, root))
    print(f"{case}: populations {populations - began:.0f} s, evaluation "
          f"{time.perf_counter() - populations:.0f} s", flush=True)
    timed(f"{case}:family", began)


def publish(out_dir: str, name: str, value):
  """Writes a result whole (a dict of arrays as .npz, anything else as .json), renamed into
  place so that a reader never sees it half written."""
  path = os.path.join(out_dir, name.replace("/", "_"))
  if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
    np.savez(path + ".tmp.npz", **value)
    os.replace(path + ".tmp.npz", path + ".npz")
  else:
    with open(path + ".tmp", "w") as f:
      json.dump(value, f)
    os.replace(path + ".tmp", path + ".json")


if __name__ == "__main__":
  sys.path.insert(0, TESTS)
  main(*sys.argv[1:3])
