"""Vincent et al. (2008) denoising autoencoder on MNIST: masking noise, nu = 0.25.

  python -m vaelab.main --config=configs/dae_mnist.py --workdir=/tmp/dae_mnist
  # from files instead of TFDS:
  python -m vaelab.main --config=configs/dae_mnist.py --workdir=/tmp/dae_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz
  # the same network and budget without corruption, for comparison:
  python -m vaelab.main --config=configs/dae_mnist.py --workdir=/tmp/dae_mnist_nu0 \
      --config.model.noise_level=0

The network is configs/ae_mnist.py's (784-1000-500-250-30, ReLU, linear code, cross-entropy
against the clean image), so the two can be compared at the same budget. results.json has
eval/denoise_sse: the squared error between a clean test image and the reconstruction of
its masked version (eval.corruption at eval.noise_level, by default the training noise).
"""
from vaelab import config_base
from vaelab.models import dae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  dae.config_keys(c)  # masking noise, nu = 0.25
  c.model.hidden = (1000, 500, 250)
  c.model.latent_dim = 30
  c.model.activation = "relu"
  c.data.name = "mnist"
  c.batch_size = 128
  # Half configs/ae_mnist.py's budget: a few CPU minutes on 2 cores.
  c.num_train_steps = 2000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  if arg.runlocal:
    c.num_train_steps = 1500  # about a minute of training on a 2-core CPU
    c.log_every = 150
    c.eval_every = c.checkpoint_every = 750
  return c
