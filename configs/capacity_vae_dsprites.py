"""Capacity-annealed beta-VAE (Burgess et al. 2017) on procedural dSprites.

  python -m vaelab.main --config=configs/capacity_vae_dsprites.py --workdir=/tmp/capacity
  python -m vaelab.main --config=configs/capacity_vae_dsprites.py:runlocal --workdir=/tmp/cap_l
  python -m vaelab.main --config=configs/capacity_vae_dsprites.py:capacity_max=50 \
      --workdir=/tmp/capacity_50
  # disentanglement_lib's grid (C_max in 5, 10, 25, 50, 75, 100), one population:
  python -m vaelab.sweep --config=configs/capacity_vae_dsprites.py --workdir=/tmp/cap_sweep

The objective is -E_q[log p(x|z)] + gamma * |KL - C|, with C rising linearly from 0 to
C_max over loss.capacity_steps = 100k, gamma = 1000: disentanglement_lib's AnnealedVAE as
its unsupervised_study_v1 trains it, on its conv encoder and deconv decoder
(`model.encoder=dlib_conv`), Bernoulli pixels, 10 latents, batch 64, Adam at 1e-4
(b1 0.9, b2 0.999) for 300k steps. `capacity_max=` sets C_max (default 25, a point of the
grid). metrics.jsonl logs train/kl beside train/capacity, so the KL can be checked
against C; capacity.png plots both (experiments/capacity_annealing.py).

`runlocal` is an MLP (512, 256) trunk for 3000 steps at lr 1e-3 with C reaching C_max at
step 2000, a few CPU minutes on 2 cores.
"""
from vaelab import config_base
from vaelab.models import vae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, capacity_max=25.0)
  c = config_base.base_config()
  vae.config_keys(c, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.model.encoder = "dlib_conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.objective = "capacity"
  c.loss.gamma = 1000.0
  c.loss.capacity_max = arg.capacity_max
  c.loss.capacity_steps = 100_000
  c.batch_size = 64
  c.num_train_steps = 300_000
  c.log_every = 100
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-4
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


def get_sweep(h):
  return h.sweep("loss.capacity_max", [5.0, 10.0, 25.0, 50.0, 75.0, 100.0])
