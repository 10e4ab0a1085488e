"""VQGAN (Esser et al. 2021) on CIFAR-10: MaskGIT's VQGAN trunk at 32x32 and a patch
discriminator.

  python -m vaelab.main --config=configs/vqgan_cifar10.py --workdir=/tmp/vqgan_cifar10
  python -m vaelab.main --config=configs/vqgan_cifar10.py:runlocal --workdir=/tmp/vqgan_cifar_local
  # another quantizer (vqvae.apply_preset), or no discriminator:
  python -m vaelab.main --config=configs/vqgan_cifar10.py:quantizer=fsq,adversarial=False \
      --workdir=/tmp/vqgan_cifar_fsq
  # with the perceptual term:
  ... --config.loss.perceptual=lpips --config.loss.lpips_weights=lpips_vgg16.npz

MaskGIT's trunk (models/vqgan_trunk.py) with three levels of 64, 128, 256 channels to an
8x8 map of 256-d codes, 2^14 of them; taming's discriminator (3 layers, 64 filters: 2x2
patches of a 32x32 image), hinge loss from step 10,000 with the adaptive weight times 0.8,
Adam at 1e-4 (b1 0.5, b2 0.9, taming's) for both, batch 128, 100k steps. Needs the TFDS
cifar10 data prepared (`data.data_dir`).

`runlocal`: 16 filters, (1, 2) multipliers, one residual block, 2^10 codes of 16 dims and
2 discriminator layers of 16 filters, 400 steps with the adversarial terms from step 200.
"""
from vaelab import config_base
from vaelab.models import vqgan


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq", adversarial=True)
  c = config_base.base_config()
  vqgan.config_keys(c)
  c.data.name = "cifar10"
  c.model.trunk = "maskgit"
  c.model.filters = 64
  c.model.channel_multipliers = (1, 2, 4)
  c.model.num_res_blocks = 2
  c.model.num_codes = 2**14
  c.model.code_dim = 256
  c.model.ema_decay = 0.99
  c.model.dead_code_steps = 20
  c.model.likelihood = "sigmoid_sse"
  c.model.disc_filters = 64
  c.model.disc_layers = 3
  c.loss.commitment = 0.25
  c.loss.gan = "hinge"
  c.loss.disc_weight = 0.8
  c.loss.disc_start = 10_000
  c.batch_size = 128
  c.num_train_steps = 100_000
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
  c.discriminator_optimizer.learning_rate = 1e-4
  if arg.runlocal:
    c.model.filters = 16
    c.model.channel_multipliers = (1, 2)
    c.model.num_res_blocks = 1
    c.model.num_codes = 2**10
    c.model.code_dim = 16
    c.model.disc_filters = 16
    c.model.disc_layers = 2
    c.batch_size = 32
    c.num_train_steps = 400
    c.loss.disc_start = 200
    c.log_every = 50
    c.eval_every = c.checkpoint_every = 200
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.discriminator_optimizer.learning_rate = 2e-4
  vqgan.apply_variant(c, arg.quantizer, arg.adversarial)
  return c
