"""VQ-VAE (van den Oord et al. 2017) on CIFAR-10 in the paper's shape: 8x8 latents, K = 512.

  python -m vaelab.main --config=configs/vqvae_cifar10.py --workdir=/tmp/vqvae_cifar10
  python -m vaelab.main --config=configs/vqvae_cifar10.py:runlocal --workdir=/tmp/vqvae_cifar_local
  # another quantizer (vqvae.apply_preset): fsq | residual | cosine | rotation
  python -m vaelab.main --config=configs/vqvae_cifar10.py:runlocal,quantizer=fsq \
      --workdir=/tmp/vqvae_cifar_fsq

The paper's encoder: two stride-2 4x4 convolutions and two residual blocks (ReLU, 3x3
conv, ReLU, 1x1 conv), all 256 channels, to an 8x8 map of 64-d vectors quantized by
K = 512 codes; the decoder mirrors it. Adam at 2e-4, batch 128, 250k steps (the paper's
CIFAR-10 figure: 4.67 bits/dim with a PixelCNN prior, about a day on one GPU). The codebook
is the EMA one (appendix; `model.ema_decay=0` is the codebook-loss original), pixels are
the paper's squared error. Needs the TFDS cifar10 data prepared (`data.data_dir`).

`runlocal` shrinks the widths to (32, 64) channels, K = 128 codes of 16 dims and 1,000
steps with dead-code restarts: a CPU run of several minutes.
"""
from vaelab import config_base
from vaelab.models import vqvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq")
  c = config_base.base_config()
  vqvae.config_keys(c)
  c.data.name = "cifar10"
  c.model.conv_channels = (256, 256)
  c.model.num_res_blocks = 2
  c.model.res_channels = 256
  c.model.num_codes = 512
  c.model.code_dim = 64
  c.model.ema_decay = 0.99
  c.model.likelihood = "sigmoid_sse"
  c.loss.commitment = 0.25
  c.batch_size = 128
  c.num_train_steps = 250_000
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 2e-4
  if arg.runlocal:
    c.model.conv_channels = (32, 64)
    c.model.res_channels = 32
    c.model.num_codes = 128
    c.model.code_dim = 16
    c.model.dead_code_steps = 20
    c.batch_size = 64
    c.num_train_steps = 1000
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 500
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "cosine"
  vqvae.apply_preset(c, arg.quantizer)
  return c
