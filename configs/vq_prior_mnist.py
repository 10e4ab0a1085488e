"""PixelSNAIL-style prior over the codes of a trained VQ-VAE or VQ-VAE-2 on MNIST.

  # 1. the VQ model; 2. its prior (same data keys: the codes are extracted from them)
  python -m vaelab.main --config=configs/vqvae_mnist.py --workdir=/tmp/vqvae_mnist $NPZ
  python -m vaelab.main --config=configs/vq_prior_mnist.py --workdir=/tmp/vq_prior_mnist \
      --config.vq_workdir=/tmp/vqvae_mnist $NPZ
  # VQ-VAE-2: a top prior and a bottom prior conditioned on the top codes
  python -m vaelab.main --config=configs/vqvae2_mnist.py --workdir=/tmp/vqvae2_mnist $NPZ
  python -m vaelab.main --config=configs/vq_prior_mnist.py --workdir=/tmp/vq2_prior_mnist \
      --config.vq_workdir=/tmp/vqvae2_mnist $NPZ
  python -m vaelab.main --config=configs/vq_prior_mnist.py:runlocal --workdir=/tmp/prior_local \
      --config.vq_workdir=/tmp/vqvae_local
  # samples.png from the latest checkpoint: top prior, bottom prior and decoder in one call
  python -m vaelab.main --config=configs/vq_prior_mnist.py --workdir=/tmp/vq2_prior_mnist \
      --config.vq_workdir=/tmp/vqvae2_mnist --mode=sample [--config.eval.sampler=full]
  # with NPZ="--config.data.name=npz --config.data.train_path=train.npz \
  #           --config.data.eval_path=test.npz", or nothing for TFDS MNIST

The levels, K and the code map sizes come from the VQ run (`vq_workdir`, its latest
checkpoint). The prior is small for a CPU: 32 channels, 2 blocks of 2 gated residual
layers each followed by 4-head causal attention, 1,500 steps of Adam 1e-3 with a cosine
decay (64 channels learn a little faster per step but are much slower per step).
Dropout 0.1: 4,000 images give only 196k codes of 7x7 maps.
results.json: eval/prior_nll (nats per held-out code) beside eval/prior_uniform_nll (log K)
and eval/prior_unigram_nll (code frequencies of the training codes), eval/prior_bits_per_code;
samples.png (sampled codes through the frozen decoder) beside code_reconstructions.png
(held-out codes through it). Samples come from the cached sampler (eval.sampler; `full`,
one network pass per position, draws the same codes far more slowly:
experiments/benchmark_prior_sampler.py). On the codes of configs/vqvae_mnist.py (4k/1k split of
mnist_5k, K = 256): eval/prior_nll 3.01 vs unigram 5.02 vs uniform 5.55 nats per code.
"""
from vaelab import config_base
from vaelab.models import vq_prior


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  vq_prior.config_keys(c)
  c.data.name = "mnist"
  c.model.channels = 32
  c.model.num_blocks = 2
  c.model.res_per_block = 2
  c.model.num_heads = 4
  c.model.dropout = 0.1
  c.batch_size = 64
  c.num_train_steps = 1500
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  c.eval.num_pictures = 64
  if arg.runlocal:
    c.model.channels = 16
    c.model.num_blocks = 1
    c.model.res_per_block = 1
    c.model.num_heads = 2
    c.num_train_steps = 500  # about a minute of training on a 2-core CPU
    c.log_every = 50
    c.eval_every = c.checkpoint_every = 250
    c.eval.num_pictures = 8
  return c
