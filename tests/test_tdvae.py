"""TD-VAE: the sequence data, the log-densities against scipy, the five terms of the bound,
a causal belief, a transition that reads dt, rollouts of the requested length, scores and
baselines against numpy, bad input refused by key, a tiny run whose loss falls, and
end-to-end runs that write results.json and the rollout picture."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import set_overrides
from vaelab import config_base, validation
from vaelab.data import make_sources, sequences
from vaelab.data.base import InMemorySource
from vaelab.errors import ConfigError
from vaelab.losses import tdvae as tdvae_losses
from vaelab.losses.iwae import gaussian_log_density
from vaelab.models import tdvae, tdvae_net
from vaelab.training import loop
from vaelab.training import experiment as experiment_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T, CONTEXT, JUMPS = 8, 4, (1, 2, 3)


def td_config(train="", evalp="", data="moving_digits", **overrides):
  """A TD-VAE small enough to compile in seconds: 8-step sequences of 8x8 frames."""
  c = config_base.base_config()
  tdvae.config_keys(c, data)
  c.data.train_path, c.data.eval_path = train, evalp
  c.data.seq_len = T
  c.data.num_train = 256
  c.data.num_eval = 32
  c.batch_size = 16
  c.num_train_steps = 10
  c.log_every = c.eval_every = c.checkpoint_every = 5
  c.model.frame_hidden = (32,)
  c.model.belief_dim = 16
  c.model.latent_dim = 4
  c.model.hidden = (16,)
  c.model.decoder_hidden = (32,)
  c.loss.max_jump = c.loss.long_jump = 3
  c.eval.context = CONTEXT
  c.eval.jumps = JUMPS
  c.eval.batch_size = 32
  c.eval.num_pictures = 4
  if data == "oscillator":
    c.model.likelihood = "gaussian"
    c.model.obs_sigma = 0.1
    c.loss.long_jump_prob = 0.2
    c.loss.long_jump = 6
  return set_overrides(c, overrides)


def _keys(n, seed=0):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


@pytest.fixture(scope="module")
def digits(npz_pair):
  """The tiny config, its moving-digit sources (8x8 blobs of conftest), a model and params."""
  config = td_config(*npz_pair)
  family = validation.validate(config, num_devices=1)
  train, evalp = family.transform_sources(config, *make_sources(config.data))
  model = family.make_model(config, train.info)
  x = jnp.asarray(train.get(np.arange(6))["image"])
  variables = jax.jit(model.init)(jax.random.key(0), x, _keys(6))
  return config, family, train, evalp, model, variables, x


# --- data ---------------------------------------------------------------------------------

def test_moving_digits_move_one_pixel_per_step_with_wraparound(digits):
  _, _, train, evalp, _, _, _ = digits
  assert train.info.image_shape == (T, 8, 8, 1)
  b = train.get(np.arange(40))
  x, d = b["image"], b["direction"]
  assert x.shape == (40, T, 8, 8, 1) and x.dtype == np.float32
  assert set(np.unique(d)) == {-1, 1}
  for i in range(40):
    for t in range(T - 1):
      np.testing.assert_array_equal(x[i, t + 1], np.roll(x[i, t], int(d[i]), axis=1))
  # A function of (split, index) only: the same sequence alone or inside a batch.
  np.testing.assert_array_equal(train.get(np.array([7]))["image"][0], x[7])
  # The held-out split draws from its own stream.
  assert not np.array_equal(evalp.motion(np.arange(40))[0], train.motion(np.arange(40))[0])


def test_position_alone_does_not_reveal_the_direction():
  src = sequences.MovingDigits(sequences.Glyphs(10, 0, "g"), 4000, 20, 1, "m")
  offset, direction = src.motion(np.arange(4000))
  assert set(np.unique(offset)) == set(range(28))
  # Offsets are drawn independently of the direction: each offset occurs with both.
  for o in range(28):
    assert set(direction[offset == o]) == {-1, 1}
  assert abs(direction.mean()) < 0.05


def test_digit_images_are_spread_over_a_sorted_split():
  images = InMemorySource("sorted", np.repeat(np.arange(10, dtype=np.uint8), 10)[:, None, None,
                                                                                 None]
                          * np.ones((1, 4, 4, 1), np.uint8), label=np.repeat(np.arange(10), 10))
  src = sequences.MovingDigits(images, 20, 3, 1, "m")
  assert sorted(src.get(np.arange(20))["label"]) == sorted(np.repeat(np.arange(10), 2))


def test_glyphs_and_oscillator():
  g = sequences.Glyphs(30, 0, "g").get(np.arange(20))
  assert g["image"].shape == (20, 28, 28, 1)
  assert 0 <= g["image"].min() and g["image"].max() <= 1 and g["image"].mean() > 0.05
  np.testing.assert_array_equal(g["label"], np.arange(20) % 10)
  clean = sequences.Oscillator(5, 200, 20.0, 0.0, 0.0, 1, "o").get(np.arange(5))["image"]
  assert clean.shape == (5, 200, 2)
  radius = np.linalg.norm(clean, axis=-1)
  np.testing.assert_allclose(radius, radius[:, :1] * np.ones((1, 200)), rtol=1e-5)
  phase = np.unwrap(np.arctan2(-clean[..., 1], clean[..., 0]), axis=1)
  np.testing.assert_allclose(np.diff(phase, axis=1), 2 * np.pi / 20, atol=1e-4)
  noisy = sequences.Oscillator(5, 200, 20.0, 0.1, 0.0, 1, "o").get(np.arange(5))["image"]
  assert 0.08 < np.std(noisy - clean) < 0.12


# --- the objective --------------------------------------------------------------------------

def test_gaussian_log_density_matches_scipy():
  rng = np.random.default_rng(0)
  z, mean, logvar = rng.normal(size=(3, 5, 4))
  expected = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
  np.testing.assert_allclose(gaussian_log_density(z, mean, logvar), expected, rtol=1e-5)


def test_pairs_lie_in_the_sequence_with_the_jump_mixture():
  t1, t2 = tdvae_losses.sample_pairs(jax.random.key(0), 200, 20000, 10, 120, 0.2)
  t1, t2 = np.asarray(t1), np.asarray(t2)
  jump = t2 - t1
  assert t1.min() >= 0 and t2.max() <= 199 and jump.min() >= 1 and jump.max() <= 120
  # P(jump > 10) = 0.2 * 110 / 120; jumps <= 10 are otherwise uniform.
  assert abs((jump > 10).mean() - 0.2 * 110 / 120) < 0.01
  counts = np.bincount(jump[jump <= 10], minlength=11)[1:]
  assert counts.min() > 0.9 * counts.mean()
  t1, t2 = tdvae_losses.sample_pairs(jax.random.key(1), 20, 5000, 4)
  assert set(np.asarray(t2 - t1)) == {1, 2, 3, 4} and int(t2.max()) == 19 and int(t1.min()) == 0
  # A jump as long as the sequence allows starts at 0.
  t1, t2 = tdvae_losses.sample_pairs(jax.random.key(2), 5, 100, 4)
  assert np.all(np.asarray(t1)[np.asarray(t2 - t1) == 4] == 0)


def test_pair_terms_are_the_five_log_densities_of_the_bound(digits):
  _, _, _, _, model, variables, x = digits
  t1 = jnp.array([[0, 2], [1, 3], [0, 4], [2, 5], [3, 3], [0, 6]])
  t2 = t1 + jnp.array([[1, 2], [3, 1], [2, 3], [1, 2], [4, 1], [1, 1]])
  keys = jax.random.split(jax.random.key(3), 12).reshape(6, 2)
  terms = model.apply(variables, x, t1, t2, keys, method=tdvae_net.TDVAE.pair_terms)
  assert set(terms) == set(tdvae_losses.TERMS)
  for v in terms.values():
    assert v.shape == (6, 2) and bool(jnp.all(jnp.isfinite(v)))
  # Recompute them from the model's pieces for one pair.
  i, p = 3, 1
  key = keys[i, p][None]
  fold = lambda k, n: jax.vmap(lambda a: jax.random.fold_in(a, n))(k)
  apply = lambda method, *a, **kw: model.apply(variables, *a, method=method, **kw)
  b = apply(tdvae_net.TDVAE.beliefs, x)
  b1, b2 = b[i, t1[i, p]][None], b[i, t2[i, p]][None]
  z2, log_pb2 = apply(tdvae_net.TDVAE.belief, b2, fold(key, 0))
  z1, log_qs = apply(tdvae_net.TDVAE.smoothing, z2, b1, b2, fold(key, 1))
  _, log_pb1 = apply(tdvae_net.TDVAE.belief, b1, given=z1)
  _, log_pt = apply(tdvae_net.TDVAE.transition, z1, jnp.array([t2[i, p] - t1[i, p]]), given=z2)
  logits = np.asarray(apply(tdvae_net.TDVAE.decode, z2)[0], np.float64)
  xt = np.asarray(x[i, t2[i, p]], np.float64)
  prob = 1 / (1 + np.exp(-logits))  # Bernoulli cross-entropy of fractional pixels
  log_pd = np.sum(xt * np.log(prob) + (1 - xt) * np.log1p(-prob))
  for name, value in zip(tdvae_losses.TERMS, (log_pd, log_pb1, log_pt, log_pb2, log_qs)):
    np.testing.assert_allclose(terms[name][i, p], np.asarray(value).reshape(()), rtol=1e-4,
                               atol=1e-4, err_msg=name)
  elbo = tdvae_losses.pair_elbo({k: v[i, p] for k, v in terms.items()})
  np.testing.assert_allclose(elbo, log_pd + log_pb1 + log_pt - log_pb2 - log_qs, rtol=1e-4)
  loss, per_seq = tdvae_losses.tdvae_loss(terms)
  np.testing.assert_allclose(loss, -tdvae_losses.pair_elbo(terms).mean(), rtol=1e-6)
  assert per_seq.shape == (6,)


def test_belief_is_causal(digits):
  """d b_t / d x_t' is zero for every later frame t' > t and not for t' <= t."""
  _, _, _, _, model, variables, x = digits
  beliefs = lambda xs: model.apply(variables, xs, method=tdvae_net.TDVAE.beliefs)
  for t in (0, 3, T - 1):
    grad = jax.grad(lambda xs: beliefs(xs)[0, t].sum())(x)
    per_frame = np.abs(np.asarray(grad[0])).reshape(T, -1).sum(-1)
    assert np.all(per_frame[t + 1:] == 0), (t, per_frame)
    assert np.all(per_frame[:t + 1] > 0), (t, per_frame)
    assert np.all(np.asarray(grad[1:]) == 0)


def test_transition_receives_dt(digits):
  _, _, _, _, model, variables, _ = digits
  z = jax.random.normal(jax.random.key(0), (5, 4))
  keys = _keys(5)
  sample = lambda dt: model.apply(variables, z, jnp.full((5,), dt), keys,
                                  method=tdvae_net.TDVAE.transition)[0]
  assert not np.allclose(sample(1.0), sample(3.0))
  np.testing.assert_array_equal(sample(2.0), sample(2.0))
  # The log-density of a fixed z_t2 moves smoothly with dt: its gradient is not zero.
  logp = lambda dt: model.apply(variables, z, dt, given=z + 0.1,
                                method=tdvae_net.TDVAE.transition)[1].sum()
  assert abs(float(jax.grad(logp)(jnp.full((5,), 2.0)).sum())) > 0


def test_rollouts_have_the_requested_length(digits):
  _, _, _, _, model, variables, x = digits
  jumpy, iterated = model.apply(variables, x[:, :CONTEXT], _keys(6), (1, 2, 4), 2,
                                method=tdvae_net.TDVAE.rollout)
  assert jumpy.shape == (6, 3, 8, 8, 1) and iterated.shape == (6, 2, 8, 8, 1)
  assert 0 <= float(jumpy.min()) and float(jumpy.max()) <= 1
  jumpy1, iterated1 = model.apply(variables, x[:, :CONTEXT], _keys(6), (1, 2, 3, 4, 5), 1,
                                  method=tdvae_net.TDVAE.rollout)
  assert jumpy1.shape[1] == 5 and iterated1.shape[1] == 5
  # A single sample per sequence, not a mean: another key gives another prediction.
  other, _ = model.apply(variables, x[:, :CONTEXT], _keys(6, 9), (1, 2, 4), 2,
                         method=tdvae_net.TDVAE.rollout)
  assert not np.allclose(jumpy, other)


def test_two_layer_z_samples_the_top_layer_first(digits):
  _, family, train, _, _, _, x = digits
  config = td_config(**{"model.layers": 2})
  model = family.make_model(config, train.info)
  variables = jax.jit(model.init)(jax.random.key(0), x, _keys(6))
  assert {"belief_0", "belief_1", "smoothing_1", "transition_1"} <= set(variables["params"])
  b = jax.random.normal(jax.random.key(1), (6, 16))
  z, logp = model.apply(variables, b, _keys(6), method=tdvae_net.TDVAE.belief)
  assert z.shape == (6, 8) and logp.shape == (6,)
  # log p_B(z) = log p(top | b) + log p(lower | b, top), the lower head reading the top layer.
  head = lambda l, h: model.apply(variables, h, method=lambda m, h_: m.belief_heads[l](h_))
  top = lambda zz: gaussian_log_density(zz[:, :4], *head(0, b))
  lower = lambda zz: gaussian_log_density(zz[:, 4:], *head(1, jnp.concatenate([b, zz[:, :4]], -1)))
  for zz in (z, z.at[:, 0].add(1.0), z.at[:, 4].add(1.0)):
    np.testing.assert_allclose(model.apply(variables, b, given=zz, method=tdvae_net.TDVAE.belief)[1],
                               top(zz) + lower(zz), rtol=1e-5)
  assert not np.allclose(lower(z.at[:, 0].add(1.0)), lower(z))
  jumpy, iterated = model.apply(variables, x[:, :CONTEXT], _keys(6), (1, 3), 1,
                                method=tdvae_net.TDVAE.rollout)
  assert jumpy.shape == (6, 2, 8, 8, 1) and iterated.shape == (6, 3, 8, 8, 1)


def test_direction_score_against_hand_made_predictions():
  rng = np.random.default_rng(0)
  last = jnp.asarray(rng.uniform(size=(4, 6, 6, 1)), jnp.float32)
  direction = jnp.array([1, -1, 1, -1])
  truth = jnp.stack([jnp.roll(last[i], 2 * int(direction[i]), axis=1) for i in range(4)])
  wrong = jnp.stack([jnp.roll(last[i], -2 * int(direction[i]), axis=1) for i in range(4)])
  np.testing.assert_array_equal(tdvae_losses.direction_correct(truth, last, direction, 2), 1)
  np.testing.assert_array_equal(tdvae_losses.direction_correct(wrong, last, direction, 2), 0)
  np.testing.assert_array_equal(
      tdvae_losses.direction_correct(0.5 * (truth + wrong), last, direction, 2), 0.5)
  np.testing.assert_allclose(tdvae_losses.frame_mse(truth, last),
                             np.square(np.asarray(truth) - np.asarray(last)).mean((1, 2, 3)),
                             rtol=1e-6)


def test_eval_metrics_and_baselines(digits):
  config, family, train, evalp, model, variables, _ = digits
  batch = evalp.get(np.arange(8))
  out = jax.jit(lambda v, b, k: family.make_eval_metrics(config)(model, v, b, k, {
      k_: jnp.asarray(v_) for k_, v_ in family.hparams(config).items()}))(
          variables, {k: jnp.asarray(v) for k, v in batch.items()}, _keys(8))
  for j in JUMPS:
    for name in (f"rollout_mse_j{j}", f"rollout_mse_iter_j{j}",
                 f"rollout_direction_accuracy_j{j}"):
      assert out[name].shape == (8,), name
  np.testing.assert_allclose(out["rollout_mse"],
                             sum(out[f"rollout_mse_j{j}"] for j in JUMPS) / len(JUMPS), rtol=1e-6)
  # eval/elbo is the bound of pairs drawn from the evaluation's keys, as pair_terms gives it.
  hparams = {k: jnp.asarray(v) for k, v in family.hparams(config).items()}
  x = jnp.asarray(batch["image"])
  t1, t2, pair_keys = tdvae._pairs(config, tdvae_net.fold_keys(_keys(8), 0), x.shape[1], hparams)
  terms = model.apply(variables, x, t1, t2, pair_keys, method=tdvae_net.TDVAE.pair_terms)
  elbo = np.asarray(tdvae_losses.pair_elbo(terms)).mean(-1)
  np.testing.assert_allclose(out["elbo"], elbo, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out["loss"], -elbo, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out["recon"], -np.asarray(terms["log_p_decoder"]).mean(-1),
                             rtol=1e-5, atol=1e-4)
  base = family.final_baselines(config, train, evalp)
  x = evalp.get(np.arange(len(evalp)))["image"]
  for j in JUMPS:
    expected = np.square(x[:, CONTEXT - 1 + j] - x[:, CONTEXT - 1]).mean((1, 2, 3)).mean()
    np.testing.assert_allclose(base[f"eval/rollout_mse_last_frame_j{j}"], expected, rtol=1e-5)
  mean_frame = train.get(np.arange(len(train)))["image"].mean((0, 1))
  np.testing.assert_allclose(
      base["eval/rollout_mse_mean_frame_j1"],
      np.square(x[:, CONTEXT] - mean_frame).mean((1, 2, 3)).mean(), rtol=1e-4)


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"loss.max_jump": 8}, "loss.max_jump=8: a jump of 8 steps needs sequences of at least 9 "
                           "steps, but data.seq_len=8"),
    ({"data.seq_len": 3, "eval.context": 1, "eval.jumps": (1,)},
     "loss.max_jump=3: a jump of 3 steps needs sequences of at least 4 steps"),
    ({"eval.context": 6}, "eval.context=6: a context of 6 steps followed by rollouts of up to 3 "
                          "steps (eval.jumps) needs sequences of 9 steps, but data.seq_len=8"),
    ({"eval.context": 20}, "eval.context=20"),
    ({"eval.jumps": (1, 9)}, "eval.context=4"),
    ({"eval.jumps": ()}, "eval.jumps=()"),
    ({"eval.rollout_step": 0}, "eval.rollout_step=0"),
    ({"model.layers": 3}, "model.layers=3"),
    ({"model.likelihood": "poisson"}, "model.likelihood='poisson'"),
    ({"loss.num_pairs": 0}, "loss.num_pairs=0"),
    ({"loss.long_jump_prob": 1.5}, "loss.long_jump_prob=1.5"),
    ({"loss.long_jump": 10, "loss.long_jump_prob": 0.2}, "loss.long_jump=10"),
    ({"data.seq_len": 1}, "data.seq_len=1"),
])
def test_bad_values_are_refused_naming_the_key(overrides, message):
  with pytest.raises(ConfigError) as e:
    validation.validate(td_config(**overrides), num_devices=1)
  assert message in str(e.value)


def test_data_shorter_than_the_config_says_is_refused(npz_pair):
  """Sequences whose length comes from the data (not data.seq_len) are checked too."""
  config = td_config(*npz_pair)
  short = sequences.MovingDigits(sequences.Glyphs(4, 0, "g"), 4, 5, 1, "short")
  with pytest.raises(ConfigError, match=r"eval.context=4: .* but the sequences of short have 5 "
                                        r"steps; use eval.context <= 2"):
    experiment_lib.build(config, (short, short))
  config = td_config(*npz_pair, **{"data.train_path": ""})
  with pytest.raises(ConfigError, match="data.eval_path"):
    make_sources(config.data)


def test_oscillator_keys_are_checked():
  for key, value in (("data.period", 0.0), ("data.obs_noise", -1.0)):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
      validation.validate(td_config(data="oscillator", **{key: value}), num_devices=1)


# --- training -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(npz_pair, tmp_path_factory):
  """One tiny moving-digits run through the shared loop: (results, workdir)."""
  workdir = tmp_path_factory.mktemp("digits_run")
  config = td_config(*npz_pair, **{"batch_size": 32, "num_train_steps": 60, "log_every": 5,
                                   "eval_every": 60, "checkpoint_every": 60,
                                   "optimizer.learning_rate": 3e-3})
  return loop.train_and_evaluate(config, str(workdir)), workdir


def test_loss_falls_on_a_tiny_run(digits_run):
  _, workdir = digits_run
  with open(workdir / "metrics.jsonl") as f:
    losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert np.mean(losses[-2:]) < 0.8 * losses[0], losses


def _check_results(results, workdir, digits: bool):
  with open(workdir / "results.json") as f:
    written = json.load(f)
  assert written == pytest.approx(results)
  expected = ["eval/elbo", "eval/rollout_mse", "eval/rollout_mse_last_frame",
              "eval/rollout_mse_mean_frame"] + [f"eval/rollout_mse_j{j}" for j in JUMPS]
  if digits:
    expected.append("eval/rollout_direction_accuracy")
  for key in expected:
    assert key in written and np.isfinite(written[key]), key
  for kind in ("", "_last_frame", "_mean_frame"):  # each the mean over the jumps
    assert written[f"eval/rollout_mse{kind}"] == pytest.approx(
        np.mean([written[f"eval/rollout_mse{kind}_j{j}"] for j in JUMPS]), rel=1e-5)
  if digits:
    assert 0 <= written["eval/rollout_direction_accuracy"] <= 1
  else:
    assert "eval/rollout_direction_accuracy" not in written
  assert os.path.getsize(workdir / "rollouts.png") > 1000


def test_end_to_end_run_writes_results_and_the_rollout_picture(digits_run):
  _check_results(*digits_run, digits=True)


def test_oscillator_end_to_end(tmp_path):
  config = td_config(data="oscillator", **{"data.seq_len": 12, "eval_every": 10,
                                            "checkpoint_every": 10})
  _check_results(loop.train_and_evaluate(config, str(tmp_path)), tmp_path, digits=False)
