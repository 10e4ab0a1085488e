"""FactorVAE (Kim & Mnih 2018) on procedural dSprites, as disentanglement_lib's
unsupervised_study_v1 trains it.

  python -m vaelab.main --config=configs/factor_vae_dsprites.py --workdir=/tmp/factor_vae
  python -m vaelab.main --config=configs/factor_vae_dsprites.py:gamma=40 --workdir=/tmp/fv40
  python -m vaelab.main --config=configs/factor_vae_dsprites.py:runlocal --workdir=/tmp/fv_local
  # disentanglement_lib's grid (gamma in 10, 20, 30, 40, 50, 100), one population:
  python -m vaelab.sweep --config=configs/factor_vae_dsprites.py:runlocal --workdir=/tmp/fv_sweep

The full config is disentanglement_lib's: its conv encoder and deconv decoder
(`model.encoder=dlib_conv`: 4x4, 4x4, 2x2, 2x2 stride-2 convolutions (32, 32, 64, 64), a
256-unit dense layer; dense 256 and 1024, four 4x4 stride-2 transposed convolutions),
Bernoulli pixels, 10 latents, batch 64, Adam (lr 1e-4, b1 0.9, b2 0.999), and the
discriminator (six layers of 1000 leaky-ReLU units) trained by its own Adam (lr 1e-4,
b1 0.5, b2 0.9), `discriminator_optimizer.*`, for 150k steps, each updating both networks
once: dlib's "300k steps" count its global step, which both of its `minimize` calls
advance (methods/unsupervised/vae.py), so it stops after 150k updates of each network.
`gamma=` sets the weight of the total correlation.

`runlocal` is an MLP (512, 256) trunk and a (256, 256) discriminator for 4000 steps at
lr 1e-3 (both optimizers), a few CPU minutes on 2 cores, with a fifth of disentanglement_lib's
metric sample sizes.
"""
from vaelab import config_base
from vaelab.models import factor_vae

DLIB_TRAINING_STEPS = 300_000  # model.training_steps of dlib's unsupervised_study_v1


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, gamma=10.0)
  c = config_base.base_config()
  factor_vae.config_keys(c, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.model.encoder = "dlib_conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.gamma = arg.gamma
  c.batch_size = 64
  # dlib's training_steps = 300k, counted by a global step that its VAE and discriminator
  # updates both advance: 150k updates of each network, one of each per step here.
  c.num_train_steps = DLIB_TRAINING_STEPS // 2
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-4
  c.eval.batch_size = 500
  c.eval.iwae_ks = (1, 10, 100)  # binary pixels: K = 500 would cost 500 decoder passes
  if arg.runlocal:
    c.model.encoder = "mlp"
    c.model.hidden = (512, 256)
    c.model.discriminator_hidden = (256, 256)
    c.num_train_steps = 4000
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 2000
    c.optimizer.learning_rate = 1e-3
    c.discriminator_optimizer.learning_rate = 1e-3
    c.data.num_eval = 2000
    c.eval.disentanglement_num_train = 2000
    c.eval.disentanglement_num_eval = 1000
  return c


def get_sweep(h):
  return h.sweep("loss.gamma", [10.0, 20.0, 30.0, 40.0, 50.0, 100.0])
