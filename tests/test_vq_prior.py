"""The prior over VQ codes: code extraction from a frozen run, the baselines, a short run that
beats them, sampling through the frozen decoder, VQ-VAE-2's bottom prior conditioned on the
top codes, and refused inputs (each naming `vq_workdir` or the key)."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import set_overrides, vq_config
from vaelab import config_base, validation
from vaelab.data import npz
from vaelab.models import frozen_vq
from vaelab.errors import ConfigError
from vaelab.models import vae as vae_lib
from vaelab.models import vq_prior
from vaelab import checkpoint
from vaelab.training import loop
from vaelab.training import evaluation
from vaelab.training import experiment as experiment_lib
from vaelab.training import workdir as workdir_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def prior_config(train, evalp, vq_workdir, **overrides):
  c = config_base.base_config()
  vq_prior.config_keys(c)
  c.vq_workdir = vq_workdir
  c.data.name = "npz"
  c.data.train_path, c.data.eval_path = train, evalp
  c.batch_size = 16
  c.num_train_steps = 10
  c.log_every = c.eval_every = c.checkpoint_every = 5
  c.model.channels = 16
  c.model.num_blocks = 1
  c.model.res_per_block = 1
  c.model.num_heads = 2
  c.optimizer.learning_rate = 3e-3
  c.eval.batch_size = 32
  c.eval.num_pictures = 8
  return set_overrides(c, overrides)


@pytest.fixture(scope="module")
def prior_run(npz_pair, vq_workdir, tmp_path_factory):
  """A short prior run on the codes of the fixture's VQ-VAE: (config, workdir, results)."""
  workdir = str(tmp_path_factory.mktemp("prior") / "run")
  config = prior_config(*npz_pair, vq_workdir, num_train_steps=200, log_every=50,
                        eval_every=200, checkpoint_every=200)
  return config, workdir, loop.train_and_evaluate(config, workdir)


def test_unigram_baseline_is_the_smoothed_cross_entropy_of_held_out_codes():
  # Add-one counts of [0, 0, 1, 1, 1, 2] over K = 4: 3, 4, 2, 1 of 10.
  got = vq_prior.unigram_nll(np.array([0, 0, 1, 1, 1, 2]), np.array([[0], [3]]), 4)
  assert got == pytest.approx(-(math.log(0.3) + math.log(0.1)) / 2, rel=1e-9)
  # Uniform use of all codes: log K.
  assert vq_prior.unigram_nll(np.arange(8), np.arange(8), 8) == pytest.approx(math.log(8))


def test_codes_are_the_frozen_models_indices_of_every_image(npz_pair, vq_workdir):
  frozen = frozen_vq.load_frozen(vq_workdir, (8, 8, 1))
  assert frozen_vq.load_frozen(vq_workdir, (8, 8, 1)) is frozen  # one restore, shared
  assert frozen.step == 40 and frozen.levels == ("",) and frozen.latent_shapes() == ((4, 4),)
  images = npz.load_npz(npz_pair[1])
  source = frozen_vq.encode(frozen, images, batch_size=20)  # uneven chunks
  x = images.get(np.arange(len(images)))
  expected = frozen.model.apply(frozen.variables, x["image"], method="encode_indices")
  batch = source.get(np.arange(len(source)))
  assert set(batch) == {"codes", "label"}
  np.testing.assert_array_equal(batch["codes"], np.asarray(expected))
  np.testing.assert_array_equal(batch["label"], x["label"])
  assert batch["codes"].dtype == np.int32 and batch["codes"].shape == (64, 4, 4)


def test_a_short_run_beats_the_uniform_and_unigram_baselines(prior_run):
  config, workdir, results = prior_run
  assert results["eval/prior_uniform_nll"] == pytest.approx(math.log(16))
  assert results["eval/vq_step"] == 40
  assert results["eval/prior_nll"] < results["eval/prior_unigram_nll"] - 0.1, results
  assert results["eval/prior_unigram_nll"] < results["eval/prior_uniform_nll"], results
  # The names of earlier runs, beside the fixed ones.
  for name in ("uniform_nll", "unigram_nll", "uniform_bits_per_code"):
    assert results[f"eval/{name}"] == results[f"eval/prior_{name}"]
  assert results["eval/prior_bits_per_code"] == pytest.approx(
      results["eval/prior_nll"] / math.log(2), rel=1e-5)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["eval/prior_nll"] == pytest.approx(results["eval/prior_nll"])
  files = set(os.listdir(workdir))
  assert {"samples.png", "code_reconstructions.png"} <= files
  assert "reconstructions.png" not in files  # code maps are not images


def test_eval_nll_is_the_pixelsnail_likelihood_of_the_held_out_codes(prior_run):
  config, workdir, results = prior_run
  exp = experiment_lib.build(config)
  variables = jax.device_get(workdir_lib.restore_latest(exp, workdir).variables())
  codes = exp.eval_source.get(np.arange(len(exp.eval_source)))["codes"]
  logits, = exp.model.apply(variables, (jnp.asarray(codes),))
  from vaelab.losses import vq_prior as prior_losses
  direct = float(np.mean(prior_losses.nats_per_code(logits, jnp.asarray(codes))))
  assert results["eval/prior_nll"] == pytest.approx(direct, rel=1e-4)


def test_samples_are_valid_codes_and_decode_to_images(prior_run):
  config, workdir, _ = prior_run
  exp = experiment_lib.build(config)
  variables = jax.device_get(workdir_lib.restore_latest(exp, workdir).variables())
  key = jax.random.key(3)
  codes, = vq_prior.sample_codes(exp.model, variables, key, 5)
  assert codes.shape == (5, 4, 4) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < 16
  assert exp.model.sampler == "cached"
  again, = vq_prior.sample_codes(exp.model, variables, key, 5)
  np.testing.assert_array_equal(codes, again)
  full, = vq_prior.sample_codes(exp.model, variables, key, 5, sampler="full")
  np.testing.assert_array_equal(codes, full)
  images = np.asarray(vq_prior.sample(exp.model, variables, key, 5))
  assert images.shape == (5, 8, 8, 1) and images.min() >= 0 and images.max() <= 1
  # The one compiled program decodes the codes sample_codes draws.
  frozen = frozen_vq.load_frozen(config.vq_workdir, (8, 8, 1))
  np.testing.assert_allclose(images, frozen.decode((codes,)), atol=1e-6)
  # A config passed in overrides the model's eval.* settings: at T = 0 every map is the mode.
  cold = set_overrides(config.copy_and_resolve_references(), {"eval.temperature": 0.0})
  argmax = np.asarray(vq_prior.sample(exp.model, variables, jax.random.key(9), 5, cold))
  np.testing.assert_array_equal(argmax, np.broadcast_to(argmax[:1], argmax.shape))
  # --mode=sample goes through the same function.
  assert evaluation.sample_checkpoint(config, workdir, num=4).endswith("samples.png")


def test_vqvae2_bottom_prior_sees_the_top_codes_and_the_top_prior_not_the_bottom(
    npz_pair, tmp_path):
  # An untrained VQ-VAE-2 checkpoint is enough to test the wiring (and compiles nothing).
  vq2 = str(tmp_path / "vq2")
  vq_exp = experiment_lib.build(vq_config(*npz_pair, family="vqvae2"))
  ckpt = checkpoint.Checkpointer(vq2, 1)
  ckpt.save(vq_exp.init_state())
  ckpt.wait()
  ckpt.close()
  workdir_lib._save_config(vq_exp.config, vq2)
  config = prior_config(*npz_pair, vq2)
  exp = experiment_lib.build(config)
  assert exp.model.levels == ("top", "bottom")
  assert exp.model.code_shapes == ((2, 2), (4, 4))
  variables = exp.init_state().variables()
  batch = exp.train_source.get(np.arange(4))
  top, bottom = jnp.asarray(batch["codes_top"]), jnp.asarray(batch["codes_bottom"])
  logits = lambda t, b: exp.model.apply(variables, (t, b))
  top_logits, bottom_logits = logits(top, bottom)
  other_top, other_bottom = (top + 1) % 16, (bottom + 1) % 16
  # The top prior is unconditional; the bottom one reads the top map.
  np.testing.assert_array_equal(logits(top, other_bottom)[0], top_logits)
  assert not np.allclose(logits(other_top, bottom)[1], bottom_logits)
  codes = vq_prior.sample_codes(exp.model, variables, jax.random.key(0), 2)
  assert [c.shape for c in codes] == [(2, 2, 2), (2, 4, 4)]
  full = vq_prior.sample_codes(exp.model, variables, jax.random.key(0), 2, sampler="full")
  for c, f in zip(codes, full):
    np.testing.assert_array_equal(c, f)
  base = vq_prior.final_baselines(config, exp.train_source, exp.eval_source)
  for level in ("top", "bottom"):
    assert base[f"eval/prior_unigram_nll_{level}"] == base[f"eval/unigram_nll_{level}"]
    assert base[f"eval/prior_uniform_nll_{level}"] == pytest.approx(math.log(16))
  # Overall: total nats over total codes (the bottom map has 4x the top's codes).
  assert base["eval/prior_unigram_nll"] == pytest.approx(
      (base["eval/prior_unigram_nll_top"] + 4 * base["eval/prior_unigram_nll_bottom"]) / 5)
  images = vq_prior.sample(exp.model, variables, jax.random.key(0), 2)
  assert images.shape == (2, 8, 8, 1)


def test_missing_or_wrong_vq_workdirs_are_refused_naming_them(npz_pair, vq_workdir, tmp_path):
  def refused(workdir, match):
    with pytest.raises(ConfigError, match=match):
      validation.validate(prior_config(*npz_pair, workdir), num_devices=1)

  refused("", "vq_workdir is empty")
  refused(str(tmp_path / "nothing"), "no config.json")
  empty = tmp_path / "no_ckpt"
  empty.mkdir()
  with open(vq_workdir + "/config.json") as f:
    (empty / "config.json").write_text(f.read())
  refused(str(empty), r"no checkpoint in .*no_ckpt/checkpoints")
  vae = tmp_path / "vae_run"
  (vae / "checkpoints" / "10").mkdir(parents=True)
  c = config_base.base_config()
  vae_lib.config_keys(c)
  (vae / "config.json").write_text(c.to_json())
  refused(str(vae), "holds a 'vae' run")


def test_a_checkpoint_that_does_not_fit_the_data_is_refused_naming_vq_workdir(
    vq_workdir, tmp_path):
  # Colour images: the VQ model's first convolution was trained on one channel.
  paths = []
  for name in ("train", "eval"):
    paths.append(str(tmp_path / f"{name}.npz"))
    np.savez(paths[-1], image=np.zeros((16, 8, 8, 3), np.uint8))
  with pytest.raises(ConfigError, match=r"vq_workdir=.*\(8, 8, 3\)"):
    experiment_lib.build(prior_config(*paths, vq_workdir))


@pytest.mark.parametrize("overrides,match", [
    ({"model.channels": 10, "model.num_heads": 4}, "model.channels=10 is not divisible"),
    ({"model.kernel_size": 4}, "model.kernel_size=4: must be odd"),
    ({"model.dropout": 1.0}, r"model.dropout=1.0"),
    ({"model.num_blocks": -1}, "model.num_blocks=-1"),
    ({"eval.temperature": -0.5}, "eval.temperature=-0.5"),
    ({"eval.sampler": "fast"}, r"eval.sampler='fast': expected one of \('cached', 'full'\)"),
])
def test_bad_prior_values_are_refused_naming_the_key(npz_pair, vq_workdir, overrides, match):
  with pytest.raises(ConfigError, match=match):
    validation.validate(prior_config(*npz_pair, vq_workdir, **overrides), num_devices=1)


def test_a_residual_vq_workdir_is_refused_naming_it(npz_pair, tmp_path):
  """A residual VQ stores several indices per position; a prior over one code per position
  cannot take its codes, and says so before anything is restored or compiled."""
  config = vq_config(*npz_pair, **{"model.quantizer": "residual", "model.num_quantizers": 2})
  workdir = tmp_path / "residual"
  (workdir / "checkpoints" / "1").mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(config.to_dict()))
  with pytest.raises(ConfigError, match=r"vq_workdir=.*residual.*num_quantizers=2"):
    frozen_vq.check_workdir(str(workdir))
  fsq = vq_config(*npz_pair, **{"model.quantizer": "fsq", "model.fsq_levels": (5, 4),
                                "model.dead_code_steps": 0, "model.kmeans_init": False})
  (workdir / "config.json").write_text(json.dumps(fsq.to_dict()))
  frozen_vq.check_workdir(str(workdir))  # one code per position: accepted
