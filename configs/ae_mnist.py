"""Hinton & Salakhutdinov (2006) deep autoencoder on MNIST: 784-1000-500-250-30, linear code.

  python -m vaelab.main --config=configs/ae_mnist.py --workdir=/tmp/ae_mnist
  # from files instead of TFDS:
  python -m vaelab.main --config=configs/ae_mnist.py --workdir=/tmp/ae_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz

The paper's logistic units needed RBM pretraining; without it they train far too slowly
at this budget, so the hidden units are ELU and the optimizer Adam (lr 1e-3, cosine decay).
The 30-d code stays linear and the loss is the paper's cross-entropy. results.json has
eval/recon_sse beside the PCA-30 baseline eval/pca_recon_sse (paper, 60k images: 3.00 vs
13.87 on the test set). On 5k images the net overfits after ~1500 steps (~38 epochs); on a
4k/1k split of them the default reached eval/recon_sse 6.7 vs PCA-30's 14.2 (ReLU: 9.2),
in about 2 minutes on a 2-core CPU, the final evaluation of a 10k test set included.
"""
from vaelab import config_base
from vaelab.models import ae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  ae.config_keys(c)
  c.model.hidden = (1000, 500, 250)
  c.model.latent_dim = 30
  c.model.activation = "elu"  # beat relu, gelu, leaky_relu, tanh, softplus here
  c.data.name = "mnist"
  c.batch_size = 128
  c.num_train_steps = 1500  # ~38 epochs of 5k images: longer only overfits them
  c.eval_every = 750  # each evaluation of 10k test images costs ~15 s (exact Jacobian)
  c.checkpoint_every = 750
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  if arg.runlocal:
    c.num_train_steps = 1000  # about a minute of training on a 2-core CPU
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 500
  return c
