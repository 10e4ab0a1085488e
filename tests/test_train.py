"""End-to-end behaviour of the loop: learning, files, NaN guard, resume warnings, inputs.
(1 vs 4 devices and resume invariances: tests/test_contract.py, for every family.)"""
import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from vaelab.training import loop
from vaelab.training import evaluation
from vaelab.training import experiment as experiment_lib
from vaelab.training import pending_metrics
from vaelab.training import workdir as workdir_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _train_losses(workdir):
  return {m["step"]: m["train/loss"] for m in _metrics(workdir) if "train/loss" in m}


def _params(workdir, config):
  exp = experiment_lib.build(config)
  return jax.device_get(workdir_lib.restore_latest(exp, workdir).params)


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
  again = evaluation.evaluate_checkpoint(config, workdir)
  assert again == pytest.approx(results, rel=1e-6)
  assert os.path.exists(os.path.join(workdir, "results.json"))


def test_resuming_with_another_length_says_so(npz_pair, tmp_path, caplog):
  workdir = str(tmp_path / "w")
  loop.train(tiny_config("vae", *npz_pair, num_train_steps=4), workdir, evaluate=False)
  with caplog.at_level("WARNING"):
    loop.train(tiny_config("vae", *npz_pair, num_train_steps=6, **{
        "optimizer.schedule": "cosine"}), workdir, evaluate=False)
  assert "num_train_steps changed from 4" in caplog.text and "to 6" in caplog.text
  assert "optimizer.schedule=cosine" in caplog.text


def test_every_path_that_feeds_the_model_binarizes_as_training_does(npz_pair):
  from vaelab.data import make_sources
  from vaelab.data.base import ModelInputSource
  train, _ = make_sources(tiny_config("vae", *npz_pair).data)
  raw = train.get(np.arange(64))["image"]
  thresholded = ModelInputSource(train, "threshold", 0).get(np.arange(64))["image"]
  np.testing.assert_array_equal(thresholded, (raw > 0.5).astype(np.float32))
  dynamic = ModelInputSource(train, "dynamic", 0)
  first = dynamic.get(np.arange(64))["image"]
  assert set(np.unique(first)) <= {0.0, 1.0}
  np.testing.assert_array_equal(first, dynamic.get(np.arange(64))["image"])  # a fixed draw
  assert abs(first.mean() - raw.mean()) < 0.02
  # Active units, probe features and VQ codes read their images through it.
  config = tiny_config("vae", *npz_pair, **{"data.binarize": "threshold"})
  exp = experiment_lib.build(config)
  assert isinstance(exp.evaluator().model_source(train), ModelInputSource)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_good_checkpoints(npz_pair, tmp_path):
  workdir = str(tmp_path / "nan")
  good = tiny_config("ae", *npz_pair, num_train_steps=5)
  loop.train_and_evaluate(good, workdir)
  # A huge learning rate overflows the parameters within a few steps.
  bad = tiny_config("ae", *npz_pair, num_train_steps=40, **{"optimizer.learning_rate": 1e30})
  with pytest.raises(pending_metrics.NonFiniteError, match=r"at step \d+"):
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
