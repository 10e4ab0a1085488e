"""The disentanglement_lib study configs say what dlib trains: the AnnealedVAE's learning
rate, steps and C_max grid, FactorVAE's update count, DIP-VAE's lambda_d derived from the
type and lambda_od under command-line overrides."""
import os

import jax
import optax
import pytest
from absl import flags
from ml_collections import config_flags

import vaelab
from conftest import ROOT, set_overrides, tiny_config
from vaelab import config_base, validation
from vaelab.models import dip_vae, factor_vae
from vaelab.training import experiment
from vaelab.training import sweep as sweep_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DIP = "configs/dip_vae_dsprites.py"


def command_line(*args):
  """The config `python -m vaelab.main --config=... --config.key=value` would train."""
  argv = ["vaelab.main", *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


@pytest.mark.parametrize("args,lambda_od,lambda_d", [
    ((), 10.0, 100.0),  # dip_vae_i, lambda_d_factor 10
    (("--config.loss.dip_type=ii",), 10.0, 10.0),  # dip_vae_ii, factor 1
    (("--config.loss.lambda_od=20",), 20.0, 200.0),
    (("--config.loss.dip_type=ii", "--config.loss.lambda_od=20"), 20.0, 20.0),
    (("--config.loss.lambda_od=20", "--config.loss.lambda_d=3"), 20.0, 3.0),  # explicit
    (("--config.loss.lambda_d=0",), 10.0, 0.0),
])
def test_dip_lambda_d_follows_command_line_overrides(args, lambda_od, lambda_d):
  os.chdir(ROOT)
  config = command_line(f"--config={DIP}", *args)
  validation.validate(config, num_devices=1)
  assert dip_vae.hparams(config) == {"lambda_od": lambda_od, "lambda_d": lambda_d}


def test_dip_lambda_d_reaches_the_step_and_the_sweep():
  os.chdir(ROOT)
  # The experiment a run builds carries the derived weight into its step's arguments.
  config = command_line(f"--config={DIP}:runlocal", "--config.loss.dip_type=ii",
                        "--config.loss.lambda_od=20", "--config.data.num_eval=64")
  exp = experiment.build(config)
  assert float(exp.hparams["lambda_d"]) == 20.0 and float(exp.hparams["lambda_od"]) == 20.0
  # The variants and the sweep go through the same derivation.
  c = config_base.load_config(DIP + ":dip_type=ii,lambda_od=5")
  assert dip_vae.hparams(c)["lambda_d"] == 5.0
  got = set()
  for t in sweep_lib.load_sweep(DIP):
    c = set_overrides(config_base.load_config(DIP), t)
    got.add((c.loss.dip_type, dip_vae.hparams(c)["lambda_od"], dip_vae.hparams(c)["lambda_d"]))
  grid = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
  assert got == {("i", v, 10 * v) for v in grid} | {("ii", v, v) for v in grid}
  # Negative values other than the "derive" marker are refused, naming the keys.
  with pytest.raises(vaelab.errors.ConfigError, match="loss.lambda_d=-0.5.*loss.lambda_od"):
    validation.validate(set_overrides(config_base.load_config(DIP), {"loss.lambda_d": -0.5}),
                        num_devices=1)


def test_capacity_config_is_dlibs_annealed_vae():
  os.chdir(ROOT)
  c = config_base.load_config("configs/capacity_vae_dsprites.py")
  assert c.optimizer.learning_rate == 1e-4 and c.num_train_steps == 300_000
  assert (c.loss.gamma, c.loss.capacity_steps, c.loss.capacity_max) == (1000.0, 100_000, 25.0)
  assert c.model.encoder == "dlib_conv" and c.batch_size == 64 and c.model.latent_dim == 10
  assert config_base.load_config(
      "configs/capacity_vae_dsprites.py:capacity_max=75").loss.capacity_max == 75.0
  trials = sweep_lib.load_sweep("configs/capacity_vae_dsprites.py")
  assert [t["loss.capacity_max"] for t in trials] == [5.0, 10.0, 25.0, 50.0, 75.0, 100.0]
  local = config_base.load_config("configs/capacity_vae_dsprites.py:runlocal")
  assert local.model.encoder == "mlp" and local.num_train_steps <= 3000


def test_factor_vae_makes_dlibs_number_of_updates(npz_pair):
  os.chdir(ROOT)
  c = config_base.load_config("configs/factor_vae_dsprites.py")
  # dlib: training_steps = 300k of a global step both minimize calls advance.
  assert c.num_train_steps == 150_000 and factor_vae.FAMILY.groups == ("discriminator",)
  assert c.model.encoder == "dlib_conv"
  # One step here is one update of each network: after 3 steps both Adams counted 3.
  config = tiny_config("factor_vae", *npz_pair, num_train_steps=3, log_every=3,
                       eval_every=3, checkpoint_every=3, batch_size=16,
                       **{"model.discriminator_hidden": (8,)})
  run = vaelab.train(config)
  counts = {}
  for name, opt_state in [("model", run.state.opt_state),
                          *run.state.group_opt_state.items()]:
    adam = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(
        s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
    assert len(adam) == 1, name
    counts[name] = int(adam[0].count)
  assert counts == {"model": 3, "discriminator": 3}
