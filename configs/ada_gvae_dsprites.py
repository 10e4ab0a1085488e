"""Ada-GVAE (Locatello et al. 2020): GroupVAE's average of the pair's posteriors, on pairs of procedural dSprites images that share all but k factors.

  python -m vaelab.main --config=configs/ada_gvae_dsprites.py --workdir=/tmp/ada_gvae
  python -m vaelab.main --config=configs/ada_gvae_dsprites.py:runlocal --workdir=/tmp/ada_gvae_local
  python -m vaelab.main --config=configs/ada_gvae_dsprites.py:runlocal,k=-1,beta=16 \
      --workdir=/tmp/ada_gvae_k
  # the labels variant (the changed factor's index decides the shared latents):
  python -m vaelab.main --config=configs/ada_gvae_dsprites.py:runlocal \
      --config.loss.aggregation=labels --workdir=/tmp/gvae_labels
  # the sweep below (beta x k):
  python -m vaelab.sweep --config=configs/ada_gvae_dsprites.py:runlocal --workdir=/tmp/ada_gvae_sweep

The full config is the unsupervised study's (configs/beta_vae_dsprites.py): the conv trunk
(four 4x4 stride-2 convolutions (32, 32, 64, 64), a 256-unit dense layer), 10 latents,
Bernoulli pixels, Adam at 1e-4, batch 64 pairs, 300k steps. `beta=` sets the KL weight,
`k=` the factors a pair changes (`data.pair_k`; -1: drawn per pair as disentanglement_lib
draws it).

`runlocal` is the MLP (512, 256) trunk at lr 1e-3 for 1000 steps, about a minute on 2 CPU
cores, with a fifth of disentanglement_lib's metric sample sizes.

`get_sweep` is disentanglement_lib's grid for the weakly-supervised study, beta in
(1, 2, 4, 6, 8, 16) times k in (1, -1): k reaches the data, so each k is its own
population of six betas.
"""
from vaelab import config_base
from vaelab.models import ada_gvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, beta=1.0, k=1)
  c = config_base.base_config()
  ada_gvae.config_keys(c, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.data.pair_k = arg.k
  c.model.encoder = "conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.beta = arg.beta
  c.batch_size = 64
  c.num_train_steps = 300_000
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-4
  c.eval.batch_size = 500
  c.eval.iwae_ks = (1, 10, 100)  # binary pixels: K = 500 would cost 500 decoder passes
  if arg.runlocal:
    c.model.encoder = "mlp"
    c.model.hidden = (512, 256)
    c.num_train_steps = 1000
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 1000
    c.optimizer.learning_rate = 1e-3
    c.data.num_eval = 2000
    c.eval.disentanglement_num_train = 2000
    c.eval.disentanglement_num_eval = 1000
  return c


def get_sweep(h):
  return h.product(h.sweep("loss.beta", [1.0, 2.0, 4.0, 6.0, 8.0, 16.0]),
                   h.sweep("data.pair_k", [1, -1]))
