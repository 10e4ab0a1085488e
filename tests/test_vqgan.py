"""The VQGAN family: which losses move which weights, disc_start, the adaptive weight against a
direct computation, the GAN and LeCam terms against their formulas, taming's discriminator
shapes, MaskGIT's trunk shapes, validation, and a short run through vaelab's step."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import set_overrides
from vaelab import config_base
from vaelab.errors import ConfigError
from vaelab.losses import reconstruction
from vaelab.losses import vqgan as gl
from vaelab.losses import vqvae as vq_losses
from vaelab.models import vqgan, vqgan_trunk
from vaelab.models.patch_discriminator import PatchDiscriminator, output_side
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DISC = vqgan.DISCRIMINATOR


def tiny(npz_pair, **overrides):
  """8x8 images, one stride-2 convolution to 4x4 latents, a one-layer discriminator (2x2
  patches), a codebook learned by its loss (no EMA state in the way of direct gradients)."""
  c = config_base.base_config()
  vqgan.config_keys(c)
  c.data.name, (c.data.train_path, c.data.eval_path) = "npz", npz_pair
  c.batch_size, c.num_train_steps = 16, 4
  c.log_every, c.eval_every, c.checkpoint_every = 1, 10**6, 10**6
  c.model.conv_channels, c.model.num_res_blocks, c.model.res_channels = (8,), 0, 8
  c.model.num_codes, c.model.code_dim = 16, 4
  c.model.ema_decay, c.model.dead_code_steps = 0.0, 0
  c.model.likelihood = "bernoulli"
  c.model.disc_filters, c.model.disc_layers = 8, 1
  c.loss.disc_start = 2
  c.eval.batch_size, c.eval.num_pictures = 32, 4
  return set_overrides(c, overrides)


@pytest.fixture(scope="module")
def setup(npz_pair):
  """The model, its parameters, a batch and the loss's pieces, compiled once."""
  config = tiny(npz_pair)
  x = jnp.asarray(np.load(npz_pair[0])["image"][:16], jnp.float32) / 255.0

  class Info:
    image_shape = x.shape[1:]

  model = vqgan.make_model(config, Info)
  variables = model.init(jax.random.key(0), x[:1])
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  loss_fn = vqgan.make_loss(config, axis_name=None)
  base = {k: jnp.float32(v) for k, v in vqgan.hparams(config).items()}

  @jax.jit
  def pieces(params, step):
    hp = {**base, "step": step}

    def losses(p):
      return loss_fn(model, p, state, {"image": x}, None, hp)

    out, vjp, (metrics, new_state) = jax.vjp(losses, params, has_aux=True)
    grads = {g: vjp({k: jnp.float32(k == g) for k in out})[0] for g in out}
    return out, grads, metrics, new_state

  def logits_of(p):
    return model.apply({"params": p, **state}, x)

  def gen(p):
    fake = model.apply({"params": p, **state}, jax.nn.sigmoid(logits_of(p)[0]),
                       method="discriminate")
    return gl.generator_loss("hinge", fake)

  @jax.jit
  def direct(params):
    """The two losses' gradients w.r.t. the last kernel through the whole model."""
    def rec(p):
      return reconstruction.nll("bernoulli", logits_of(p)[0], x).mean()

    kernel = lambda g: g["head"]["conv"]["kernel"]
    return kernel(jax.grad(rec)(params)), kernel(jax.grad(gen)(params))

  @jax.jit
  def total(p, weight):
    """The gradient of the generator's whole objective, the adversarial weight as given."""
    def objective(p):
      logits, levels = logits_of(p)
      r, q = vq_losses.objective("bernoulli", logits, x, levels, base["commitment"], False)
      return r.mean() + q.mean() + weight * gen(p)
    return jax.grad(objective)(p)

  return config, model, params, pieces, direct, total, base


def _leaves(tree):
  return jax.tree.leaves(tree)


def _generator(tree):
  return {k: v for k, v in tree.items() if k != DISC}


def test_the_discriminators_loss_moves_no_generator_weight(setup):
  _, _, params, pieces, _, _, _ = setup
  _, grads, _, _ = pieces(params, jnp.int32(5))
  assert all(np.all(np.asarray(g) == 0) for g in _leaves(_generator(grads[DISC])))
  assert any(np.any(np.asarray(g) != 0) for g in _leaves(grads[DISC][DISC]))


def test_the_generators_adversarial_loss_moves_no_discriminator_weight(setup):
  _, _, params, pieces, _, _, _ = setup
  _, grads, metrics, _ = pieces(params, jnp.int32(5))
  assert float(metrics["gan_loss"]) != 0
  assert all(np.all(np.asarray(g) == 0) for g in _leaves(grads["model"][DISC]))


def test_the_adaptive_weight_is_the_ratio_of_the_direct_gradient_norms(setup):
  _, _, params, pieces, direct, total, base = setup
  _, grads, metrics, _ = pieces(params, jnp.int32(5))
  grad_rec, grad_gen = direct(params)
  expected = float(base["disc_weight"]) * min(
      float(jnp.linalg.norm(grad_rec.ravel()) / (jnp.linalg.norm(grad_gen.ravel()) + 1e-4)),
      1e4)
  assert float(metrics["adaptive_weight"]) == pytest.approx(expected, rel=1e-5)
  # The generator's gradient through the logits is the direct objective's, every weight.
  want = total(params, jnp.float32(metrics["adaptive_weight"]))
  for a, b in zip(_leaves(_generator(grads["model"])), _leaves(_generator(want))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_before_disc_start_there_is_no_adversarial_gradient(setup):
  _, _, params, pieces, _, total, _ = setup
  out, grads, _, new_state = pieces(params, jnp.int32(1))  # disc_start = 2
  assert float(out[DISC]) == 0
  assert all(np.all(np.asarray(g) == 0) for g in _leaves(grads[DISC]))
  want = total(params, jnp.float32(0))
  for a, b in zip(_leaves(_generator(grads["model"])), _leaves(_generator(want))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  # The LeCam EMAs wait too.
  assert float(new_state[vqgan.LECAM]["real"]) == 0


def test_gan_losses_on_known_logits():
  real = jnp.array([2.0, 0.5, -1.0])
  fake = jnp.array([-2.0, 0.5, 1.0])
  assert float(gl.discriminator_loss("hinge", real, fake)) == pytest.approx(
      0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1.5 + 2) / 3))
  assert float(gl.generator_loss("hinge", fake)) == pytest.approx(1 / 6)
  sp = lambda v: math.log1p(math.exp(v))
  assert float(gl.discriminator_loss("non_saturating", real, fake)) == pytest.approx(
      0.5 * (sum(sp(-r) for r in (2, 0.5, -1)) / 3 + sum(sp(f) for f in (-2, 0.5, 1)) / 3),
      rel=1e-6)
  assert float(gl.generator_loss("non_saturating", fake)) == pytest.approx(
      sum(sp(-f) for f in (-2, 0.5, 1)) / 3, rel=1e-6)
  assert float(gl.adaptive_weight(jnp.array([3.0, 4.0]), jnp.zeros(2), 0.5)) == pytest.approx(
      0.5 * 1e4)


def test_lecam_against_its_formula():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(4, 3, 3, 1)), rng.normal(size=(4, 3, 3, 1))
  ema_real, ema_fake = 0.3, -0.2
  want = (np.mean(np.maximum(real - ema_fake, 0) ** 2)
          + np.mean(np.maximum(ema_real - fake, 0) ** 2))
  got = gl.lecam_regularizer(jnp.asarray(real), jnp.asarray(fake), ema_real, ema_fake)
  assert float(got) == pytest.approx(want, rel=1e-6)
  assert float(gl.lecam_ema(1.0, 3.0, 0.99)) == pytest.approx(1.02)


def test_the_discriminator_is_tamings_nlayer_discriminator():
  d = PatchDiscriminator(64, 3)
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  variables = jax.eval_shape(d.init, jax.random.key(0), x)
  shapes = {"/".join(str(getattr(k, "key", k)) for k in path): v.shape
            for path, v in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
  assert shapes == {
      "conv0/kernel": (4, 4, 3, 64), "conv0/bias": (64,),
      "conv1/kernel": (4, 4, 64, 128), "norm1/scale": (128,), "norm1/bias": (128,),
      "conv2/kernel": (4, 4, 128, 256), "norm2/scale": (256,), "norm2/bias": (256,),
      "conv3/kernel": (4, 4, 256, 512), "norm3/scale": (512,), "norm3/bias": (512,),
      "logits/kernel": (4, 4, 512, 1), "logits/bias": (1,)}
  assert jax.eval_shape(d.apply, variables, x).shape == (2, 30, 30, 1)
  assert output_side(256, 3) == 30


def test_maskgit_trunk_shapes():
  spec = vqgan_trunk.MaskGITSpec(128, (1, 1, 2, 2, 4), 2)
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  enc = vqgan_trunk.Encoder(spec, 256)
  z = jax.eval_shape(lambda v, x: enc.apply(v, x), jax.eval_shape(enc.init, jax.random.key(0),
                                                                  x), x)
  assert z.shape == (1, 16, 16, 256)
  dec = vqgan_trunk.Decoder(spec)
  h = jax.eval_shape(lambda v, z: dec.apply(v, z), jax.eval_shape(dec.init, jax.random.key(0),
                                                                  z), z)
  assert h.shape == (1, 256, 256, 128)


def test_validation_names_the_key(npz_pair, tmp_path):
  c = tiny(npz_pair)
  vqgan.validate(c)
  missing = str(tmp_path / "missing.npz")
  with pytest.raises(ConfigError, match="loss.lpips_weights"):
    vqgan.validate(tiny(npz_pair, **{"loss.perceptual": "lpips",
                                     "loss.lpips_weights": missing}))
  bad = tmp_path / "bad.npz"
  np.savez(bad, wrong=np.zeros(3))
  with pytest.raises(ConfigError, match="loss.lpips_weights"):
    vqgan.validate(tiny(npz_pair, **{"loss.perceptual": "lpips", "loss.lpips_weights": str(bad)}))
  for key, value in (("loss.gan", "wgan"), ("model.trunk", "vit"), ("loss.perceptual", "vgg"),
                     ("loss.lecam_decay", 1.0), ("loss.disc_weight", -1.0),
                     ("loss.disc_start", -3), ("model.disc_layers", 0),
                     ("model.channel_multipliers", ())):
    overrides = {key: value}
    if key == "model.channel_multipliers":
      overrides["model.trunk"] = "maskgit"
    with pytest.raises(ConfigError, match=key):
      vqgan.validate(tiny(npz_pair, **overrides))
  with pytest.raises(ConfigError, match="model.disc_layers"):
    vqgan.check_image_shape(tiny(npz_pair, **{"model.disc_layers": 3}), (8, 8, 1))
  with pytest.raises(ValueError, match="quantizer"):
    config_base.load_config("configs/vqgan_mnist.py:quantizer=nope")
  assert config_base.load_config("configs/vqgan_mnist.py:adversarial=False").loss.gan == "none"


def test_a_run_through_the_step_starts_the_discriminator_at_disc_start(npz_pair, tmp_path):
  # probe-FID's classifier: a few steps, in this test's own cache.
  config = tiny(npz_pair, **{"loss.lecam_weight": 0.1, "eval.probe_fid_steps": 10,
                             "eval.probe_fid_cache": str(tmp_path / "probe_fid")})
  exp, state, results, history = loop.train(config, None, evaluate=True)
  logged = [h for h in history if "train/loss" in h]
  assert [h["step"] for h in logged] == [1, 2, 3, 4]
  # Steps 0 and 1 come before disc_start = 2.
  assert [h["train/discriminator_grad_norm"] > 0 for h in logged] == [False, False, True, True]
  for name in ("disc_loss", "disc_real", "disc_fake", "adaptive_weight", "gan_loss", "lecam",
               "discriminator_loss", "discriminator_learning_rate", "perplexity"):
    assert all(np.isfinite(h[f"train/{name}"]) for h in logged), name
  assert float(state.model_state[vqgan.LECAM]["real"]) != 0
  assert {"eval/recon_sse", "eval/perplexity", "eval/codebook_usage", "eval/psnr", "eval/ssim",
          "eval/probe_fid"} <= set(results)
  assert "eval/rfid" not in results  # no Inception weights given
