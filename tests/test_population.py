"""Sweeps and populations: the factored learning rate equals optax's, population grouping,
a population's members equal runs alone, the sweep CLI (csv, plots, skipping finished
trials) and refused sweep definitions."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import ROOT, tiny_config
from vaelab.errors import ConfigError
from vaelab.training import loop, optimizer, population, sweep
from vaelab.training import step as step_lib
from vaelab.training import experiment as experiment_lib
from vaelab.training import workdir as workdir_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_peak_rate_times_schedule_updates_exactly_like_optax(name, schedule):
  c = ml_collections.ConfigDict(dict(name=name, learning_rate=3e-3, schedule=schedule,
                                     warmup_steps=3, b1=0.9, b2=0.99, weight_decay=0.1,
                                     grad_clip_norm=0.5))
  sched = optimizer.make_schedule(c, 10)
  reference = optax.chain(optax.clip_by_global_norm(0.5), {
      "adam": optax.adam(sched, b1=0.9, b2=0.99),
      "adamw": optax.adamw(sched, b1=0.9, b2=0.99, weight_decay=0.1),
      "sgd": optax.sgd(sched, momentum=0.9)}[name])
  ours = optimizer.make_optimizer(c, 10)
  params = [{"w": jnp.arange(6.0).reshape(2, 3)}] * 2
  states = [ours.init(params[0]), reference.init(params[1])]
  for i in range(10):
    for j, tx in enumerate((ours, reference)):
      grads = {"w": jnp.sin(params[j]["w"] * (i + 1))}
      updates, states[j] = tx.update(grads, states[j], params[j])
      params[j] = optax.apply_updates(params[j], updates)
  np.testing.assert_array_equal(params[0]["w"], params[1]["w"])
  assert float(optimizer.current_learning_rate(states[0])) == pytest.approx(float(sched(9)))


def test_population_keys_and_groups(npz_pair):
  base = tiny_config("vae", *npz_pair)
  for key, expected in [("loss.beta", True), ("seed", True), ("optimizer.learning_rate", True),
                        ("loss.capacity_max", True), ("model.latent_dim", False),
                        ("batch_size", False), ("model.likelihood", False)]:
    assert population.is_population_key(base, key) is expected, key
  configs = [tiny_config("vae", *npz_pair, **o) for o in (
      {"loss.beta": 1.0}, {"loss.beta": 4.0, "seed": 1}, {"optimizer.learning_rate": 3e-3},
      {"model.latent_dim": 3}, {"model.latent_dim": 3, "loss.beta": 2.0})]
  assert population.groups(configs) == [[0, 1, 2], [3, 4]]


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [m["train/loss"] for m in map(json.loads, f) if "train/loss" in m]


SETTINGS = {
    # One seed: the members share each batch.
    "shared": [{"loss.beta": 1.0}, {"loss.beta": 4.0, "optimizer.learning_rate": 3e-3}]}


def _member_configs(npz_pair, batches):
  return [tiny_config("vae", *npz_pair, num_train_steps=12, log_every=4, eval_every=8,
                      checkpoint_every=6, **s) for s in SETTINGS[batches]]


@pytest.fixture(scope="module")
def alone(npz_pair, tmp_path_factory):
  """alone(batches): the members' runs alone, [(workdir, results)], trained once."""
  cache = {}

  def runs(batches):
    if batches not in cache:
      root = tmp_path_factory.mktemp(f"alone_{batches}")
      cache[batches] = [(str(root / str(i)), loop.train_and_evaluate(c, str(root / str(i))))
                        for i, c in enumerate(_member_configs(npz_pair, batches))]
    return cache[batches]
  return runs


def _params(config, workdir):
  exp = experiment_lib.build(config)
  return jax.device_get(workdir_lib.restore_latest(exp, workdir).params)


# Members with their own seeds (stacked batches) are held to this by tests/test_contract.py
# for every config; here members that share a seed and so one batch, with their evaluation.
@pytest.mark.parametrize("impl,batches", [("vmap", "shared"), ("loop", "shared")])
def test_population_members_equal_runs_alone(npz_pair, tmp_path, alone, impl, batches):
  configs = _member_configs(npz_pair, batches)
  pop_dirs = [str(tmp_path / f"pop{i}") for i in range(2)]
  together = population.train_population(configs, pop_dirs, impl)
  for config, pop_dir, results, (alone_dir, alone_results) in zip(configs, pop_dirs, together,
                                                                   alone(batches)):
    assert results.keys() == alone_results.keys()
    p_pop, p_alone = _params(config, pop_dir), _params(config, alone_dir)
    if impl == "loop":  # the one-run step on each member: bitwise the runs alone
      assert _losses(pop_dir) == _losses(alone_dir)
      assert results == alone_results
      jax.tree.map(np.testing.assert_array_equal, p_pop, p_alone)
    else:  # batched kernels round differently
      np.testing.assert_allclose(_losses(pop_dir), _losses(alone_dir), rtol=1e-5)
      for k in alone_results:
        assert results[k] == pytest.approx(alone_results[k], rel=1e-4, abs=1e-5), k
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                   p_pop, p_alone)
    assert os.path.exists(os.path.join(pop_dir, "reconstructions.png"))
  # The members learned differently: their own beta and learning rate reached the step.
  assert together[0]["eval/kl"] > together[1]["eval/kl"]


def test_a_loop_population_takes_each_members_steps_in_a_row():
  calls = []

  def one(state, batch, hparams):  # one run's step
    calls.append((hparams, batch))
    return state + batch, jnp.asarray(state + batch)

  states, metrics = step_lib._member_steps(one, False, False, (0, 10), [(1, 2), (3, 4)],
                                           ("a", "b"))
  assert calls == [("a", 1), ("a", 3), ("b", 2), ("b", 4)]  # member by member
  assert states == (4, 16)
  assert [tuple(int(m) for m in step) for step in metrics] == [(1, 12), (4, 16)]
  # A chunk ends at the next log, evaluation or checkpoint, or after `chunk` steps.
  assert loop._chunk_end(0, 12, 20, 4, 8, 6) == 4
  assert loop._chunk_end(6, 12, 20, 4, 8, 6) == 8
  assert loop._chunk_end(100, 1000, 20, 500, 1000, 1000) == 120
  assert loop._chunk_end(990, 995, 20, 500, 1000, 1000) == 995


def test_sweep_cli_writes_csv_and_plots_and_skips_finished_trials(npz_pair, tmp_path):
  train, evalp = npz_pair
  config_file = tmp_path / "tiny_sweep.py"
  config_file.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
      from conftest import tiny_config

      def get_config():
        return tiny_config("vae", {train!r}, {evalp!r}, num_train_steps=6, log_every=3,
                           eval_every=6, checkpoint_every=6)

      def get_sweep(h):
        return h.sweep("loss.beta", [1.0, 2.0, 4.0])
      """))
  workdir = tmp_path / "sweep"

  def run(*extra):
    out = subprocess.run([sys.executable, "-m", "vaelab.sweep", f"--config={config_file}",
                          f"--workdir={workdir}", *extra], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out

  out = run("--config.model.latent_dim=3")
  assert "Population of 3" in out.stderr
  with open(workdir / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["trial"] for r in rows] == [f"loss.beta={b}" for b in (1.0, 2.0, 4.0)]
  assert [float(r["loss.beta"]) for r in rows] == [1.0, 2.0, 4.0]
  assert all(float(r["eval/elbo"]) < 0 for r in rows)
  assert os.path.exists(workdir / "sweep_loss.beta.png")
  with open(workdir / "loss.beta=2.0" / "config.json") as f:
    saved = json.load(f)
  assert saved["loss"]["beta"] == 2.0 and saved["model"]["latent_dim"] == 3  # CLI override
  mtime = os.path.getmtime(workdir / "loss.beta=1.0" / "results.json")
  # The same trials from the command line's form (ints read as the key's float): all done.
  out = run("--config.model.latent_dim=3", "--sweep=loss.beta=1,2,4.0")
  assert "Sweep of 3 trials" in out.stderr and "0 to run" in out.stderr
  assert os.path.getmtime(workdir / "loss.beta=1.0" / "results.json") == mtime


@pytest.mark.parametrize("definition,match", [
    ("h.sweep('loss.betta', [1.0, 2.0])", "sweep key 'loss.betta' is not a key"),
    ("h.sweep('loss.beta', [])", r"h.sweep\('loss.beta', \[\]\): the value list is empty"),
    ("h.zip(h.sweep('loss.beta', [1.0, 2.0]), h.sweep('seed', [0, 1, 2]))",
     r"h.zip: the lists have unequal lengths 2 \(loss.beta\), 3 \(seed\)"),
    ("h.product(h.sweep('seed', [0]), h.sweep('seed', [1]))", "'seed' is set twice"),
    ("h.sweep('loss.beta', [1.0, 1.0])", "trial 'loss.beta=1.0' twice"),
    ("h.sweep('loss.beta', [-1.0])", r"trial loss.beta=-1.0: loss.beta=-1.0"),
])
def test_bad_sweep_definitions_are_refused_naming_them(npz_pair, tmp_path, definition, match):
  config_file = tmp_path / "bad_sweep.py"
  config_file.write_text(f"def get_sweep(h):\n  return {definition}\n")
  with pytest.raises(ConfigError, match=match):
    sweep.run_sweep(tiny_config("vae", *npz_pair), str(config_file), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_sweep_flags_make_the_product_of_their_values_typed_as_the_keys(npz_pair):
  base = tiny_config("vae", *npz_pair)
  trials = sweep.sweep_from_flags(["loss.beta=1,4,16", "seed=0,1",
                                   "model.hidden=(8,),(16, 4)"], base)
  assert len(trials) == 12 and trials[0] == {"loss.beta": 1.0, "seed": 0, "model.hidden": (8,)}
  assert {t["model.hidden"] for t in trials} == {(8,), (16, 4)}
  assert all(isinstance(t["loss.beta"], float) and isinstance(t["seed"], int) for t in trials)
  for bad, match in [("loss.betta=1,2", "'loss.betta' is not a key"),
                     ("loss.beta", "expected KEY=V1,V2"), ("loss.beta=x", "not a value")]:
    with pytest.raises(ConfigError, match=match):
      sweep.sweep_from_flags([bad], base)


def test_sweep_plots_page_every_metric_headline_first(tmp_path):
  from vaelab.evaluate import sweep_pictures
  metrics = ([f"eval/kl_dim{d}" for d in range(12)] + [f"eval/x{i:02d}" for i in range(30)]
             + ["eval/mig", "eval/elbo"])
  rows = [{"trial": f"b={b}", "loss.beta": b, **{m: b * (i + 1) for i, m in enumerate(metrics)}}
          for b in (1.0, 2.0, 4.0)]
  order = sweep_pictures.metric_order(metrics)
  assert order[:2] == ["eval/elbo", "eval/mig"] and sorted(order) == sorted(metrics)
  assert order[-3:] == ["eval/kl_dim9", "eval/kl_dim10", "eval/kl_dim11"]
  paths = sweep_pictures.plot_metrics(rows, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["sweep_loss.beta.png", "sweep_loss.beta_2.png"]
  assert all(os.path.getsize(p) > 0 for p in paths)


def test_sweep_plots_put_log_spaced_values_on_a_log_axis():
  from vaelab.evaluate.sweep_pictures import log_spaced
  assert log_spaced([1e-4, 1e-3, 1e-2]) and log_spaced([1.0, 2.0, 4.0, 8.0])
  assert not log_spaced([1.0, 2.0, 3.0, 4.0]) and not log_spaced([0.0, 1.0, 2.0])
  assert not log_spaced([1.0, 2.0])  # two points say nothing about the spacing


def _factor_npz(path, n, seed):
  """Blobs whose two centre coordinates (4 values each) are the ground-truth factors."""
  rng = np.random.default_rng(seed)
  factors = rng.integers(0, 4, (n, 2))
  yy, xx = np.mgrid[:8, :8]
  cy, cx = (1.5 + 1.5 * factors.T)[:, :, None, None]
  image = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0)
  np.savez(path, image=(image[..., None] * 255).astype(np.uint8), factors=factors)
  return str(path)


def test_a_population_scores_each_member_as_alone_on_one_draw(tmp_path):
  """Final and periodic disentanglement scores of "loop" members (drawn and encoded once for
  the population) equal their runs alone, score for score."""
  train, evalp = _factor_npz(tmp_path / "t.npz", 128, 0), _factor_npz(tmp_path / "e.npz", 64, 1)
  sizes = {"eval.disentanglement_num_train": 64, "eval.disentanglement_num_eval": 32,
           "eval.disentanglement_num_variance_estimate": 64,
           "eval.disentanglement_batch_size": 8, "eval.disentanglement_every": 5,
           "eval.dci_importance": "forest", "eval.iwae_ks": (1,)}
  configs = [tiny_config("vae", train, evalp, seed=s, **sizes) for s in (0, 1)]
  together = population.train_population(configs, [str(tmp_path / f"p{i}") for i in (0, 1)],
                                         "loop")
  for i, (config, results) in enumerate(zip(configs, together)):
    alone = loop.train_and_evaluate(config, str(tmp_path / f"a{i}"))
    scores = {k: v for k, v in alone.items() if k in ("eval/mig", "eval/sap_score",
                                                      "eval/dci_disentanglement",
                                                      "eval/factorvae_score")}
    assert len(scores) == 4 and all(np.isfinite(list(scores.values())))
    assert results == alone
    curve = lambda d: [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                       if "eval/mig" in m and m["step"] == 5]
    assert curve(str(tmp_path / f"p{i}")) == curve(str(tmp_path / f"a{i}")) != []
  assert together[0]["eval/mig"] != together[1]["eval/mig"]  # members have their own codes
  # The population's shared scoring is timed in every member's log; a run alone shares none.
  last = lambda d: [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                    if "time/shared_eval_s" in m][-1]
  assert all(last(str(tmp_path / f"p{i}"))["time/shared_eval_s"] > 0 for i in (0, 1))
  assert last(str(tmp_path / "a0"))["time/shared_eval_s"] == 0
