"""Sparse autoencoder (Ng's lecture notes) on MNIST: 784-196-784, sigmoid hidden units,
KL sparsity penalty towards rho = 0.05.

  python -m vaelab.main --config=configs/sparse_ae_mnist.py --workdir=/tmp/sparse_ae_mnist
  # from files instead of TFDS:
  python -m vaelab.main --config=configs/sparse_ae_mnist.py --workdir=/tmp/sparse_ae_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz

Ng's exercise trains 196 sigmoid units with the squared error and beta = 3 by L-BFGS; here
Adam and the cross-entropy (per image several times larger than the squared error), so the
weight is raised to 10 to hold the units near rho. results.json
has eval/mean_activation (mean over units of rho_hat on the test set; should sit near
model.rho) beside the shared autoencoder metrics.
"""
from vaelab import config_base
from vaelab.models import sparse_ae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  sparse_ae.config_keys(c)  # sigmoid code, rho = 0.05
  c.model.hidden = ()  # one hidden layer: the code itself
  c.model.latent_dim = 196
  c.loss.sparsity_weight = 10.0  # 3.0 (Ng) left eval/mean_activation at 0.073 here; 10 gives 0.057
  c.data.name = "mnist"
  c.batch_size = 128
  c.num_train_steps = 3000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.optimizer.learning_rate = 3e-3
  if arg.runlocal:
    c.num_train_steps = 3000  # about a minute of training on a 2-core CPU
    c.log_every = 300
    c.eval_every = c.checkpoint_every = 1500
  return c
