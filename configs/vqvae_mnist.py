"""VQ-VAE (van den Oord et al. 2017) on MNIST: 7x7 latents, K = 256 codes of 16 dims, EMA
codebook with dead-code restarts.

  python -m vaelab.main --config=configs/vqvae_mnist.py --workdir=/tmp/vqvae_mnist
  # from files instead of TFDS; without restarts, or without EMA (codebook loss):
  python -m vaelab.main --config=configs/vqvae_mnist.py --workdir=/tmp/vqvae_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz \
      [--config.model.dead_code_steps=0] \
      [--config.model.ema_decay=0 --config.model.dead_code_steps=0]
  python -m vaelab.main --config=configs/vqvae_mnist.py:runlocal --workdir=/tmp/vqvae_local
  # another quantizer (vqvae.apply_preset): fsq | residual | cosine | rotation
  python -m vaelab.main --config=configs/vqvae_mnist.py:quantizer=fsq --workdir=/tmp/vqvae_fsq

The paper's shape shrunk for 28x28 and a CPU: two stride-2 4x4 convolutions (32, 64
channels) to a 7x7 map, two residual blocks, 16-d codes; the decoder mirrors it. Pixels
are Bernoulli (`model.likelihood`): with the squared error of a sigmoid image, MNIST's
black background drives the logits into saturation and the decoder stops learning
(measured: recon_sse stuck near 88). A code no image chose in 20 steps restarts at an
encoder output of the batch: without that, most codes are never used.

results.json has eval/recon_sse beside eval/pca_recon_sse, PCA with 49 components (one per
latent position: the number of code indices an image is stored as), and the set-level
eval/perplexity and eval/codebook_usage. On a 4k/1k split of mnist_5k (1,000 steps):
eval/recon_sse 3.12 vs PCA-49 9.49, perplexity 149, all 256 codes used; without restarts
3.88, perplexity 27, 23% of the codes (`experiments/vqvae_mnist.py` compares the variants).
"""
from vaelab import config_base
from vaelab.models import vqvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq")
  c = config_base.base_config()
  vqvae.config_keys(c)
  c.data.name = "mnist"
  c.model.conv_channels = (32, 64)
  c.model.num_res_blocks = 2
  c.model.res_channels = 32
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
    c.model.conv_channels = (8, 16)
    c.model.res_channels = 8
    c.model.num_codes = 32
    c.model.code_dim = 4
    c.num_train_steps = 1000  # about a minute of training on a 2-core CPU
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 500
  vqvae.apply_preset(c, arg.quantizer)
  return c
