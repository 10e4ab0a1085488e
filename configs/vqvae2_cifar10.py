"""VQ-VAE-2 (Razavi et al. 2019) on CIFAR-10: an 8x8 bottom and a 4x4 top code map.

  python -m vaelab.main --config=configs/vqvae2_cifar10.py --workdir=/tmp/vqvae2_cifar10
  python -m vaelab.main --config=configs/vqvae2_cifar10.py:runlocal --workdir=/tmp/vqvae2_local
  # another quantizer (vqvae.apply_preset): fsq | residual | cosine | rotation
  python -m vaelab.main --config=configs/vqvae2_cifar10.py:runlocal,quantizer=fsq \
      --workdir=/tmp/vqvae2_cifar_fsq

Razavi et al.'s two-level shape at CIFAR size (their ImageNet model maps 256x256 to 64x64
and 32x32): two stride-2 4x4 convolutions (128 channels) and two residual blocks to the
bottom map, one more stride-2 convolution to the top map, K = 512 codes of 64 dims per
level, EMA codebooks (gamma 0.99), squared-error pixels, Adam 3e-4, batch 128, 100k steps.
Needs the TFDS cifar10 data prepared (`data.data_dir`). `runlocal` is a CPU-sized model
(32/64 channels, K = 128 codes of 16 dims, dead-code restarts) for 1,000 steps.
"""
from vaelab import config_base
from vaelab.models import vqvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq")
  c = config_base.base_config()
  vqvae.config_keys(c, "vqvae2")
  c.data.name = "cifar10"
  c.model.conv_channels = (128, 128)
  c.model.num_res_blocks = 2
  c.model.res_channels = 64
  c.model.num_codes = 512
  c.model.code_dim = 64
  c.model.ema_decay = 0.99
  c.model.likelihood = "sigmoid_sse"
  c.loss.commitment = 0.25
  c.batch_size = 128
  c.num_train_steps = 100_000
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 3e-4
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
