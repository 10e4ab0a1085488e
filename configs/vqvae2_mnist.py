"""VQ-VAE-2 (Razavi et al. 2019) on MNIST: a 14x14 bottom and a 7x7 top code map.

  python -m vaelab.main --config=configs/vqvae2_mnist.py --workdir=/tmp/vqvae2_mnist
  python -m vaelab.main --config=configs/vqvae2_mnist.py --workdir=/tmp/vqvae2_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz
  python -m vaelab.main --config=configs/vqvae2_mnist.py:runlocal --workdir=/tmp/vqvae2_local
  # another quantizer at both levels (vqvae.apply_preset): fsq | residual | cosine | rotation
  python -m vaelab.main --config=configs/vqvae2_mnist.py:quantizer=fsq --workdir=/tmp/vqvae2_fsq

A small two-level model that runs on a CPU: one stride-2 convolution (32 channels) to the
14x14 bottom map, one more to the 7x7 top map, two residual blocks at each level, K = 256
codes of 16 dims per level, EMA codebooks with dead-code restarts and Bernoulli pixels as
in configs/vqvae_mnist.py. results.json reports each level (eval/perplexity_top, ...;
eval/perplexity is the bottom's) and PCA with 245 = 49 + 196 components, one per code
index. On a 4k/1k split of mnist_5k (1,000 steps): eval/recon_sse 1.10 vs PCA-245 1.38,
perplexity top 213 / bottom 171, all codes in use. (64 channels: 0.93, but slower.)
"""
from vaelab import config_base
from vaelab.models import vqvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq")
  c = config_base.base_config()
  vqvae.config_keys(c, "vqvae2")
  c.data.name = "mnist"
  c.model.conv_channels = (32,)
  c.model.num_res_blocks = 2
  c.model.res_channels = 16
  c.model.num_codes = 256
  c.model.code_dim = 16
  c.model.ema_decay = 0.99
  c.model.dead_code_steps = 20
  c.model.likelihood = "bernoulli"
  c.loss.commitment = 0.25
  c.batch_size = 64
  c.num_train_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.optimizer.learning_rate = 2e-3
  c.optimizer.schedule = "cosine"
  if arg.runlocal:
    c.model.conv_channels = (8,)
    c.model.res_channels = 8
    c.model.num_codes = 32
    c.model.code_dim = 4
    c.num_train_steps = 1500  # about a minute of training on a 2-core CPU
    c.log_every = 150
    c.eval_every = c.checkpoint_every = 750
  vqvae.apply_preset(c, arg.quantizer)
  return c
