"""beta-VAE (Higgins et al. 2017) on procedural dSprites, 10 latents, beta = 4.

  python -m vaelab.main --config=configs/beta_vae_dsprites.py --workdir=/tmp/beta_vae
  python -m vaelab.main --config=configs/beta_vae_dsprites.py:beta=1 --workdir=/tmp/vae_ds
  python -m vaelab.main --config=configs/beta_vae_dsprites.py:runlocal --workdir=/tmp/bv_local
  # disentanglement_lib's variants (scream needs --config.data.scream_path=scream.jpg):
  python -m vaelab.main --config=configs/beta_vae_dsprites.py:runlocal,data=color_dsprites \
      --workdir=/tmp/bv_color
  # the sweep below (beta x seed), trained as one vmapped population of 8:
  python -m vaelab.sweep --config=configs/beta_vae_dsprites.py:runlocal --workdir=/tmp/bv_sweep

The full config is disentanglement_lib's trunk (`model.encoder=dlib_conv`: its conv_encoder
and deconv_decoder exactly, stride-2 convolutions of 32, 32, 64, 64 channels and a 256-unit
dense layer, 4x4 transposed convolutions back), Bernoulli pixels, Adam at 1e-4, batch 64,
300k steps (about a day on one GPU). `beta=` sets the KL weight (`:beta=1` is the plain VAE baseline).

`runlocal` is an MLP (512, 256) trunk for 4000 steps at lr 1e-3, about a minute of training
on 2 CPU cores: XLA's CPU convolutions make the conv shape ~10x slower per step. results.json
has the four disentanglement metrics (eval/betavae_score, eval/factorvae_score, eval/mig,
eval/dci_disentanglement) on posterior means, and traversals.png orders latents by KL.

`get_sweep` is beta in (1, 2, 4, 8) times seeds (0, 1): eight runs that differ only in
numbers the step takes as arrays, so `vaelab.sweep` trains them as one population.
"""
from vaelab import config_base
from vaelab.models import vae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, beta=4.0, data="procedural_dsprites")
  c = config_base.base_config()
  vae.config_keys(c, likelihood="bernoulli")
  c.data.name = arg.data
  c.data.num_eval = 5000
  c.model.encoder = "dlib_conv"
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
  # dSprites pixels are binary: bounds at K = 500 cost 500 decoder passes per image.
  c.eval.iwae_ks = (1, 10, 100)
  if arg.runlocal:
    c.model.encoder = "mlp"
    c.model.hidden = (512, 256)
    c.num_train_steps = 4000
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 2000
    c.optimizer.learning_rate = 1e-3
    c.data.num_eval = 2000
    # A fifth of disentanglement_lib's sample sizes: under a minute on 2 cores.
    c.eval.disentanglement_num_train = 2000
    c.eval.disentanglement_num_eval = 1000
  return c


def get_sweep(h):
  return h.product(h.sweep("loss.beta", [1.0, 2.0, 4.0, 8.0]), h.sweep("seed", [0, 1]))
