"""A family defined outside vaelab joins with one call (`vaelab.register_family`) and is
then found by the command line, the sweep and the run contract, as a newcomer would use it:
a package of their own and a config file in a folder of their own."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from vaelab import models
from vaelab.errors import ConfigError
from vaelab.models import ae

# An autoencoder with an L1 penalty on its code: the AE's module and evaluation, its own
# objective and hyperparameter.
FAMILY_MODULE = """
import jax.numpy as jnp

import vaelab
from vaelab.losses import reconstruction
from vaelab.models import ae


def config_keys(c):
  ae.config_keys(c)
  c.model.name = "l1_ae"
  c.loss.l1_weight = 0.01


def make_loss(config, info=None):
  likelihood = config.model.likelihood

  def loss(model, params, model_state, batch, keys, hparams):
    x, variables = batch["image"], {"params": params, **model_state}
    code = model.apply(variables, x, method="encode")
    logits = model.apply(variables, code, method="decode")
    l1 = jnp.abs(code).sum(-1).mean()
    value = reconstruction.nll(likelihood, logits, x).mean() + hparams["l1_weight"] * l1
    return value, ({"l1": l1}, model_state)

  return loss


FAMILY = vaelab.register_family(ae.variant(
    "l1_ae", make_loss, lambda c: {"l1_weight": float(c.loss.l1_weight)}, ae.validate))
"""

CONFIG_FILE = """
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pkg"))
import l1_ae  # noqa: E402  (registers the family)

from vaelab import config_base  # noqa: E402


def get_config(arg=None):
  c = config_base.base_config()
  l1_ae.config_keys(c)
  c.data.name = "npz"
  c.data.train_path, c.data.eval_path = {train!r}, {evalp!r}
  c.model.hidden = (16,)
  c.model.latent_dim = 4
  c.batch_size = 16
  c.num_train_steps = 6
  c.log_every = c.eval_every = c.checkpoint_every = 3
  c.eval.batch_size = 32
  c.eval.num_pictures = 8
  return c
"""


@pytest.fixture(scope="module")
def outside(npz_pair, tmp_path_factory):
  """The newcomer's folders: pkg/l1_ae.py and configs/l1_ae_blobs.py, outside vaelab."""
  root = tmp_path_factory.mktemp("outside")
  (root / "pkg").mkdir()
  (root / "configs").mkdir()
  (root / "pkg" / "l1_ae.py").write_text(FAMILY_MODULE)
  train, evalp = npz_pair
  (root / "configs" / "l1_ae_blobs.py").write_text(
      CONFIG_FILE.replace("{train!r}", repr(train)).replace("{evalp!r}", repr(evalp)))
  return root


def _run(*args, env=None, timeout=900):
  out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, **(env or {})), timeout=timeout)
  assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
  return out


def test_register_family_takes_a_family_or_its_module_and_refuses_clashes():
  mine = ae.variant("mine_ae", ae.make_loss, lambda c: {}, ae.validate)
  assert models.register_family(mine) is mine
  assert models.get_family("mine_ae") is mine and "mine_ae" in models.available()
  assert models.register_family(mine) is mine  # again, the same family: a no-op
  with pytest.raises(ConfigError, match="already registered"):
    models.register_family(dataclasses.replace(mine, make_loss=lambda c, i=None: None))
  with pytest.raises(ConfigError, match="one of vaelab's own"):
    models.register_family(dataclasses.replace(mine, name="vae"))
  with pytest.raises(TypeError, match="Family or a module defining FAMILY"):
    models.register_family(object())
  with pytest.raises(ConfigError, match="register_family"):
    models.get_family("nobody_ae")


def test_an_outside_family_trains_and_sweeps_from_the_command_line(outside, tmp_path):
  config = str(outside / "configs" / "l1_ae_blobs.py")
  _run("-m", "vaelab.main", f"--config={config}", f"--workdir={tmp_path / 'run'}",
       "--config.loss.l1_weight=0.1")
  assert os.path.exists(tmp_path / "run" / "results.json")
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    assert '"train/l1"' in f.read()
  out = _run("-m", "vaelab.sweep", f"--config={config}", f"--workdir={tmp_path / 'sweep'}",
             "--sweep=loss.l1_weight=0,0.1", "--sweep=seed=0,1")
  assert "Population of 4" in out.stderr  # its hyperparameter is a step argument
  with open(tmp_path / "sweep" / "sweep.csv") as f:
    assert len(f.read().strip().splitlines()) == 5


@pytest.mark.slow
def test_an_outside_family_is_held_to_the_contract_with_one_command(outside):
  """`make contract FAMILY=l1_ae CONFIGS=<folder>`: every contract check of that family."""
  out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_contract.py",
             env={"VAELAB_CONTRACT_CONFIGS": str(outside / "configs"),
                  "VAELAB_CONTRACT_FAMILY": "l1_ae"})
  summary = out.stdout.strip().splitlines()[-1]
  # devices, resume, one config's populations, 4-device resume, populations, evaluation
  assert "6 passed" in summary and "failed" not in summary, out.stdout[-3000:]
