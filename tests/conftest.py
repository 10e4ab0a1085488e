"""Shared fixtures: tiny configs and small npz files, so tests compile in seconds."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The suite's time is XLA's: each test compiles tiny programs that then run a few steps, and
# XLA's optimization passes are most of each compilation, its newer fusion emitters much of
# the rest (docs/design.md's facts). Runs compared with each other all compile the same way,
# and every subprocess inherits the settings (`xla_flags` for one with its own device
# count); JAX_DISABLE_MOST_OPTIMIZATIONS=0 restores XLA's defaults (tests/test_optimized.py).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
FAST_COMPILE = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a test process: `devices` simulated CPU devices (None: XLA's one per
  process) and the suite's compile settings. (vaelab adds its own when imported.)"""
  from vaelab import xla_flags as vaelab_flags
  flags = [f"--xla_force_host_platform_device_count={devices}"] if devices else []
  # XLA refuses flags it does not know: only on the jaxlib versions vaelab knows.
  if FAST_COMPILE and vaelab_flags._jaxlib_version() in vaelab_flags._VERSIONS:
    flags.append("--xla_cpu_use_fusion_emitters=false")
  return " ".join(flags)


if "--xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), xla_flags()]).strip()

# One compilation cache for every test run in this checkout (.cache/, git-ignored), set when
# the first process (pytest, or xdist's controller) loads this file, so that xdist's workers
# and every subprocess inherit it with the environment. Tests compile the same tiny programs
# again and again (a run alone and its population members, resumed runs), JAX's persistent
# cache is keyed by the program and its compile options (not by the Python function object
# or the test run). It grows as the code changes: delete .cache/ to start afresh.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(ROOT, ".cache", "jax-tests")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  # What several test modules build alike (the contract's data and frozen VQ runs), made
  # once per test run by whichever worker needs it first (contract_cases.prepare).
  import tempfile
  _OWN_SHARED = os.path.join(tempfile.gettempdir(), f"vaelab_tests_shared_{os.getpid()}")
  os.environ["VAELAB_TEST_SHARED"] = _OWN_SHARED
else:
  _OWN_SHARED = None


# The suite's cost in a form that reads across machines (machines here differ 2x in speed):
# CPU-minutes of every test process and the subprocesses it waited for, and the speed of a
# fixed reference loop (tests/reference_loop.py) measured at the end of the same run.
import time  # noqa: E402

_BEGAN = time.time()
_COST: dict = {}


def _cpu_seconds(children: bool = True) -> float:
  import resource
  who = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
  return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))


def pytest_sessionfinish(session):
  """Each worker leaves its CPU seconds in the run's shared directory; the process that made
  the directory adds them up and removes it (the compilation cache stays for the next run)."""
  import json
  shared = os.environ.get("VAELAB_TEST_SHARED")
  worker = os.environ.get("PYTEST_XDIST_WORKER")
  if shared and worker:
    os.makedirs(os.path.join(shared, "cpu"), exist_ok=True)
    with open(os.path.join(shared, "cpu", f"{worker}.json"), "w") as f:
      json.dump(_cpu_seconds(), f)
  if _OWN_SHARED:
    import glob
    import shutil
    workers = [json.load(open(p)) for p in glob.glob(os.path.join(_OWN_SHARED, "cpu", "*.json"))]
    # With workers, the controller's own children are the workers, already counted.
    _COST.update(cpu_s=sum(workers) + _cpu_seconds(children=not workers),
                 wall_s=time.time() - _BEGAN)
    shutil.rmtree(_OWN_SHARED, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
  """The suite's CPU-minutes and the reference loop's speed (runs of over two minutes)."""
  if not _COST or _COST["wall_s"] < 120 or os.environ.get("VAELAB_REFERENCE_LOOP") == "0":
    return
  import subprocess
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_DISABLE_MOST_OPTIMIZATIONS", "XLA_FLAGS")}
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "reference_loop.py")],
                       capture_output=True, text=True, env=env, timeout=300)
  rate = out.stdout.strip() or f"failed ({out.stderr.strip()[-200:]})"
  terminalreporter.write_line(
      f"suite cost: {_COST['cpu_s'] / 60:.1f} CPU-minutes, {_COST['wall_s'] / 60:.1f} min "
      f"wall; reference loop (tests/reference_loop.py) on this machine: {rate}")


from vaelab import config_base  # noqa: E402


def write_npz(path, n=64, size=8, seed=0, labels=True):
  """Blobs on a dark background: structured enough that an autoencoder can learn them."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  cy, cx = rng.uniform(2, size - 2, (2, n, 1, 1))
  img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0)
  arrays = {"image": (img[..., None] * 255).astype(np.uint8)}
  if labels:
    arrays["label"] = (cx[:, 0, 0] > size / 2).astype(np.int64)
  np.savez(path, **arrays)
  return str(path)


@pytest.fixture(scope="session")
def npz_pair(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  return write_npz(d / "train.npz", 256, seed=0), write_npz(d / "eval.npz", 64, seed=1)


def tiny_config(family: str, train_path: str, eval_path: str, **overrides):
  """A tiny MLP run of `family` (its own config_keys) on npz files."""
  import importlib
  from vaelab import models
  c = config_base.base_config()
  importlib.import_module(models.FAMILIES[family]).config_keys(c)
  c.data.name = "npz"
  c.data.train_path, c.data.eval_path = train_path, eval_path
  c.batch_size = 16
  c.num_train_steps = 10
  c.log_every = 1
  c.eval_every = 5
  c.checkpoint_every = 5
  c.model.hidden = (32,)
  c.model.latent_dim = 4
  c.eval.batch_size = 32
  c.eval.num_pictures = 8
  return set_overrides(c, overrides)


def set_overrides(c, overrides: dict):
  """Sets dotted keys ("model.hidden") of a ConfigDict; returns it. A key the config does not
  have is refused (config_base.set_overrides), so a renamed key cannot be set silently."""
  return config_base.set_overrides(c, overrides)


def vq_config(train, evalp, family="vqvae", **overrides):
  """A VQ model small enough to compile in seconds: one stride-2 convolution, 8x8 images ->
  4x4 latents (VQ-VAE-2: 4x4 bottom, 2x2 top), no residual blocks (the short run has one).
  Compiling is most of these tests' time: widths are all 8 so that eager ops share shapes."""
  from vaelab.models import vqvae
  c = config_base.base_config()
  vqvae.config_keys(c, family)
  c.data.name = "npz"
  c.data.train_path, c.data.eval_path = train, evalp
  c.batch_size = 16
  c.num_train_steps = 10
  c.log_every = c.eval_every = c.checkpoint_every = 5
  c.model.conv_channels = (8,)
  c.model.num_res_blocks = 0
  c.model.res_channels = 8
  c.model.num_codes = 16
  c.model.code_dim = 8
  c.model.likelihood = "bernoulli"
  c.eval.batch_size = 32
  c.eval.num_pictures = 8
  return set_overrides(c, overrides)


@pytest.fixture(scope="session")
def vq_workdir(npz_pair, tmp_path_factory):
  """A trained (briefly) VQ-VAE run on the npz blobs: what a prior config points at."""
  from vaelab.training import loop
  workdir = str(tmp_path_factory.mktemp("vq") / "vqvae")
  loop.train_and_evaluate(vq_config(*npz_pair, num_train_steps=40, log_every=20,
                                    eval_every=40, checkpoint_every=40,
                                    **{"model.dead_code_steps": 5}), workdir)
  return workdir
