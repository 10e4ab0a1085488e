"""Lookup-free (models/lfq.py) and binary spherical (models/bsq.py) quantization: index
packing, gradients, the entropy penalty against brute force over all 2^d codes, the
family's objective and metrics, validation, and a short training run."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import vq_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import binary_entropy, reconstruction
from vaelab.losses import vqvae as vq_losses
from vaelab.models import bsq, lfq, vqvae
from vaelab.models.quantizer_spec import QuantizerSpec, prior_num_codes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _built(module, z):
  def f(z):
    v = module.init(jax.random.key(0), z)
    out = module.apply(v, z)
    return v, out, module.apply(v, out["indices"], method="lookup")
  return jax.jit(f)(z)


def test_index_packing_round_trips_and_channel_i_is_bit_i():
  d = 5
  idx = jnp.arange(2**d)
  signs = lfq.indices_to_signs(idx, d)
  np.testing.assert_array_equal(lfq.bits_to_indices(signs > 0), idx)
  # Channel i positive alone is index 2^i; all negative is 0, all positive 2^d - 1.
  np.testing.assert_array_equal(signs[2**3], [-1, -1, -1, 1, -1])
  assert set(np.unique(np.asarray(signs))) == {-1.0, 1.0}
  assert lfq.num_bits(2**14) == 14 and lfq.is_power_of_two(1024)
  assert not lfq.is_power_of_two(1000) and not lfq.is_power_of_two(1)
  assert lfq.is_power_of_two(16384.0) and not lfq.is_power_of_two(True)


@pytest.mark.parametrize("cls", [lfq.LookupFreeQuantizer, bsq.BinarySphericalQuantizer])
def test_codes_are_signs_indices_decode_to_them_and_gradient_is_straight_through(cls):
  d = 4
  z = jax.random.normal(jax.random.key(1), (3, 5, d)).at[0, 0, 0].set(0.0)
  module = cls(2**d, d)
  v, out, looked_up = _built(module, z)
  assert "params" not in v  # code_dim == d: no projection, nothing learned
  scale = 1.0 if cls is lfq.LookupFreeQuantizer else 1 / np.sqrt(d)
  u = z if cls is lfq.LookupFreeQuantizer else z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  np.testing.assert_allclose(out["z_e"], u, rtol=1e-6)
  np.testing.assert_allclose(out["z_q"], jnp.where(u > 0, scale, -scale), rtol=1e-6)
  assert float(out["z_q"][0, 0, 0]) < 0  # sign(0) -> -1
  # The code is the nearest of all 2^d codes (bsq: on the sphere, by cosine too).
  codes = lfq.indices_to_signs(jnp.arange(2**d), d) * scale
  brute = jnp.argmin(jnp.sum((u[..., None, :] - codes) ** 2, -1), -1)
  np.testing.assert_array_equal(out["indices"], brute)
  np.testing.assert_allclose(looked_up, out["z_q"], rtol=1e-6)
  np.testing.assert_allclose(out["quantized"], out["z_q"], rtol=1e-6)
  assert out["counts"].shape == (2**d,) and float(out["counts"].sum()) == 15
  np.testing.assert_array_equal(out["counts"], np.bincount(np.ravel(brute), minlength=2**d))
  # Straight-through: the gradient at the decoder input reaches the quantized vector as is.
  w = jax.random.normal(jax.random.key(2), z.shape)
  g = jax.grad(lambda u_: jnp.sum(w * module.apply(v, u_)["quantized"]))
  if cls is lfq.LookupFreeQuantizer:
    np.testing.assert_allclose(g(z), w, rtol=1e-6)
  else:  # to z through the normalization u = z / |z|
    _, vjp = jax.vjp(lambda z_: z_ / jnp.linalg.norm(z_, axis=-1, keepdims=True), z)
    np.testing.assert_allclose(g(z), vjp(w)[0], rtol=1e-5, atol=1e-6)


def _explicit_rotation(e, q):
  """lambda R of the rotation trick, as a matrix (Fifty et al. 2024)."""
  e_hat, q_hat = e / np.linalg.norm(e), q / np.linalg.norm(q)
  r = (e_hat + q_hat) / np.linalg.norm(e_hat + q_hat)
  rot = np.eye(len(e)) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, e_hat)
  return np.linalg.norm(q) / np.linalg.norm(e) * rot


def test_lfq_rotation_trick_sends_lambda_r_transpose_of_the_gradient():
  d = 4
  module = lfq.LookupFreeQuantizer(2**d, d, gradient="rotation")
  z = jnp.array([[0.3, -1.2, 0.7, 0.1]])
  v = module.init(jax.random.key(0), z)
  w = jnp.array([[1.0, 0.5, -2.0, 0.25]])
  out = module.apply(v, z)
  np.testing.assert_allclose(out["quantized"], out["z_q"], atol=1e-6)
  g = jax.grad(lambda z_: jnp.sum(w * module.apply(v, z_)["quantized"]))(z)
  m = _explicit_rotation(np.asarray(z[0], np.float64), np.asarray(out["z_q"][0], np.float64))
  np.testing.assert_allclose(g[0], m.T @ np.asarray(w[0]), rtol=1e-5)
  assert not np.allclose(g, w)


def test_projection_when_code_dim_differs():
  module = lfq.LookupFreeQuantizer(2**3, 6)
  z = jax.random.normal(jax.random.key(1), (2, 4, 6))
  v, out, looked_up = _built(module, z)
  assert set(v["params"]) == {"project_in", "project_out"}
  assert out["z_e"].shape == (2, 4, 3) and out["quantized"].shape == (2, 4, 6)
  np.testing.assert_allclose(looked_up, out["quantized"], rtol=1e-5, atol=1e-6)


# --- the entropy penalty against brute force -------------------------------------------------


def _brute(z, codes, tau):
  """(E[H(p)], H(E[p])) with p(c|z) = softmax over all codes of -||z - c||^2 / tau."""
  logp = jax.nn.log_softmax(-jnp.sum((z[:, None, :] - codes) ** 2, -1) / tau, -1)
  p = jnp.exp(logp)
  per_sample = jnp.mean(-jnp.sum(p * logp, -1))
  mean = p.mean(0)
  return per_sample, -jnp.sum(mean * jnp.log(mean))


@pytest.mark.parametrize("d", [1, 4, 5])
def test_lfq_entropies_equal_the_softmax_over_all_codes_value_and_gradient(d):
  tau = 0.7
  z = jax.random.normal(jax.random.key(d), (37, d)) * 0.8
  codes = lfq.indices_to_signs(jnp.arange(2**d), d)
  ours = lambda z_: (binary_entropy.per_sample_entropy(4.0 * z_ / tau),
                     binary_entropy.codebook_entropy(4.0 * z_ / tau))
  # One program per side and term (eager, every op of the gradient compiles on its own).
  value_and_grad = lambda f, i: jax.jit(jax.value_and_grad(lambda z_: f(z_)[i]))(z)
  for i in range(2):
    (v, g), (bv, bg) = value_and_grad(ours, i), value_and_grad(lambda z_: _brute(z_, codes, tau), i)
    np.testing.assert_allclose(v, bv, rtol=1e-5)
    np.testing.assert_allclose(g, bg, rtol=1e-4, atol=1e-6)
  # The (2^a, 2^b) matrix is the mean distribution, entry [j, k] code j + 2^a k.
  a = d // 2
  mean = binary_entropy.codebook_distribution(4.0 * z / tau)
  brute_mean = jax.nn.softmax(-jnp.sum((z[:, None] - codes) ** 2, -1) / tau, -1).mean(0)
  assert mean.shape == (2**a, 2**(d - a))
  np.testing.assert_allclose(np.asarray(mean).T.reshape(-1), brute_mean, rtol=1e-5, atol=1e-7)


def test_entropies_stay_finite_with_saturated_logits():
  logits = jnp.array([[80.0, -80.0, 0.0, 30.0]])
  for f in (binary_entropy.per_sample_entropy, binary_entropy.codebook_entropy,
            binary_entropy.factorised_codebook_entropy):
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_allclose(binary_entropy.per_sample_entropy(logits), np.log(2), rtol=1e-5)


def test_bsq_entropies_are_the_papers_factorised_form():
  d, tau = 5, 0.5
  module = bsq.BinarySphericalQuantizer(2**d, d)
  z = jax.random.normal(jax.random.key(3), (41, d))
  out = module.apply({}, z)
  logits = out["bit_logits"] / tau
  codes = lfq.indices_to_signs(jnp.arange(2**d), d) / np.sqrt(d)
  brute_sample, brute_codebook = jax.jit(_brute, static_argnums=2)(out["z_e"], codes, tau)
  # The per-sample term is exact.
  np.testing.assert_allclose(binary_entropy.per_sample_entropy(logits), brute_sample, rtol=1e-5)
  # The codebook term: sum over channels of the entropy of the batch's mean marginal,
  # an upper bound of the exact one.
  p = jax.nn.sigmoid(logits).mean(0)
  closed = -jnp.sum(p * jnp.log(p) + (1 - p) * jnp.log(1 - p))
  factorised = binary_entropy.factorised_codebook_entropy(logits)
  np.testing.assert_allclose(factorised, closed, rtol=1e-5)
  assert float(factorised) >= float(brute_codebook) - 1e-5
  np.testing.assert_allclose(binary_entropy.codebook_entropy(logits), brute_codebook, rtol=1e-5)
  g = jax.jit(jax.grad(binary_entropy.factorised_codebook_entropy))(logits)
  g_closed = jax.jit(jax.grad(lambda l: -jnp.sum(
      (lambda q: q * jnp.log(q) + (1 - q) * jnp.log(1 - q))(jax.nn.sigmoid(l).mean(0)))))(logits)
  np.testing.assert_allclose(g, g_closed, rtol=1e-4, atol=1e-7)


# --- the family ---------------------------------------------------------------------------

_BUILT = {}


def _model(npz_pair, preset, family="vqvae", **overrides):
  from vaelab import spmd
  from vaelab.data.base import SourceInfo
  config = vq_config(*npz_pair, family=family)
  vqvae.apply_preset(config, preset)
  config.loss.commitment = 0.5
  config.loss.entropy_weight = 0.3
  config.loss.entropy_temperature = 0.8
  for k, v in overrides.items():
    config[k.split(".")[0]][k.split(".")[1]] = v
  fam = validation.validate(config, num_devices=1)
  key = (family, preset)
  if key not in _BUILT:
    model = fam.make_model(config, SourceInfo((8, 8, 1)))
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
    _BUILT[key] = (model, spmd.init(model, jax.random.key(0, impl="rbg"), x), x)
  return (fam, config, *_BUILT[key])


def _loss_and_outputs(fam, config, model, variables, x):
  loss_fn = fam.make_loss(config, axis_name=None)
  hp = {k: jnp.asarray(v) for k, v in fam.hparams(config).items()}
  state = {k: v for k, v in variables.items() if k != "params"}

  def f(params):
    value, (metrics, _) = loss_fn(model, params, state, {"image": x}, None, hp)
    return value, metrics, model.apply({**variables, "params": params}, x)

  return jax.jit(f)(variables["params"])


@pytest.mark.parametrize("preset", ["lfq", "bsq"])
def test_objective_is_recon_commitment_and_entropy_and_usage_is_over_all_codes(npz_pair,
                                                                             preset):
  fam, config, model, variables, x = _model(npz_pair, preset)
  assert set(variables) == {"params"}  # no codebook state
  assert prior_num_codes(config) == 16 and QuantizerSpec.from_config(config.model).entropy
  loss, metrics, (logits, (q,)) = _loss_and_outputs(fam, config, model, variables, x)
  recon = reconstruction.nll("bernoulli", logits, x)
  commit = 0.5 * vq_losses.commitment_loss(q["z_e"], q["z_q"])  # no codebook term
  logit = q["bit_logits"] / 0.8
  sample = binary_entropy.per_sample_entropy(logit)
  codebook = (binary_entropy.codebook_entropy if preset == "lfq"
              else binary_entropy.factorised_codebook_entropy)(logit)
  penalty = 0.3 * math.prod(x.shape[1:]) * (sample - codebook)  # per image value
  np.testing.assert_allclose(loss, (recon + commit).mean() + penalty, rtol=1e-5)
  np.testing.assert_allclose(metrics["entropy_per_sample"], sample, rtol=1e-5)
  np.testing.assert_allclose(metrics["entropy_codebook"], codebook, rtol=1e-5)
  counts = np.bincount(np.ravel(q["indices"]), minlength=16)
  np.testing.assert_array_equal(q["counts"], counts)
  np.testing.assert_allclose(metrics["codebook_usage"], np.mean(counts > 0))
  p = counts / counts.sum()
  np.testing.assert_allclose(metrics["perplexity"],
                             np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rtol=1e-5)
  decoded = model.apply(variables, q["indices"], method="decode_indices")
  np.testing.assert_allclose(decoded, jax.nn.sigmoid(logits), atol=1e-6)


def test_vqvae2_penalises_both_levels(npz_pair):
  fam, config, model, variables, x = _model(npz_pair, "lfq", family="vqvae2")
  loss, metrics, (logits, levels) = _loss_and_outputs(fam, config, model, variables, x)
  recon = reconstruction.nll("bernoulli", logits, x)
  total = recon.mean()
  for level, q in zip(("top", "bottom"), levels):
    logit = q["bit_logits"] / 0.8
    s, c = (binary_entropy.per_sample_entropy(logit), binary_entropy.codebook_entropy(logit))
    np.testing.assert_allclose(metrics[f"entropy_per_sample_{level}"], s, rtol=1e-5)
    np.testing.assert_allclose(metrics[f"entropy_codebook_{level}"], c, rtol=1e-5)
    total = total + (0.5 * vq_losses.commitment_loss(q["z_e"], q["z_q"])).mean()
    total = total + 0.3 * math.prod(x.shape[1:]) * (s - c)
  np.testing.assert_allclose(loss, total, rtol=1e-5)


def test_the_old_quantizers_have_no_entropy_term(npz_pair):
  config = vq_config(*npz_pair)
  assert vqvae.entropy_of(config) is None
  assert vq_losses.entropy_penalty([{"pairs": ()}], None, 784) == 0.0


@pytest.mark.parametrize("preset", ["lfq", "bsq"])
def test_validation_names_the_key(npz_pair, preset):
  def check(match, **overrides):
    config = vq_config(*npz_pair)
    vqvae.apply_preset(config, preset)
    for k, v in overrides.items():
      config[k.split("__")[0]][k.split("__")[1]] = v
    with pytest.raises(ConfigError, match=match):
      validation.validate(config, num_devices=1)

  check("model.num_codes=1000.*power of 2", model__num_codes=1000)
  check("model.num_codes", model__num_codes=2**25)
  check("model.codebook_norm", model__codebook_norm="l2")
  check("model.codebook_dim", model__codebook_dim=4)
  check("model.dead_code_steps", model__dead_code_steps=5)
  check("model.kmeans_init", model__kmeans_init=True)
  check("loss.entropy_weight", loss__entropy_weight=-0.1)
  check("loss.entropy_temperature", loss__entropy_temperature=0.0)
  check("loss.entropy_temperature", loss__entropy_temperature=float("inf"))


def test_presets_at_two_to_the_14_codes():
  """As a config of K = 16384 codes applies them (the vqgan family's default)."""
  from vaelab import config_base
  sizes = {}
  for preset in ("vq", "fsq", "lfq", "bsq", "simvq"):
    c = config_base.load_config("configs/vqvae_mnist.py", {"model.num_codes": 16384,
                                                          "model.dead_code_steps": 0})
    vqvae.apply_preset(c, preset)
    validation.validate(c, num_devices=1)
    spec = QuantizerSpec.from_config(c.model)
    sizes[preset] = spec.codebook_size
    assert not (spec.ema and preset != "vq") and spec.entropy == (preset in ("lfq", "bsq"))
  # fsq: the FSQ paper's levels for 2^14, (8, 8, 8, 6, 5).
  assert sizes == {"vq": 16384, "fsq": 15360, "lfq": 16384, "bsq": 16384, "simvq": 16384}


@pytest.mark.parametrize("preset", ["lfq", "bsq"])
def test_a_few_training_steps_lower_the_loss(npz_pair, preset):
  fam, config, model, variables, x = _model(npz_pair, preset)
  with np.load(npz_pair[0]) as f:
    images = jnp.asarray(f["image"][:64], jnp.float32) / 255.0
  loss_fn = fam.make_loss(config, axis_name=None)
  hp = {k: jnp.asarray(v) for k, v in fam.hparams(config).items()}
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state):
    (value, _), g = jax.value_and_grad(
        lambda p: loss_fn(model, p, {}, {"image": images}, None, hp), has_aux=True)(params)
    updates, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  params = variables["params"]
  opt_state = opt.init(params)
  losses = []
  for _ in range(30):
    params, opt_state, value = step(params, opt_state)
    losses.append(float(value))
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
