"""End-to-end behaviour of the loop: learning, files, resume, device count, NaN guard."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from vaelab.train import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _train_losses(workdir):
  return {m["step"]: m["train/loss"] for m in _metrics(workdir) if "train/loss" in m}


def _params(workdir, config):
  exp = loop.build(config)
  return jax.device_get(loop.restore_latest(exp, workdir).params)


@pytest.fixture(scope="module")
def trained_vae(npz_pair, tmp_path_factory):
  """One 60-step run whose files several tests read."""
  workdir = str(tmp_path_factory.mktemp("vae_run"))
  config = tiny_config("vae", *npz_pair, num_train_steps=60, log_every=10, eval_every=30,
                       checkpoint_every=30, **{"optimizer.learning_rate": 3e-3})
  results = loop.train_and_evaluate(config, workdir)
  return config, workdir, results


def test_run_learns_and_writes_its_files(trained_vae):
  config, workdir, results = trained_vae
  for name in ("results.json", "metrics.jsonl", "config.json", "reconstructions.png",
               "samples.png", "checkpoints", "tensorboard"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk == pytest.approx(results)
  assert {"eval/loss", "eval/elbo", "eval/kl", "eval/recon_sse"} <= set(results)
  assert all(k.startswith("eval/") for k in results)
  assert results["eval/elbo"] == pytest.approx(-results["eval/loss"], rel=1e-5)  # beta = 1
  losses = _train_losses(workdir)
  assert losses[60] < 0.8 * losses[10]
  logged = _metrics(workdir)
  assert all("steps_per_sec" in m for m in logged if "train/loss" in m)
  assert any("eval/elbo" in m and m["step"] == 30 for m in logged)  # eval_every


def test_eval_mode_recomputes_the_same_results(trained_vae):
  config, workdir, results = trained_vae
  os.remove(os.path.join(workdir, "results.json"))
  again = loop.evaluate_checkpoint(config, workdir)
  assert again == pytest.approx(results, rel=1e-6)
  assert os.path.exists(os.path.join(workdir, "results.json"))


def test_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(npz_pair, tmp_path):
  config = tiny_config("vae", *npz_pair, num_train_steps=10, **{"data.binarize": "dynamic"})
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  loop.train_and_evaluate(config, straight)
  first = tiny_config("vae", *npz_pair, num_train_steps=6, **{"data.binarize": "dynamic"})
  loop.train_and_evaluate(first, split)  # "killed" after step 6
  loop.train_and_evaluate(config, split)  # restarted with the same command
  a, b = _params(straight, config), _params(split, config)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert _train_losses(split) == _train_losses(straight)  # the log was not duplicated


def test_one_and_four_devices_give_the_same_losses(npz_pair, tmp_path):
  losses = {}
  for n in (1, 4):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu")
    workdir = str(tmp_path / f"d{n}")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "tiny_run.py"), workdir,
                          *npz_pair, "10"], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["devices"] == n
    losses[n] = {m["step"]: (m["train/loss"], m["train/grad_norm"]) for m in _metrics(workdir)
                 if "train/loss" in m}
  assert sorted(losses[1]) == list(range(1, 11))
  for step in losses[1]:  # the gradient too: Adam would hide a gradient scaled by the devices
    assert losses[4][step] == pytest.approx(losses[1][step], rel=1e-5)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_good_checkpoints(npz_pair, tmp_path):
  workdir = str(tmp_path / "nan")
  good = tiny_config("ae", *npz_pair, num_train_steps=5)
  loop.train_and_evaluate(good, workdir)
  # A huge learning rate overflows the parameters within a few steps.
  bad = tiny_config("ae", *npz_pair, num_train_steps=40, **{"optimizer.learning_rate": 1e30})
  with pytest.raises(loop.NonFiniteError, match=r"at step \d+"):
    loop.train_and_evaluate(bad, workdir)
  params = _params(workdir, bad)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_nonfinite_skip_policy_counts_skipped_steps(npz_pair, tmp_path):
  workdir = str(tmp_path / "skip")
  bad = tiny_config("ae", *npz_pair, num_train_steps=20, nonfinite="skip",
                    **{"optimizer.learning_rate": 1e30})
  loop.train_and_evaluate(bad, workdir)
  last = [m for m in _metrics(workdir) if "train/skipped_steps" in m][-1]
  assert last["train/skipped_steps"] > 0
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(_params(workdir, bad)))


def test_autoencoder_reports_the_pca_baseline(npz_pair, tmp_path):
  config = tiny_config("ae", *npz_pair, num_train_steps=5)
  results = loop.train_and_evaluate(config, str(tmp_path / "ae"))
  assert results["eval/pca_recon_sse"] > 0
  assert "eval/elbo" not in results
