"""Ada-GVAE (Locatello et al. 2020): GroupVAE's average of the pair's posteriors, on pairs of
procedural dSprites images that share all but k factors.

  python -m vaelab.main --config=configs/ada_gvae_dsprites.py --workdir=/tmp/ada_gvae
  python -m vaelab.main --config=configs/ada_gvae_dsprites.py:runlocal --workdir=/tmp/ada_gvae_local
  python -m vaelab.main --config=configs/ada_gvae_dsprites.py:runlocal,k=-1,beta=16 \
      --workdir=/tmp/ada_gvae_k
  # the labels variant (the changed factor's index decides the shared latents):
  python -m vaelab.main --config=configs/ada_gvae_dsprites.py:runlocal \
      --config.loss.aggregation=labels --workdir=/tmp/gvae_labels
  # the sweep below (beta x k):
  python -m vaelab.sweep --config=configs/ada_gvae_dsprites.py:runlocal --workdir=/tmp/ada_gvae_sweep

The full config is the unsupervised study's (configs/beta_vae_dsprites.py):
disentanglement_lib's conv trunk (`model.encoder=dlib_conv`), 10 latents, Bernoulli pixels,
Adam at 1e-4, batch 64 pairs, 300k steps. `beta=` sets the KL weight, `k=` the factors a
pair changes (`data.pair_k`; -1: drawn per pair as disentanglement_lib draws it).
`runlocal` is the MLP (512, 256) trunk at lr 1e-3 for 1000 steps, about a minute of training
on 2 CPU cores, with a fifth of disentanglement_lib's metric sample sizes
(vaelab/models/weak_vae.py: dsprites_config).

`get_sweep` is disentanglement_lib's grid for the weakly-supervised study, beta in
(1, 2, 4, 6, 8, 16) times k in (1, -1): k reaches the data, so each k is its own
population of six betas.
"""
from vaelab import config_base
from vaelab.models import weak_vae


def get_config(arg=None):
  return weak_vae.dsprites_config("ada_gvae", config_base.parse_arg(arg, runlocal=False,
                                                                  beta=1.0, k=1))


def get_sweep(h):
  return weak_vae.dsprites_sweep(h)
