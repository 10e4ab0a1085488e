"""Kingma & Welling (2014) MLP VAE with a Bernoulli decoder on dynamically binarized MNIST.

  python -m vaelab.main --config=configs/vae_mnist.py --workdir=/tmp/vae_mnist
  # from files instead of TFDS:
  python -m vaelab.main --config=configs/vae_mnist.py --workdir=/tmp/vae_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz

Training draws fresh Bernoulli pixels every step; evaluation uses one fixed draw.
results.json has eval/elbo (nats per image, a lower bound on log p(x)) and eval/kl.
"""
from vaelab import config_base


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  config_base.vae_keys(c, likelihood="bernoulli")
  c.model.hidden = (500,)
  c.model.activation = "tanh"
  c.model.latent_dim = 20
  c.data.name = "mnist"
  c.data.binarize = "dynamic"
  c.batch_size = 100
  c.num_train_steps = 10000
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  if arg.runlocal:
    c.num_train_steps = 20
    c.log_every = c.eval_every = c.checkpoint_every = 10
  return c
