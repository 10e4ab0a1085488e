"""The quantizers beside the plain VQ: FSQ's grid, its levels and its index round trip,
residual VQ's error falling level by level, the rotation trick against its explicit matrix
(straight-through at the origin and for vanishing inputs), cosine and low-dimensional
codebooks (k-means for them spherical), and each quantizer in both VQ families (objective,
metric names, indices for the prior). The refused combinations:
tests/test_quantizer_spec.py.

(1 vs N devices, resume and populations: tests/test_contract.py runs every declared
option of the VQ families through them.)
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import vq_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import vqvae as vq_losses
from vaelab.losses import reconstruction
from vaelab.models import fsq, quantizer, residual_vq
from vaelab.models.quantizer_spec import prior_num_codes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _apply(module, variables, *args, **kwargs):
  """module.apply, jitted: one compilation of the whole call costs a fraction of the eager
  ops'."""
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def _built(module, z, key=jax.random.key(0)):
  """(variables, output on z, lookup of its indices) of a fresh module, in one compilation."""
  def f(key, z):
    v = module.init(key, z)
    out = module.apply(v, z)
    return v, out, module.apply(v, out["indices"], method="lookup")
  return jax.jit(f)(key, z)


def _keys(n, seed=0):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


# --- FSQ ----------------------------------------------------------------------------------

LEVELS = (8, 5, 3, 2)  # even and odd, and the smallest allowed


def test_fsq_grid_is_the_product_of_the_levels_and_indices_round_trip():
  k = fsq.codebook_size(LEVELS)
  assert k == 240
  grid = np.asarray(fsq.implicit_codebook(LEVELS))
  assert grid.shape == (k, 4) and len({tuple(r) for r in grid}) == k  # all distinct
  for i, level in enumerate(LEVELS):  # channel i takes the L values (j - L//2) / (L//2)
    expected = (np.arange(level) - level // 2) / (level // 2)
    np.testing.assert_allclose(np.unique(grid[:, i]), expected, atol=1e-7)
  np.testing.assert_array_equal(fsq.codes_to_indices(jnp.asarray(grid), LEVELS), np.arange(k))
  # Quantized encoder outputs, from far beyond the bound's range: every grid point is hit,
  # and each index decodes to exactly its point.
  z = jax.random.normal(jax.random.key(0), (20000, 4)) * 3.0
  bounded, z_q = fsq.quantize(z, LEVELS)
  idx = fsq.codes_to_indices(z_q, LEVELS)
  assert idx.dtype == jnp.int32 and set(np.unique(idx)) == set(range(k))
  np.testing.assert_array_equal(fsq.indices_to_codes(idx, LEVELS), z_q)
  # The grid point is the rounded bounded value: within half a level of it.
  half = np.asarray(fsq.half_width(LEVELS))
  assert np.all(np.abs(np.asarray(bounded - z_q)) * half <= 0.5 + 1e-6)
  np.testing.assert_allclose(np.asarray(z_q) * half, np.round(np.asarray(bounded) * half))
  # Centred: 0 is (nearly) a fixed point, and the level it rounds to (L = 2: tan's shift is
  # a poor atanh at 1/h ~ 1, bound(0) = -0.04).
  at_zero = np.asarray(fsq.bound(jnp.zeros(4), LEVELS))
  assert np.all(np.abs(at_zero[:3]) < 1e-3) and np.all(np.round(at_zero) == 0), at_zero


def test_fsq_levels_say_which_are_the_papers():
  """Table 1 of Mentzer et al. 2023 recommends levels for 2^8, 2^10, 2^12, 2^14 and 2^16
  codes only; those for 2^9 and 2^11 are this project's."""
  table = {256: 240, 1024: 1000, 4096: 4375, 16384: 15360, 65536: 64000}
  assert {k: fsq.codebook_size(v) for k, v in fsq.PAPER_LEVELS.items()} == table
  assert fsq.OWN_LEVELS == {512: (8, 8, 8), 2048: (8, 8, 6, 5)}
  assert list(fsq.RECOMMENDED_LEVELS) == sorted({**fsq.PAPER_LEVELS, **fsq.OWN_LEVELS})
  assert fsq.levels_near(256) == (8, 6, 5) and fsq.levels_near(500) == (8, 8, 8)


def test_fsq_module_passes_the_gradient_straight_through_and_projects_when_asked():
  z = jax.random.normal(jax.random.key(1), (6, 5, 4))
  w = jax.random.normal(jax.random.key(2), (6, 5, 4))
  fq = fsq.FiniteScalarQuantizer(LEVELS, code_dim=4)
  assert jax.eval_shape(fq.init, jax.random.key(0), z) == {}  # nothing to learn
  out = _apply(fq, {}, z)
  assert out["pairs"] == () and out["indices"].shape == (6, 5)
  np.testing.assert_allclose(out["quantized"], out["z_q"], atol=1e-6)
  np.testing.assert_allclose(out["counts"], np.bincount(np.asarray(out["indices"]).ravel(),
                                                        minlength=240))
  # Straight-through the rounding: the gradient is that of the bounded value.
  grad, expected = jax.jit(lambda u: (
      jax.grad(lambda a: jnp.sum(w * fq.apply({}, a)["quantized"]))(u),
      jax.grad(lambda a: jnp.sum(w * fsq.quantize(a, LEVELS)[0]))(u)))(z)
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
  # code_dim 8 -> 4 channels and back; indices decode to the decoder input.
  z8 = jax.random.normal(jax.random.key(3), (6, 5, 8))
  v, out, looked_up = _built(fsq.FiniteScalarQuantizer(LEVELS, code_dim=8), z8)
  assert v["params"]["project_in"]["kernel"].shape == (8, 4)
  assert out["quantized"].shape == (6, 5, 8) and out["z_q"].shape == (6, 5, 4)
  np.testing.assert_allclose(looked_up, out["quantized"], atol=1e-6)


# --- the rotation trick -------------------------------------------------------------------

def _explicit_rotation(e, q):
  """The paper's matrix lambda R, R = I - 2 r r^T + 2 q^ e^T, in float64."""
  e_hat, q_hat = e / np.linalg.norm(e), q / np.linalg.norm(q)
  r = (e_hat + q_hat) / np.linalg.norm(e_hat + q_hat)
  rot = np.eye(len(e)) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, e_hat)
  return np.linalg.norm(q) / np.linalg.norm(e) * rot, rot


def test_rotation_trick_forward_is_the_code_and_its_jacobian_is_lambda_r():
  rng = np.random.default_rng(0)
  e = rng.normal(size=(5, 6))
  q = rng.normal(size=(5, 6)) * 2.0
  e32, q32 = jnp.asarray(e, jnp.float32), jnp.asarray(q, jnp.float32)
  out = quantizer.rotation_trick(e32, q32)
  np.testing.assert_allclose(out, quantizer.straight_through(e32, q32), atol=1e-6)
  np.testing.assert_allclose(out, q, atol=1e-6)
  # Each row depends on its own e only, through the constant matrix lambda R.
  jac = jax.jacobian(lambda u: quantizer.rotation_trick(u, q32))(e32)  # (5, 6, 5, 6)
  for i in range(5):
    scaled, rot = _explicit_rotation(e[i], q[i])
    np.testing.assert_allclose(jac[i, :, i, :], scaled, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.delete(np.asarray(jac[i]), i, axis=1), 0.0)
    np.testing.assert_allclose(rot @ rot.T, np.eye(6), atol=1e-12)  # a rotation ...
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot @ e[i] * np.linalg.norm(q[i]) / np.linalg.norm(e[i]), q[i])
  # ... unlike straight-through's identity: the gradient is turned and rescaled.
  g = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  grad = jax.grad(lambda u: jnp.sum(g * quantizer.rotation_trick(u, q32)))(e32)
  for i in range(5):
    np.testing.assert_allclose(grad[i], _explicit_rotation(e[i], q[i])[0].T @ np.asarray(g[i]),
                               rtol=1e-4, atol=1e-5)
  # No gradient reaches the code through the decoder input.
  assert float(jnp.abs(jax.grad(lambda c: jnp.sum(g * quantizer.rotation_trick(e32, c)))(
      q32)).max()) == 0
  # Opposite vectors (r = 0): still the code, with the reflection-free map -|q|/|e| I in
  # the plane.
  anti = quantizer.rotation_trick(e32[:1], -3.0 * e32[:1])
  np.testing.assert_allclose(anti, -3.0 * e32[:1], atol=1e-5)


def test_rotation_trick_is_straight_through_where_the_code_is_the_origin():
  """Nothing rotates onto the origin, and lambda = |q|/|e| = 0 there would pass no gradient
  at all: FSQ's grid always holds the all-zero code, and an EMA code no vector chose sits
  at the origin. There the gradient is straight-through's; elsewhere still lambda R."""
  rng = np.random.default_rng(3)
  e = rng.normal(size=(5, 6))
  q = rng.normal(size=(5, 6)) * 2.0
  q[[0, 3]] = 0.0
  e32, q32 = jnp.asarray(e, jnp.float32), jnp.asarray(q, jnp.float32)
  g = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  out = quantizer.rotation_trick(e32, q32)
  np.testing.assert_allclose(out, q, atol=1e-6)
  grad = np.asarray(jax.grad(lambda u: jnp.sum(g * quantizer.rotation_trick(u, q32)))(e32))
  straight = np.asarray(jax.grad(lambda u: jnp.sum(g * quantizer.straight_through(u, q32)))(
      e32))
  np.testing.assert_array_equal(grad[[0, 3]], straight[[0, 3]])
  for i in (1, 2, 4):
    np.testing.assert_allclose(grad[i], _explicit_rotation(e[i], q[i])[0].T @ np.asarray(g[i]),
                               rtol=1e-4, atol=1e-5)


def test_rotation_trick_gradient_stays_bounded_as_the_input_vanishes():
  """lambda = |q|/|e| grows without bound as e -> 0 (at e = 0 it was |q|/eps = 5e6 here).
  Below eps, as l2_normalize does, the direction of e counts as undefined: the gradient is
  straight-through's there, and above it at most |q|/eps times the incoming one."""
  eps = 1e-6
  q = jnp.asarray([[3.0, 4.0, 0.0]])
  g = jnp.asarray([[1.0, -2.0, 0.5]])
  direction = np.asarray([[0.6, 0.0, -0.8]])
  grad = lambda e: np.asarray(jax.grad(lambda u: jnp.sum(g * quantizer.rotation_trick(
      u, q, eps)))(jnp.asarray(e, jnp.float32)))
  for scale in (0.0, 1e-9, 1e-7, 0.9e-6):
    np.testing.assert_array_equal(grad(scale * direction), g, err_msg=str(scale))
  for scale in (2e-6, 1e-4, 1.0):
    e = scale * direction
    got = grad(e)
    assert np.linalg.norm(got) <= 5.0 / eps * np.linalg.norm(g) * (1 + 1e-5)
    expected = _explicit_rotation(e[0], np.asarray(q[0], np.float64))[0].T @ np.asarray(g[0])
    np.testing.assert_allclose(got[0], expected, rtol=1e-4)


def test_fsq_and_ema_codes_at_the_origin_pass_the_straight_through_gradient():
  # FSQ at initialisation: small encoder outputs round to the all-zero grid point.
  z = 0.05 * jax.random.normal(jax.random.key(4), (6, 5, 4))
  w = jax.random.normal(jax.random.key(5), (6, 5, 4))
  fq = fsq.FiniteScalarQuantizer(LEVELS, code_dim=4, gradient="rotation")
  assert float(jnp.abs(_apply(fq, {}, z)["z_q"]).max()) == 0  # all at the origin
  grad, expected = jax.jit(lambda u: (
      jax.grad(lambda a: jnp.sum(w * fq.apply({}, a)["quantized"]))(u),
      jax.grad(lambda a: jnp.sum(w * fsq.quantize(a, LEVELS)[0]))(u)))(z)
  np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(grad).min()) > 0
  # An EMA codebook whose code 0 is at the origin (a code no vector chose yet).
  vq = quantizer.VectorQuantizer(4, 2, ema_decay=0.9, gradient="rotation")
  variables = _vq_state(vq, np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [5.0, 5.0]]))
  x = jnp.asarray([[0.1, -0.2], [2.5, 0.3], [-0.3, 0.1], [0.2, 2.0]], jnp.float32)
  g = np.array([[1.0, 2.0], [0.5, -1.0], [-2.0, 0.5], [1.5, 1.0]], np.float32)
  out = _apply(vq, variables, x)
  np.testing.assert_array_equal(out["indices"], [0, 1, 0, 2])
  grad = np.asarray(jax.jit(jax.grad(
      lambda u: jnp.sum(g * vq.apply(variables, u)["quantized"])))(x))
  np.testing.assert_array_equal(grad[[0, 2]], g[[0, 2]])
  assert not np.allclose(grad[[1, 3]], g[[1, 3]])  # rotated where the code is not 0


def _vq_state(module, codebook):
  """An EMA quantizer's variables with the given codebook (statistics at one use each)."""
  k, d = codebook.shape
  v = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, d)))
  assert set(v["vq"]) == {"codebook", "cluster_size", "embed_sum"}
  return {"vq": {"codebook": jnp.asarray(codebook, jnp.float32),
                 "cluster_size": jnp.ones((k,), jnp.float32),
                 "embed_sum": jnp.asarray(codebook, jnp.float32)}}


def test_vq_with_the_rotation_trick_sends_the_rotated_gradient_to_the_encoder():
  z = jax.random.normal(jax.random.key(0), (7, 4))
  g = jax.random.normal(jax.random.key(1), (7, 4))
  vq = quantizer.VectorQuantizer(16, 4, ema_decay=0.0, gradient="rotation")
  v = {"params": {"codebook": jax.random.normal(jax.random.key(2), (16, 4))}}
  out = _apply(vq, v, z)
  np.testing.assert_allclose(out["quantized"], out["z_q"], atol=1e-6)
  grad = jax.jit(jax.grad(lambda u: jnp.sum(g * _apply(vq, v, u)["quantized"])))(z)
  for i in range(7):
    expected = _explicit_rotation(np.asarray(z[i], np.float64),
                                  np.asarray(out["z_q"][i], np.float64))[0].T @ np.asarray(g[i])
    np.testing.assert_allclose(grad[i], expected, rtol=1e-4, atol=1e-5)


# --- cosine and low-dimensional codebooks ----------------------------------------------------

def test_l2_codebook_looks_up_by_cosine_in_the_projected_space():
  z = jax.random.normal(jax.random.key(0), (3, 5, 8))
  vq = quantizer.VectorQuantizer(32, 8, ema_decay=0.0, codebook_norm="l2", codebook_dim=3)
  v, out, looked_up = _built(vq, z)
  assert v["params"]["codebook"].shape == (32, 3)
  assert v["params"]["project_in"]["kernel"].shape == (8, 3)
  low = z @ v["params"]["project_in"]["kernel"] + v["params"]["project_in"]["bias"]
  np.testing.assert_allclose(out["z_e"], low / np.linalg.norm(low, axis=-1, keepdims=True),
                             rtol=1e-5, atol=1e-6)
  codebook = np.asarray(v["params"]["codebook"])
  unit = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
  np.testing.assert_array_equal(out["indices"], np.argmax(np.asarray(out["z_e"]) @ unit.T, -1))
  np.testing.assert_allclose(np.linalg.norm(out["z_q"], axis=-1), 1.0, rtol=1e-5)
  assert out["quantized"].shape == (3, 5, 8)
  np.testing.assert_allclose(looked_up, out["quantized"], atol=1e-6)


def test_kmeans_under_l2_is_spherical_as_the_cosine_lookup():
  """k-means for a cosine codebook assigns by cosine and normalizes its centroids, as the
  lookup does: the codes it leaves are the normalized means of the vectors the lookup then
  assigns to them (a fixed point of spherical k-means). Euclidean k-means of the unit
  vectors left a wide cluster's centroid shorter than a tight one's, moving the boundary
  it converged to away from the lookup's (here by 0.05 in a code)."""
  ang = np.deg2rad(np.concatenate([np.linspace(-3, 3, 20), np.linspace(30, 270, 40)]))
  z = np.stack([np.cos(ang), np.sin(ang)], 1) * np.linspace(0.5, 2.0, 60)[:, None]
  vq = quantizer.VectorQuantizer(2, 2, ema_decay=0.99, kmeans_init=True, codebook_norm="l2")
  # The output's codes are those k-means left (the EMA update comes after the lookup).
  out, _ = jax.jit(lambda z, keys: vq.apply(vq.init(jax.random.key(0), z), z, keys,
                                            mutable=["vq"]))(jnp.asarray(z, jnp.float32),
                                                             _keys(60))
  z_e, idx, z_q = (np.asarray(out[k]) for k in ("z_e", "indices", "z_q"))
  assert set(idx) == {0, 1}
  for i in (0, 1):
    mean = z_e[idx == i].mean(0)
    np.testing.assert_allclose(z_q[idx == i], np.broadcast_to(
        mean / np.linalg.norm(mean), z_q[idx == i].shape), atol=1e-5)


# --- residual VQ --------------------------------------------------------------------------

def test_residual_error_falls_with_every_level_and_the_codes_sum_to_z_q():
  z = jax.random.normal(jax.random.key(0), (256, 4))
  rvq = residual_vq.ResidualVectorQuantizer(4, 16, 4, ema_decay=0.99, kmeans_init=True)

  def f(key, z, keys):  # one compilation for all the calls
    v = rvq.init(key, z)
    # One training call: each level fits k-means to the residuals it is given.
    out, new = rvq.apply(v, z, keys, mutable=["vq"])
    again = rvq.apply(new, z)
    return v, out, again, rvq.apply(new, again["indices"], method="lookup")

  v, out, again, looked_up = jax.jit(f)(jax.random.key(1), z, _keys(256))
  assert set(v["vq"]) == {"q0", "q1", "q2", "q3"}
  assert out["indices"].shape == (256, 4) and out["counts"].shape == (4, 16)
  assert len(out["pairs"]) == 4
  # Level l's input is z minus the codes of the levels before it, and its error is the
  # next level's input.
  residual = np.asarray(z)
  errors = [float(np.sum(residual ** 2))]
  for l, (r, code) in enumerate(out["pairs"]):
    np.testing.assert_allclose(r, residual, atol=1e-5)
    residual = residual - np.asarray(code)
    errors.append(float(np.sum(residual ** 2)))
  assert all(b < 0.8 * a for a, b in zip(errors, errors[1:])), errors
  np.testing.assert_allclose(out["z_q"], np.asarray(z) - residual, atol=1e-5)
  np.testing.assert_allclose(out["quantized"], out["z_q"], atol=1e-5)
  # Indices of the updated codebooks decode to the sum of the levels' codes.
  np.testing.assert_allclose(looked_up, again["z_q"], atol=1e-5)
  assert float(np.sum((np.asarray(z) - np.asarray(again["z_q"])) ** 2)) < 0.5 * errors[1]


# --- the families with each quantizer -------------------------------------------------------

CASES = {
    "fsq": {"model.quantizer": "fsq", "model.fsq_levels": (5, 3, 3)},
    "fsq_rotation": {"model.quantizer": "fsq", "model.fsq_levels": (5, 3, 3),
                     "model.gradient": "rotation"},
    "residual": {"model.quantizer": "residual", "model.num_quantizers": 3,
                 "model.ema_decay": 0.0},
}
_BUILT = {}


def _model(npz_pair, case, family="vqvae"):
  """(family, config, model, variables, x, keys), built once per case. Jitted init with an
  rbg key (see tests/test_vqvae.py's _model): here, with few models, one compilation each
  costs less than the eager init."""
  from vaelab.data.base import SourceInfo
  from vaelab import spmd
  config = vq_config(*npz_pair, family=family, **{"loss.commitment": 0.5, **CASES[case]})
  fam = validation.validate(config, num_devices=1)
  if (family, case) not in _BUILT:
    model = fam.make_model(config, SourceInfo((8, 8, 1)))
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
    _BUILT[(family, case)] = (model, spmd.init(model, jax.random.key(0, impl="rbg"), x, _keys(6)),
                              x, _keys(6))
  return (fam, config, *_BUILT[(family, case)])


def _outputs(fam, config, model, variables, x, keys, method="encode_indices", grads=False):
  """One jitted call (one compilation, where each eager op or method compiles apart): the
  loss and train metrics, the model's (logits, levels), its code maps by `method`, their
  decoding and the reconstruction, and with `grads` the loss's gradients."""
  state = {k: v for k, v in variables.items() if k != "params"}
  hp = {k: jnp.asarray(v) for k, v in fam.hparams(config).items()}
  loss_fn = fam.make_loss(config, axis_name=None)

  def f(params):
    v = {**variables, "params": params}
    loss = lambda p: loss_fn(model, p, state, {"image": x}, keys, hp)
    (value, (metrics, _)), g = (jax.value_and_grad(loss, has_aux=True)(params) if grads
                                else (loss(params), None))
    maps = model.apply(v, x, method=method)
    maps = maps if isinstance(maps, tuple) else (maps,)
    return {"loss": value, "metrics": metrics, "grads": g, "out": model.apply(v, x),
            "maps": maps, "decoded": model.apply(v, *maps, method="decode_indices"),
            "reconstruct": model.apply(v, x, method="reconstruct")}

  return jax.jit(f)(variables["params"])


def test_fsq_objective_is_the_reconstruction_alone_and_its_codes_go_to_the_prior(npz_pair):
  fam, config, model, variables, x, keys = _model(npz_pair, "fsq")
  assert set(variables) == {"params"}  # no codebook state
  r = _outputs(fam, config, model, variables, x, keys)
  logits, (q,) = r["out"]
  np.testing.assert_allclose(r["loss"], reconstruction.nll("bernoulli", logits, x).mean(),
                             rtol=1e-6)
  metrics = r["metrics"]
  assert 1 <= float(metrics["perplexity"]) <= 45 and 0 < float(metrics["codebook_usage"]) <= 1
  np.testing.assert_allclose(metrics["codebook_usage"], np.mean(np.asarray(q["counts"]) > 0))
  assert prior_num_codes(config) == 45 == model.quantizer.codebook_size
  idx, = r["maps"]
  assert idx.shape == (6, 4, 4) and 0 <= int(idx.min()) and int(idx.max()) < 45
  np.testing.assert_allclose(r["decoded"], r["reconstruct"], atol=1e-6)


def test_residual_objective_sums_every_levels_terms_and_reports_each_level(npz_pair):
  fam, config, model, variables, x, keys = _model(npz_pair, "residual")
  r = _outputs(fam, config, model, variables, x, keys, method="code_maps", grads=True)
  logits, (q,) = r["out"]
  recon = reconstruction.nll("bernoulli", logits, x)
  quant = sum(0.5 * vq_losses.commitment_loss(a, c) + vq_losses.codebook_loss(a, c)
              for a, c in q["pairs"])
  np.testing.assert_allclose(r["loss"], (recon + quant).mean(), rtol=1e-5)
  metrics = r["metrics"]
  for l in range(3):
    assert {f"perplexity_q{l}", f"codebook_usage_q{l}", f"commitment_q{l}"} <= set(metrics)
  np.testing.assert_allclose(metrics["codebook_usage"],
                             np.mean([metrics[f"codebook_usage_q{l}"] for l in range(3)]))
  # Every level's codebook learns from its own codebook term.
  assert all(float(jnp.abs(r["grads"]["vq"][f"q{l}"]["codebook"]).max()) > 0 for l in range(3))
  maps, = r["maps"]
  assert maps.shape == (6, 4, 4, 3)
  np.testing.assert_allclose(r["decoded"], r["reconstruct"], atol=1e-6)
  # Family.encode / decode (vaelab.Run's convention) are these maps and their decoding.
  np.testing.assert_array_equal(fam.encode(model, variables, x), maps)
  np.testing.assert_allclose(fam.decode(model, variables, maps), r["reconstruct"], atol=1e-6)
  # One index per position is what the prior takes: refused, naming the key.
  with pytest.raises(ConfigError, match="model.num_quantizers=3"):
    model.apply(variables, x, method="encode_indices")
  with pytest.raises(ConfigError, match="residual"):
    prior_num_codes(config)


def test_vqvae2_takes_fsq_with_the_rotation_trick_at_both_levels(npz_pair):
  fam, config, model, variables, x, keys = _model(npz_pair, "fsq_rotation", family="vqvae2")
  r = _outputs(fam, config, model, variables, x, keys)
  # FSQ has no codebook terms: the loss is the reconstruction term of the logits.
  logits, _ = r["out"]
  np.testing.assert_allclose(r["loss"], reconstruction.nll(config.model.likelihood, logits,
                                                           x).mean(), rtol=1e-5)
  assert {"perplexity_top", "perplexity_bottom", "codebook_usage_top"} <= set(r["metrics"])
  top, bottom = r["maps"]
  assert top.shape == (6, 2, 2) and bottom.shape == (6, 4, 4)
  assert int(max(top.max(), bottom.max())) < prior_num_codes(config)
  np.testing.assert_allclose(r["decoded"], r["reconstruct"], atol=1e-6)
  # Family.decode takes the (top, bottom) pair that Family.encode gives.
  np.testing.assert_allclose(fam.decode(model, variables, r["maps"]), r["reconstruct"],
                             atol=1e-6)


def test_l2_normalization_of_zero_is_zero_without_gradient():
  """Black image regions through zero biases give encoder outputs of exactly 0 (a NaN
  gradient there stopped the first step of a cosine-codebook run)."""
  z = jnp.zeros((2, 3)).at[1].set(jnp.array([3.0, 4.0, 0.0]))
  grad = jax.grad(lambda u: jnp.sum(quantizer.l2_normalize(u) * jnp.arange(3.0)))(z)
  # d/du (u . a) / |u| = a / |u| - (u . a) u / |u|^3 at u = (3, 4, 0), a = (0, 1, 2).
  np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0], [-0.096, 0.072, 0.4]], rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(quantizer.l2_normalize(z)[1], [0.6, 0.8, 0.0], rtol=1e-6)
