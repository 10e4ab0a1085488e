"""Capacity-annealed beta-VAE (Burgess et al. 2017) on procedural dSprites.

  python -m vaelab.main --config=configs/capacity_vae_dsprites.py --workdir=/tmp/capacity
  python -m vaelab.main --config=configs/capacity_vae_dsprites.py:runlocal --workdir=/tmp/cap_l

The objective is -E_q[log p(x|z)] + gamma * |KL - C|, with C rising linearly from 0 to
C_max = 25 nats over loss.capacity_steps, gamma = 1000 (the paper's values); the paper's
conv shape (configs/beta_vae_dsprites.py), Adam at 5e-4, batch 64. metrics.jsonl logs
train/kl beside train/capacity, so the KL can be checked against C; capacity.png plots
both (experiments/capacity_annealing.py).

`runlocal` is an MLP (512, 256) trunk for 3000 steps with C reaching 25 nats at step
2000, a few CPU minutes on 2 cores.
"""
from vaelab import config_base
from vaelab.models import vae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  vae.config_keys(c, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.model.encoder = "conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.objective = "capacity"
  c.loss.gamma = 1000.0
  c.loss.capacity_max = 25.0
  c.loss.capacity_steps = 100_000
  c.batch_size = 64
  c.num_train_steps = 150_000
  c.log_every = 100
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 5e-4
  c.eval.batch_size = 500
  c.eval.iwae_ks = (1, 10, 100)
  if arg.runlocal:
    c.model.encoder = "mlp"
    c.model.hidden = (512, 256)
    c.num_train_steps = 3000
    c.loss.capacity_steps = 2000
    c.log_every = 50
    c.eval_every = c.checkpoint_every = 1500
    c.optimizer.learning_rate = 1e-3
    c.data.num_eval = 2000
    # A fifth of disentanglement_lib's sample sizes: under a minute on 2 cores.
    c.eval.disentanglement_num_train = 2000
    c.eval.disentanglement_num_eval = 1000
  return c
