"""SimVQ (models/simvq.py): a frozen random codebook C times a learned map W."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import vq_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import reconstruction
from vaelab.losses import vqvae as vq_losses
from vaelab.models import simvq, vqvae
from vaelab.models.quantizer import COLLECTION
from vaelab.models.quantizer_spec import QuantizerSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_codes_are_c_times_w_and_the_lookup_is_the_nearest():
  module = simvq.SimVectorQuantizer(32, 4)
  z = jax.random.normal(jax.random.key(1), (3, 5, 4))

  def f(z):
    v = module.init(jax.random.key(0), z)
    out = module.apply(v, z)
    return v, out, module.apply(v, out["indices"], method="lookup")

  v, out, looked_up = jax.jit(f)(z)
  # C is state, not a parameter: the optimizer never sees it.
  assert set(v["params"]) == {"linear"} and set(v[COLLECTION]) == {"frozen_codebook"}
  c, w = v[COLLECTION]["frozen_codebook"], v["params"]["linear"]
  assert c.shape == (32, 4) and w.shape == (4, 4)
  codes = np.asarray(c, np.float64) @ np.asarray(w, np.float64)
  brute = np.argmin(((np.asarray(z, np.float64)[..., None, :] - codes) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(out["indices"], brute)
  np.testing.assert_allclose(out["z_q"], codes[brute], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(looked_up, out["z_q"], rtol=1e-6)
  np.testing.assert_array_equal(out["counts"], np.bincount(brute.ravel(), minlength=32))
  # A different init key draws a different C.
  v2 = jax.jit(module.init)(jax.random.key(5), z)
  assert not np.allclose(v2[COLLECTION]["frozen_codebook"], c)
  # Straight-through: the decoder's gradient reaches z unchanged.
  wts = jax.random.normal(jax.random.key(2), z.shape)
  g = jax.grad(lambda z_: jnp.sum(wts * module.apply(v, z_)["quantized"]))(z)
  np.testing.assert_allclose(g, wts, rtol=1e-6)


_BUILT = {}


def _model(npz_pair):
  from vaelab import spmd
  from vaelab.data.base import SourceInfo
  config = vq_config(*npz_pair)
  vqvae.apply_preset(config, "simvq")
  config.loss.commitment = 0.5
  fam = validation.validate(config, num_devices=1)
  if "m" not in _BUILT:
    model = fam.make_model(config, SourceInfo((8, 8, 1)))
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
    _BUILT["m"] = (model, spmd.init(model, jax.random.key(0, impl="rbg"), x), x)
  return (fam, config, *_BUILT["m"])


def test_w_gets_exactly_the_codebook_losss_gradient(npz_pair):
  fam, config, model, variables, x = _model(npz_pair)
  spec = QuantizerSpec.from_config(config.model)
  assert spec.codebook_loss and not spec.ema and not spec.entropy
  loss_fn = fam.make_loss(config, axis_name=None)
  hp = {k: jnp.asarray(v) for k, v in fam.hparams(config).items()}
  state = {k: v for k, v in variables.items() if k != "params"}

  def f(params):
    (value, (metrics, new_state)), g = jax.value_and_grad(
        lambda p: loss_fn(model, p, state, {"image": x}, None, hp), has_aux=True)(params)
    logits, (q,) = model.apply({**variables, "params": params}, x)
    z_e = jax.lax.stop_gradient(q["z_e"])
    idx = q["indices"]
    frozen = state[COLLECTION]["vq"]["frozen_codebook"]

    def codebook_term(w):  # the codebook loss alone, as a function of W
      codes = jnp.dot(frozen, w, precision=jax.lax.Precision.HIGHEST)
      return vq_losses.codebook_loss(z_e, jnp.take(codes, idx, axis=0)).mean()

    direct = jax.grad(codebook_term)(params["vq"]["linear"])
    return value, metrics, new_state, g, direct, logits, q

  value, metrics, new_state, g, direct, logits, q = jax.jit(f)(variables["params"])
  np.testing.assert_allclose(g["vq"]["linear"], direct, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(direct).max()) > 0
  recon = reconstruction.nll("bernoulli", logits, x)
  quant = 1.5 * vq_losses.commitment_loss(q["z_e"], q["z_q"])  # codebook + 0.5 commitment
  np.testing.assert_allclose(value, (recon + quant).mean(), rtol=1e-5)
  # The loss leaves C as it was.
  np.testing.assert_array_equal(new_state[COLLECTION]["vq"]["frozen_codebook"],
                                state[COLLECTION]["vq"]["frozen_codebook"])
  np.testing.assert_allclose(metrics["codebook_usage"], np.mean(np.asarray(q["counts"]) > 0))
  assert "entropy_per_sample" not in metrics


def test_training_leaves_c_unchanged_and_moves_w(npz_pair, tmp_path):
  from vaelab.training import experiment, loop, workdir
  config = vq_config(*npz_pair, **{"num_train_steps": 12, "log_every": 6,
                                   "eval_every": 12, "checkpoint_every": 12})
  vqvae.apply_preset(config, "simvq")
  config.optimizer.learning_rate = 3e-3
  start = experiment.build(config).init_state()
  results = loop.train_and_evaluate(config, str(tmp_path))
  exp = experiment.build(config)
  end = workdir.restore_latest(exp, str(tmp_path))
  assert int(end.step) == 12
  np.testing.assert_array_equal(end.model_state[COLLECTION]["vq"]["frozen_codebook"],
                                start.model_state[COLLECTION]["vq"]["frozen_codebook"])
  assert not np.allclose(end.params["vq"]["linear"], start.params["vq"]["linear"])
  assert 0 < results["eval/codebook_usage"] <= 1
  with open(tmp_path / "metrics.jsonl") as f:
    import json
    losses = [json.loads(line)["train/loss"] for line in f if "train/loss" in line]
  assert losses[-1] < losses[0]


def test_validation_names_the_key(npz_pair):
  for key, value, match in (("codebook_norm", "l2", "model.codebook_norm"),
                            ("codebook_dim", 4, "model.codebook_dim"),
                            ("dead_code_steps", 5, "model.dead_code_steps"),
                            ("kmeans_init", True, "model.kmeans_init")):
    config = vq_config(*npz_pair)
    vqvae.apply_preset(config, "simvq")
    config.model[key] = value
    with pytest.raises(ConfigError, match=match):
      validation.validate(config, num_devices=1)
  # Not a power of 2 is fine: the codebook is explicit.
  config = vq_config(*npz_pair, **{"model.num_codes": 24})
  vqvae.apply_preset(config, "simvq")
  validation.validate(config, num_devices=1)
