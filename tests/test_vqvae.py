"""Vector quantizer and the VQ-VAE / VQ-VAE-2 families: nearest codes, straight-through
gradient, the EMA update against its formula, dead-code restarts, k-means
initialisation, the objective, refused values, the same codebook on 1 and 4 devices, and a
short run that learns.

Also runnable as a script (so XLA_FLAGS can set the device count of a fresh process):
  python tests/test_vqvae.py TRAIN.npz EVAL.npz NUM_STEPS
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, vq_config, xla_flags
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import vqvae as vq_losses
from vaelab.losses import reconstruction
from vaelab.models import quantizer, vqvae, vqvae2
from vaelab.training import loop
from vaelab.training import experiment as experiment_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _keys(n, seed=0):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


# --- the quantizer's pieces -------------------------------------------------------------

def test_nearest_code_is_the_brute_force_argmin_without_an_n_k_d_tensor():
  rng = np.random.default_rng(0)
  n, k, d = 200, 37, 5
  z = rng.normal(size=(n, d)).astype(np.float32)
  codebook = rng.normal(size=(k, d)).astype(np.float32)
  brute = np.argmin(((z[:, None, :].astype(np.float64) - codebook[None]) ** 2).sum(-1), 1)
  got = np.asarray(quantizer.nearest_codes(jnp.asarray(z), jnp.asarray(codebook)))
  np.testing.assert_array_equal(got, brute)
  # Codes that are rows of z are their own nearest codes.
  np.testing.assert_array_equal(quantizer.nearest_codes(jnp.asarray(z[:k]), jnp.asarray(z[:k])),
                                np.arange(k))
  jaxpr = jax.make_jaxpr(quantizer.nearest_codes)(z, codebook).jaxpr
  shapes = {tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars}
  assert (n, k) in shapes and (n, k, d) not in shapes, shapes


def test_straight_through_passes_the_gradient_at_z_q_to_z_e():
  rng = np.random.default_rng(1)
  z_e, z_q, w = (jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for _ in range(3))
  f = lambda u: jnp.sum(jnp.sin(u) * w)
  out = quantizer.straight_through(z_e, z_q)
  np.testing.assert_allclose(out, z_q, atol=1e-6)  # the forward value is the code
  grad = jax.grad(lambda e: f(quantizer.straight_through(e, z_q)))(z_e)
  np.testing.assert_allclose(grad, jax.grad(f)(z_q), rtol=1e-6, atol=1e-7)
  assert not np.allclose(grad, jax.grad(f)(z_e), atol=1e-3)  # not the gradient at z_e
  # No gradient reaches the codes through the decoder input.
  assert float(jnp.abs(jax.grad(lambda q: f(quantizer.straight_through(z_e, q)))(z_q)).max()) == 0


# Hand-made EMA state: 4 codes in 2-d; the last one is used by no input.
E0 = np.array([[0, 0], [1, 0], [0, 1], [5, 5]], np.float64)
N0 = np.array([2.0, 1.0, 0.5, 0.1])
M0 = np.array([[0.2, 0.2], [1.0, 0.0], [0.0, 0.5], [0.5, 0.5]])
Z = np.array([[0.1, 0.0], [0.9, 0.1], [1.2, -0.1], [0.0, 0.8], [0.05, 0.1]])


def _vq_state(module, e=E0, n=N0, m=M0, **extra):
  v = module.init(jax.random.key(0), jnp.asarray(Z, jnp.float32))
  state = {"codebook": jnp.asarray(e, jnp.float32), "cluster_size": jnp.asarray(n, jnp.float32),
           "embed_sum": jnp.asarray(m, jnp.float32)}
  state.update(extra)
  assert set(state) == set(v["vq"])
  return {"vq": state}


def _formula(n0, m0, counts, sums, decay, eps):
  n = decay * n0 + (1 - decay) * counts
  m = decay * m0 + (1 - decay) * sums
  total = n.sum()
  smoothed = (n + eps) / (total + len(n) * eps) * total
  return n, m, m / smoothed[:, None]


def test_ema_update_equals_the_formula_on_hand_made_inputs():
  decay, eps = 0.9, 1e-3
  vq = quantizer.VectorQuantizer(4, 2, ema_decay=decay, epsilon=eps)
  variables = _vq_state(vq)
  out, new = vq.apply(variables, jnp.asarray(Z, jnp.float32), mutable=["vq"])
  # Nearest codes: 0, 1, 1, 2, 0; the quantization uses the codebook before the update.
  np.testing.assert_array_equal(out["indices"], [0, 1, 1, 2, 0])
  np.testing.assert_allclose(out["z_q"], E0[[0, 1, 1, 2, 0]], atol=1e-7)
  counts = np.array([2.0, 2.0, 1.0, 0.0])
  sums = np.array([[0.15, 0.1], [2.1, 0.0], [0.0, 0.8], [0.0, 0.0]])
  np.testing.assert_allclose(out["counts"], counts)
  n, m, e = _formula(N0, M0, counts, sums, decay, eps)
  got = new["vq"]
  np.testing.assert_allclose(got["cluster_size"], n, atol=1e-6)
  np.testing.assert_allclose(got["embed_sum"], m, atol=1e-6)
  np.testing.assert_allclose(got["codebook"], e, atol=1e-6)
  # The same pure function, and a second step from the first one's state.
  np.testing.assert_allclose(quantizer.ema_update(N0, M0, counts, sums, decay, eps)[2], e,
                             atol=1e-6)
  out2, new2 = vq.apply(new, jnp.asarray(Z, jnp.float32), mutable=["vq"])
  counts2 = np.asarray(out2["counts"], np.float64)
  onehot = np.eye(4)[np.asarray(out2["indices"])]
  n2, m2, e2 = _formula(n, m, counts2, onehot.T @ Z, decay, eps)
  np.testing.assert_allclose(new2["vq"]["codebook"], e2, atol=1e-6)
  # Without a mutable collection (evaluation) nothing is updated.
  out3 = vq.apply(variables, jnp.asarray(Z, jnp.float32))
  np.testing.assert_array_equal(out3["indices"], out["indices"])


def test_unused_codes_restart_at_encoder_outputs_after_dead_code_steps():
  decay, eps = 0.9, 1e-3
  vq = quantizer.VectorQuantizer(4, 2, ema_decay=decay, epsilon=eps, dead_code_steps=2)
  variables = _vq_state(vq, unused_steps=jnp.zeros((4,), jnp.int32))
  z, keys = jnp.asarray(Z, jnp.float32), _keys(len(Z))
  _, first = vq.apply(variables, z, keys, mutable=["vq"])
  np.testing.assert_array_equal(first["vq"]["unused_steps"], [0, 0, 0, 1])
  np.testing.assert_allclose(first["vq"]["codebook"][3], _formula(
      N0, M0, np.array([2.0, 2, 1, 0]), np.zeros((4, 2)), decay, eps)[2][3], atol=1e-6)
  _, second = vq.apply(first, z, keys, mutable=["vq"])
  s = second["vq"]
  restarted = np.asarray(s["codebook"][3])
  assert np.any(np.all(np.isclose(Z, restarted, atol=1e-7), axis=1)), restarted
  np.testing.assert_allclose(s["embed_sum"][3], restarted)
  assert float(s["cluster_size"][3]) == 1.0 and int(s["unused_steps"][3]) == 0
  # Codes in use are not touched by the restart.
  assert int(s["unused_steps"][0]) == 0
  assert not np.allclose(s["codebook"][0], restarted)


def test_kmeans_initialisation_puts_the_codes_at_the_cluster_means_once():
  rng = np.random.default_rng(0)
  left = rng.normal([-3.0, 0.0], 0.3, (20, 2))
  right = rng.normal([3.0, 1.0], 0.3, (20, 2))
  z = jnp.asarray(np.concatenate([left, right]), jnp.float32)
  vq = quantizer.VectorQuantizer(2, 2, ema_decay=0.99, kmeans_init=True)
  variables = vq.init(jax.random.key(0), z)
  assert int(variables["vq"]["initialized"]) == 0
  out, new = vq.apply(variables, z, _keys(40), mutable=["vq"])
  means = np.stack([left.mean(0), right.mean(0)])
  order = np.argsort(np.asarray(out["z_q"])[[0, 20], 0])  # which code took which cluster
  used = np.asarray(out["z_q"])[[0, 20]][order]
  np.testing.assert_allclose(used, means, atol=1e-5)
  assert len(set(np.asarray(out["indices"][:20]))) == 1
  assert set(np.asarray(out["indices"][:20])) != set(np.asarray(out["indices"][20:]))
  assert int(new["vq"]["initialized"]) == 1
  # Later steps keep the codebook they are given: k-means ran once.
  moved = {**new["vq"], "codebook": new["vq"]["codebook"] + 10.0}
  out2, _ = vq.apply({"vq": moved}, z, _keys(40), mutable=["vq"])
  np.testing.assert_allclose(out2["z_q"][0], moved["codebook"][out2["indices"][0]])


# --- the families -----------------------------------------------------------------------

_BUILT = {}


def _model(config, shape=(8, 8, 1)):
  """(family, model, variables, x, keys), built once per family and codebook kind.

  Compiling is most of these tests' time. Eager on purpose: eager ops are compiled once per
  shape and shared by every model here, where a jitted init or apply compiles each model's
  whole program again. The init key is an "rbg" key: Flax compiles one initializer per
  parameter shape, and threefry's take far longer to compile."""
  from vaelab.data.base import SourceInfo
  family = validation.validate(config, num_devices=1)
  key = (config.model.name, float(config.model.ema_decay) > 0)
  if key not in _BUILT:
    model = family.make_model(config, SourceInfo(shape))
    x = jax.random.uniform(jax.random.key(1), (6, *shape))
    variables = model.init(jax.random.key(0, impl="rbg"), x, _keys(6))
    _BUILT[key] = (model, variables, x, _keys(6))
  return (family, *_BUILT[key])


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_objective_is_recon_plus_codebook_and_weighted_commitment(npz_pair, ema_decay):
  config = vq_config(*npz_pair, **{"model.ema_decay": ema_decay, "loss.commitment": 0.5})
  family, model, variables, x, keys = _model(config)
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  assert ("vq" in state) == (ema_decay > 0)
  assert ("codebook" in params.get("vq", {})) == (ema_decay == 0)
  hp = {k: jnp.asarray(v) for k, v in family.hparams(config).items()}
  loss_fn = lambda p, s: family.make_loss(config, axis_name=None)(
      model, p, s, {"image": x}, keys, hp)
  value, (metrics, new_state) = loss_fn(params, state)
  logits, (q,) = model.apply(variables, x, keys)
  recon = reconstruction.nll("bernoulli", logits, x)
  commit = vq_losses.commitment_loss(q["z_e"], q["z_q"])
  quant = 0.5 * commit + (vq_losses.codebook_loss(q["z_e"], q["z_q"]) if not ema_decay else 0)
  np.testing.assert_allclose(value, (recon + quant).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["commitment"], commit.mean(), rtol=1e-5)
  assert 1 <= float(metrics["perplexity"]) <= 16
  if ema_decay:  # the EMA state comes back updated; the codebook is no parameter
    assert not np.allclose(new_state["vq"]["vq"]["codebook"], state["vq"]["vq"]["codebook"])
  else:  # the codebook loss moves the codes; through the decoder no gradient reaches them
    with_codebook = lambda c: {**params, "vq": {"codebook": c}}
    grad = jax.grad(lambda c: loss_fn(with_codebook(c), state)[0])(params["vq"]["codebook"])
    expected = jax.grad(lambda c: vq_losses.codebook_loss(
        q["z_e"], jnp.take(c, q["indices"], axis=0)).mean())(params["vq"]["codebook"])
    assert float(jnp.abs(grad).max()) > 0
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family_name, shapes", [("vqvae", [(4, 4)]),
                                                 ("vqvae2", [(2, 2), (4, 4)])])
def test_indices_round_trip_through_decode_indices(npz_pair, family_name, shapes):
  """What the prior relies on: encode_indices gives maps of codes < K, and decoding them
  gives the model's reconstruction."""
  config = vq_config(*npz_pair, family=family_name)
  family, model, variables, x, _ = _model(config)
  apply = lambda method: lambda v, *a: model.apply(v, *a, method=method)
  idx = apply("encode_indices")(variables, x)
  idx = idx if isinstance(idx, tuple) else (idx,)
  assert [i.shape[1:] for i in idx] == shapes
  helper = {"vqvae": vqvae, "vqvae2": vqvae2}[family_name].latent_shapes
  assert [tuple(s) for s in helper(model)] == shapes
  assert all(i.dtype == jnp.int32 and int(i.min()) >= 0 and int(i.max()) < 16 for i in idx)
  images = apply("decode_indices")(variables, *idx)
  np.testing.assert_allclose(images, apply("reconstruct")(variables, x), atol=1e-6)
  assert images.shape == x.shape


@pytest.mark.parametrize("overrides, match", [
    ({"model.num_codes": 0}, r"model\.num_codes=0"),
    ({"model.code_dim": 0}, r"model\.code_dim=0"),
    ({"model.ema_decay": 1.0}, r"model\.ema_decay=1\.0"),
    ({"model.ema_decay": -0.1}, r"model\.ema_decay=-0\.1"),
    ({"loss.commitment": -0.25}, r"loss\.commitment=-0\.25"),
    ({"model.dead_code_steps": -1}, r"model\.dead_code_steps=-1"),
    ({"model.ema_decay": 0.0, "model.dead_code_steps": 5}, r"model\.dead_code_steps=5"),
    ({"model.ema_decay": 0.0, "model.kmeans_init": True}, r"model\.kmeans_init"),
    ({"model.likelihood": "l1"}, r"model\.likelihood='l1'"),
    ({"model.encoder": "mlp"}, r"model\.encoder='mlp'"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, overrides, match):
  with pytest.raises(ConfigError, match=match):
    validation.validate(vq_config(*npz_pair, **overrides), num_devices=1)


def test_vqvae2_needs_an_even_bottom_map(npz_pair):
  config = vq_config(*npz_pair, family="vqvae2", **{"model.conv_channels": (8, 8, 8)})
  with pytest.raises(ConfigError, match="multiples of 16"):
    experiment_lib.build(config)


# --- the train step on 1 and 4 devices, and a run -----------------------------------------

def _device_runs(train, evalp, steps):
  """Codebook state after `steps` shared SPMD steps on a mesh of one device and on a mesh of
  all of them, from the same initial state. EMA, restarts after 1 unused step and k-means on
  the first batch, so that every cross-device path runs. Both meshes live in one process
  (started with 4 host devices) so that the model is built once."""
  from vaelab import spmd
  from vaelab.training import step as step_lib
  from vaelab.training.state import TrainState
  config = vq_config(train, evalp, **{"model.dead_code_steps": 1, "model.kmeans_init": True})
  exp = experiment_lib.build(config)
  # Any initial state shared by both meshes will do: an "rbg" init key compiles in a
  # fraction of the time of exp.init_state()'s threefry one (see _model).
  x = jnp.zeros((1, 8, 8, 1), jnp.float32)
  variables = exp.model.init(jax.random.key(0, impl="rbg"), x, _keys(1))
  initial = jax.device_get(TrainState.create(variables, exp.tx, int(config.seed)))
  out = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = spmd.make_mesh(devices)
    train_step = step_lib.make_train_step(exp.family.make_loss(config), exp.model, exp.tx, mesh,
                                          config.data.binarize)
    state = spmd.replicate(mesh, initial)
    batcher, losses = exp.batcher(), []
    for s in range(steps):
      state, metrics = train_step(state, spmd.shard_batch(mesh, batcher.batch(s)),
                                  spmd.replicate(mesh, exp.hparams))
      losses.append(float(metrics["loss"]))
    vq = state.model_state["vq"]["vq"]
    # Every device's own buffer, not the (replicated) global view of one of them.
    spread = max(float(np.abs(np.asarray(s.data) - np.asarray(leaf.addressable_shards[0].data))
                       .max()) for leaf in jax.tree.leaves(vq) for s in leaf.addressable_shards)
    out[len(devices)] = {"losses": losses, "spread": spread,
                         "shards": len(jax.tree.leaves(vq)[0].addressable_shards),
                         **{k: np.asarray(v).tolist() for k, v in jax.device_get(vq).items()}}
  return out


def test_codebook_is_identical_on_every_device_and_equal_to_the_one_device_run(npz_pair):
  env = dict(os.environ, XLA_FLAGS=xla_flags(4),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *npz_pair, "3"], env=env,
                        capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = json.loads(proc.stdout.strip().splitlines()[-1])
  one, four = runs["1"], runs["4"]
  assert (one["shards"], four["shards"]) == (1, 4)
  assert four["spread"] == 0.0  # bitwise the same codebook on the four devices
  assert one["initialized"] == four["initialized"] == 1
  for key in ("codebook", "cluster_size", "embed_sum"):
    np.testing.assert_allclose(four[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
  np.testing.assert_array_equal(four["unused_steps"], one["unused_steps"])
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
  assert len(one["losses"]) == 3


def test_a_short_run_reconstructs_well_and_uses_many_codes(npz_pair, tmp_path):
  config = vq_config(*npz_pair, num_train_steps=80, log_every=10, eval_every=80,
                     checkpoint_every=80, **{"model.dead_code_steps": 10,
                                             "model.num_res_blocks": 1,
                                             "optimizer.learning_rate": 3e-3})
  workdir = str(tmp_path / "run")
  results = loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  first = next(m for m in logged if "train/recon_sse" in m)
  assert first["step"] == 10
  for key in ("eval/recon_sse", "eval/perplexity", "eval/codebook_usage", "eval/commitment",
              "eval/image_perplexity", "eval/pca_recon_sse", "eval/pca_components"):
    assert key in results, key
  assert results["eval/pca_components"] == 16.0
  assert "train/perplexity" in first and "train/codebook_usage" in first
  assert results["eval/recon_sse"] < 0.3 * first["train/recon_sse"], (results, first)
  assert results["eval/perplexity"] > 2.0 and results["eval/codebook_usage"] > 0.25, results
  assert os.path.exists(os.path.join(workdir, "reconstructions.png"))


if __name__ == "__main__":
  train, evalp, steps = sys.argv[1:4]
  print(json.dumps(_device_runs(train, evalp, int(steps))))
