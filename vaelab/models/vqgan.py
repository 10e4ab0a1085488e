"""VQGAN (Esser et al. 2021): a VQ-VAE trained with a patch discriminator and a perceptual loss,
the image tokenizer of MaskGIT, MAGVIT-v2 and LlamaGen.

encoder -> quantizer -> decoder as in models/vqvae.py (any `model.quantizer`, its presets,
its objective, evaluation metrics and code-map methods are VQ-VAE's), plus a patch
discriminator (models/patch_discriminator.py) that is a parameter group of its own
(`Family.groups`: trained by `discriminator_optimizer.*`, taming's Adam b1 0.5, b2 0.9).

Trunks (`model.trunk`): "vq", vaelab's VQ-VAE trunk (models/vq_trunk.py; MNIST-sized), and
"maskgit", MaskGIT's VQGAN encoder and decoder (models/vqgan_trunk.py). Either way the
decoder's last layer is a module of its own (`head`), the layer whose kernel VQGAN's
adaptive weight differentiates against.

Objective (losses/vqgan.py): the VQ-VAE's reconstruction and quantization terms, an
optional LPIPS term (`loss.perceptual`, losses/lpips.py), and from `loss.disc_start` on the
adversarial term (`loss.gan`: hinge | non_saturating | none) with the adaptive weight
times `loss.disc_weight`. The discriminator learns on the same batch, from the same
forward pass; optional LeCam regularisation keeps EMAs of its mean outputs in the "lecam"
collection, updated by the step from global-batch means.

How the step's one forward pass serves both groups: the discriminator sees the
reconstruction with its gradient stopped, and the generator's adversarial gradient is
taken inside the objective as the discriminator's input gradient at that same call; it
and the reconstruction's gradient reach the decoder through its logits
(`vqgan_losses.with_gradient`). So the discriminator runs once on real and once on
reconstructed images per step (as in taming, each call normalised by its own batch), and
the adaptive weight's two gradients with respect to the last kernel are those logit
gradients pulled back through the last layer alone, averaged over the global batch.

Logged: train/disc_loss, train/disc_real, train/disc_fake (mean logits), train/gan_loss,
train/adaptive_weight, train/lecam, the VQ metrics, and the group's
train/discriminator_loss, _grad_norm, _learning_rate.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vaelab import checks, config_base, spmd
from vaelab.errors import ConfigError
from vaelab.evaluate import image_quality
from vaelab.losses import reconstruction
from vaelab.losses import vqgan as gan_losses
from vaelab.losses import vqvae as vq_losses
from vaelab.models import nets, vq_metrics, vqvae
from vaelab.models import vq_trunk, vqgan_trunk
from vaelab.models.base import Family, method
from vaelab.models.patch_discriminator import PatchDiscriminator, output_side
from vaelab.models.quantizer import COLLECTION
from vaelab.models.quantizer_spec import OPTIONS as QUANTIZER_OPTIONS
from vaelab.models.quantizer_spec import QuantizerSpec

DISCRIMINATOR = "discriminator"  # the submodule, its parameter group and config section
LECAM = "lecam"  # the collection of the LeCam EMAs
TRUNKS = ("vq", "maskgit")
PERCEPTUAL = ("none", "lpips")


def config_keys(c) -> None:
  """VQ-VAE's keys under model.name "vqgan", the MaskGIT trunk's, the discriminator's, the
  adversarial objective's and the discriminator's optimizer section."""
  vqvae.config_keys(c, name="vqgan")
  c.model.trunk = "vq"  # vq (models/vq_trunk.py) | maskgit (models/vqgan_trunk.py)
  c.model.filters = 128  # maskgit: width of the first level
  c.model.channel_multipliers = (1, 1, 2, 2, 4)  # maskgit: widths per level; 2x between
  c.model.disc_filters = 64
  c.model.disc_layers = 3
  c.loss.gan = "hinge"  # hinge | non_saturating | none
  c.loss.disc_start = 0  # step from which the adversarial terms act
  c.loss.disc_weight = 0.8  # times the adaptive weight
  c.loss.lecam_weight = 0.0  # 0: no LeCam regularisation
  c.loss.lecam_decay = 0.99
  c.loss.perceptual = "none"  # none | lpips (losses/lpips.py)
  c.loss.perceptual_weight = 1.0
  c.loss.lpips_weights = ""  # the LPIPS-VGG16 .npz (experiments/convert_lpips_weights.py)
  c[f"{DISCRIMINATOR}_optimizer"] = config_base.optimizer_section(
      learning_rate=1e-4, b1=0.5, b2=0.9)
  image_quality.config_keys(c)  # eval/psnr, eval/ssim, eval/probe_fid, eval/rfid


# Config variants (`configs/vqgan_mnist.py:quantizer=fsq,adversarial=False`).
def apply_variant(c, quantizer: str, adversarial: bool) -> None:
  """The quantizer preset of vqvae.apply_preset and, without `adversarial`, loss.gan none."""
  vqvae.apply_preset(c, quantizer)
  if not adversarial:
    c.loss.gan = "none"


class VQGAN(vqvae.VQVAE):
  """VQ-VAE's module with a separate last decoder layer and the discriminator. `spec` is a
  vq_trunk.ConvSpec ("vq") or a vqgan_trunk.MaskGITSpec ("maskgit")."""
  trunk: str = "vq"
  disc_filters: int = 64
  disc_layers: int = 3

  def setup(self):
    channels = self.image_shape[-1]
    if self.trunk == "vq":
      self.encoder = vq_trunk.Encoder(self.spec)
      self.pre_vq = self.spec.conv(self.quantizer.code_dim, (1, 1))
      self.decoder = _VQBody(self.spec)
      self.head = nets.Upsample(channels, nets.compute_dtype(self.spec.dtype))
    else:
      self.encoder = vqgan_trunk.Encoder(self.spec, self.quantizer.code_dim)
      self.decoder = vqgan_trunk.Decoder(self.spec)
      self.head = vqgan_trunk.head(channels)
    self.vq = self.quantizer.module(self.axis_name)
    self.discriminator = PatchDiscriminator(self.disc_filters, self.disc_layers)

  def encode(self, x):
    if self.trunk == "vq":
      return self.pre_vq(self.encoder(x)).astype(jnp.float32)
    return self.encoder(x)

  def apply_head(self, h):
    """The decoder's last layer: features -> logits, float32."""
    return self.head(h).astype(jnp.float32)

  def forward(self, x, keys=None):
    """(logits, (quantizer output,), the features the last layer reads)."""
    q = self.vq(self.encode(x), keys)
    h = self.decoder(q["quantized"])
    return self.apply_head(h), (q,), h

  def __call__(self, x, keys=None):
    logits, levels, _ = self.forward(x, keys)
    if self.is_initializing():  # the discriminator and the LeCam EMAs, made with the model
      self.discriminator(jax.nn.sigmoid(logits))
      for name in ("real", "fake"):
        self.put_variable(LECAM, name, jnp.zeros((), jnp.float32))
    return logits, levels

  def decode_indices(self, indices):
    return jax.nn.sigmoid(self.apply_head(self.decoder(self.vq.lookup(indices))))

  def discriminate(self, images):
    """Patch logits (B, H', W', 1) of images in [0, 1]."""
    return self.discriminator(images)


class _VQBody(nn.Module):
  """vq_trunk.Decoder up to its last upsampling layer (which is VQGAN.head)."""
  spec: vq_trunk.ConvSpec

  @nn.compact
  def __call__(self, z):
    act = nets.activation(self.spec.activation)
    x = self.spec.conv(self.spec.channels[-1], (3, 3), padding="SAME", name="conv")(z)
    x = vq_trunk.ResStack(self.spec, name="res")(x)
    for i, c in enumerate(reversed(self.spec.channels[:-1])):
      x = act(nets.Upsample(c, nets.compute_dtype(self.spec.dtype), name=f"up_{i}")(x))
    return x


def make_model(config, info):
  m = config.model
  if m.trunk == "vq":
    spec = vq_trunk.ConvSpec.from_config(m, vq_trunk.dtype_of(config))
  else:
    spec = vqgan_trunk.MaskGITSpec.from_config(m)
  return VQGAN(spec, QuantizerSpec.from_config(m), tuple(info.image_shape), trunk=m.trunk,
               disc_filters=int(m.disc_filters), disc_layers=int(m.disc_layers))


def latent_shapes(model) -> list[tuple[int, int]]:
  h, w, _ = model.image_shape
  f = 2**len(model.spec.channels) if model.trunk == "vq" else model.spec.downsampling
  return [(h // f, w // f)]


def _last_kernel(head_params):
  """The kernel of the head's (only) convolution."""
  (kernel,) = [v for path, v in jax.tree_util.tree_flatten_with_path(head_params)[0]
               if getattr(path[-1], "key", None) == "kernel"]
  return kernel


def _perceptual_params(config):
  if config.loss.perceptual != "lpips":
    return None
  from vaelab.losses import lpips
  return lpips.load_weights(config.loss.lpips_weights)


def make_loss(config, info=None, axis_name: str | None = spmd.AXIS):
  likelihood, gan = config.model.likelihood, config.loss.gan
  spec = QuantizerSpec.from_config(config.model)
  ema, residual = spec.ema, spec.quantizer == "residual"
  no_codebook_term, entropy = not spec.codebook_loss, vqvae.entropy_of(config)
  perceptual = _perceptual_params(config)

  # A constant of the step, not a population key: a population's members could move it
  # out of [0, 1).
  decay = float(config.loss.lecam_decay)

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    model = model.clone(axis_name=axis_name)
    variables = {"params": params, **model_state}
    if ema:
      (logits, levels, h), updated = model.apply(variables, x, keys, method="forward",
                                                 mutable=[COLLECTION])
      model_state = {**model_state, **updated}
    else:
      logits, levels, h = model.apply(variables, x, keys, method="forward")
    recon, quant = vq_losses.objective(likelihood, logits, x, levels, hparams["commitment"],
                                       no_codebook_term, entropy)
    x_hat = jax.nn.sigmoid(logits)
    metrics = vqvae.train_metrics(model, recon, x_hat, x, levels, residual, entropy)

    def rec_loss(out):
      """L_rec of the decoder's logits: the likelihood term plus the perceptual one."""
      r = reconstruction.nll(likelihood, out, x)
      if perceptual is not None:
        from vaelab.losses import lpips
        r = r + hparams["perceptual_weight"] * lpips.distance(perceptual, jax.nn.sigmoid(out),
                                                              x)
      return r.mean()

    if gan == "none":
      if perceptual is not None:
        rec = rec_loss(logits)
      else:
        rec = recon.mean()
      return ({"model": rec + jnp.mean(quant), DISCRIMINATOR: jnp.zeros((), jnp.float32)},
              (metrics, model_state))

    rec, rec_vjp = jax.vjp(rec_loss, lax.stop_gradient(logits))
    (rec_cotangent,) = rec_vjp(jnp.ones_like(rec))

    def discriminate(images):
      return model.apply(variables, images, method="discriminate")

    real = discriminate(x)
    fake, fake_vjp = jax.vjp(discriminate, lax.stop_gradient(x_hat))
    generator = gan_losses.generator_loss(gan, fake)
    (image_cotangent,) = fake_vjp(jax.grad(lambda f: gan_losses.generator_loss(gan, f))(
        lax.stop_gradient(fake)))
    gan_cotangent = lax.stop_gradient(image_cotangent * x_hat * (1.0 - x_hat))

    # The two losses' gradients with respect to the last kernel, of the global batch.
    _, head_vjp = jax.vjp(
        lambda hp: model.apply({"params": {**params, "head": hp}}, lax.stop_gradient(h),
                               method="apply_head"), params["head"])
    grad_rec, grad_gan = spmd.global_mean(
        (_last_kernel(head_vjp(rec_cotangent)[0]), _last_kernel(head_vjp(gan_cotangent)[0])))
    weight = gan_losses.adaptive_weight(grad_rec, grad_gan, hparams["disc_weight"])
    adopt = gan_losses.adopt_weight(hparams["step"], hparams["disc_start"])
    model_loss = gan_losses.with_gradient(
        rec + adopt * weight * generator, logits,
        rec_cotangent + adopt * weight * gan_cotangent) + jnp.mean(quant)

    disc = gan_losses.discriminator_loss(gan, real, fake)
    means = spmd.global_mean(lax.stop_gradient(jnp.stack([jnp.mean(real), jnp.mean(fake)])))
    old = model_state[LECAM]
    ema_real = jnp.where(adopt > 0, gan_losses.lecam_ema(old["real"], means[0],
                                                         decay), old["real"])
    ema_fake = jnp.where(adopt > 0, gan_losses.lecam_ema(old["fake"], means[1],
                                                         decay), old["fake"])
    lecam = gan_losses.lecam_regularizer(real, fake, ema_real, ema_fake)
    model_state = {**model_state, LECAM: {"real": ema_real, "fake": ema_fake}}
    metrics.update(disc_loss=disc, disc_real=jnp.mean(real), disc_fake=jnp.mean(fake),
                   gan_loss=generator, adaptive_weight=weight, lecam=lecam)
    losses = {"model": model_loss,
              DISCRIMINATOR: adopt * (disc + hparams["lecam_weight"] * lecam)}
    return losses, (metrics, model_state)

  return loss


def hparams(config):
  out = vqvae.hparams(config)
  out.update({k: float(config.loss[k]) for k in (
      "disc_weight", "disc_start", "lecam_weight", "perceptual_weight")})
  return out


def _number(value, key: str, low: float = 0.0, below: float = math.inf) -> None:
  try:
    ok = low <= float(value) < below
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{key}={value!r}: expected a number in [{low}, {below})")


def validate(config):
  """Checks the keys of the family; raises ConfigError naming the key, before anything is
  built (the LPIPS weights file is read here)."""
  m, loss = config.model, config.loss
  vqvae.validate(config)
  image_quality.validate(config)
  if m.trunk not in TRUNKS:
    raise ConfigError(f"model.trunk={m.trunk!r}: expected one of {TRUNKS}")
  if m.trunk == "maskgit":
    checks.integer(m.filters, "model.filters", 1)
    multipliers = m.channel_multipliers
    if (not isinstance(multipliers, (tuple, list)) or not multipliers
        or not all(checks.is_integer(v) and v >= 1 for v in multipliers)):
      raise ConfigError(f"model.channel_multipliers={multipliers!r}: expected a non-empty "
                        f"tuple of positive integers (MaskGIT: (1, 1, 2, 2, 4))")
  checks.integer(m.disc_filters, "model.disc_filters", 1)
  checks.integer(m.disc_layers, "model.disc_layers", 1)
  if loss.gan not in gan_losses.GANS:
    raise ConfigError(f"loss.gan={loss.gan!r}: expected one of {gan_losses.GANS}")
  checks.integer(loss.disc_start, "loss.disc_start", 0)
  _number(loss.disc_weight, "loss.disc_weight")
  _number(loss.lecam_weight, "loss.lecam_weight")
  _number(loss.lecam_decay, "loss.lecam_decay", 0.0, 1.0)
  _number(loss.perceptual_weight, "loss.perceptual_weight")
  if loss.perceptual not in PERCEPTUAL:
    raise ConfigError(f"loss.perceptual={loss.perceptual!r}: expected one of {PERCEPTUAL}")
  if loss.perceptual == "lpips":
    from vaelab.losses import lpips
    lpips.check_weights(loss.lpips_weights)


def check_image_shape(config, image_shape) -> None:
  """ConfigError unless the trunk and the discriminator fit images of `image_shape`."""
  m = config.model
  side = min(image_shape[:2])
  f = (2**len(tuple(m.conv_channels)) if m.trunk == "vq"
       else 2**(len(tuple(m.channel_multipliers)) - 1))
  if image_shape[0] % f or image_shape[1] % f:
    raise ConfigError(f"model.trunk={m.trunk!r} downsamples by {f}: the images "
                      f"({image_shape[0]}x{image_shape[1]}) must be a multiple of it")
  if output_side(side, int(m.disc_layers)) < 1:
    raise ConfigError(f"model.disc_layers={m.disc_layers}: the discriminator leaves no patch "
                      f"of {side}x{side} images; use fewer layers")


def _make_model_checked(config, info):
  check_image_shape(config, tuple(info.image_shape))
  return make_model(config, info)


def final_analyses(config, model, variables, train_source, eval_source):
  """VQ-VAE's code statistics of the evaluation split, and the quality of its
  reconstructions (evaluate/image_quality.py: PSNR, SSIM, probe-FID, rFID)."""
  out = vq_metrics.final_analyses(config, model, variables, train_source, eval_source)
  out.update(image_quality.final_analyses(config, model, variables, train_source, eval_source))
  return out


FAMILY = Family(
    name="vqgan",
    make_model=_make_model_checked,
    make_loss=make_loss,
    make_eval_metrics=vqvae.make_eval_metrics,
    final_analyses=final_analyses,
    hparams=hparams,
    validate=validate,
    final_baselines=vqvae.make_final_baselines(make_model, latent_shapes),
    features=method("quantize"),
    encode=vqvae.encode,
    decode=vqvae.decode,
    groups=(DISCRIMINATOR,),
    options={"model.trunk": TRUNKS, "loss.gan": gan_losses.GANS,
             "loss.perceptual": PERCEPTUAL, **QUANTIZER_OPTIONS},
)
