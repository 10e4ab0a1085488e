"""beta-TCVAE (Chen et al. 2018) on procedural dSprites, disentanglement_lib's
unsupervised_study_v1 settings.

  python -m vaelab.main --config=configs/beta_tcvae_dsprites.py --workdir=/tmp/beta_tcvae
  python -m vaelab.main --config=configs/beta_tcvae_dsprites.py:beta=1 --workdir=/tmp/btc1
  python -m vaelab.main --config=configs/beta_tcvae_dsprites.py:runlocal --workdir=/tmp/btc
  python -m vaelab.main --config=configs/beta_tcvae_dsprites.py:runlocal --workdir=/tmp/btc_mss \
      --config.loss.tc_estimator=mss
  # the sweep below (beta x seed), trained as populations:
  python -m vaelab.sweep --config=configs/beta_tcvae_dsprites.py:runlocal --workdir=/tmp/btc_sweep

The full config is the study's (Locatello et al. 2019; dlib's model_configs/shared.gin):
disentanglement_lib's conv encoder and deconv decoder (`model.encoder=dlib_conv`, as
configs/beta_vae_dsprites.py), Bernoulli pixels, 10 latents, batch 64,
Adam at 1e-4 with b1 = 0.9, b2 = 0.999 and epsilon 1e-8 (optax's default epsilon), 300k
steps. The objective is dlib's: -ELBO + (beta - 1) * TC, the TC estimated over the batch by
minibatch-weighted sampling (`loss.tc_estimator=mws`; `mss` is Chen et al.'s stratified
estimator). `beta=` sets beta (default 6, a point of dlib's grid).

`runlocal` is an MLP (512, 256) trunk for 4000 steps at lr 1e-3, about a minute of training
on 2 CPU cores, with a fifth of dlib's disentanglement sample sizes. metrics.jsonl logs train/mi,
train/tc and train/dwkl; results.json has the VAE's metrics and the four disentanglement
scores.

`get_sweep` is dlib's grid for this model, beta in (1, 2, 4, 6, 8, 10), times seeds (0, 1)
(the study ran 50 seeds per setting): twelve runs that differ only in numbers the step
takes as arrays, so `vaelab.sweep` trains them as populations.
"""
from vaelab import config_base
from vaelab.models import beta_tcvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, beta=6.0)
  c = config_base.base_config()
  beta_tcvae.config_keys(c, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.model.encoder = "dlib_conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.beta = arg.beta
  c.loss.tc_estimator = "mws"
  c.batch_size = 64
  c.num_train_steps = 300_000
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
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
    c.eval.disentanglement_num_train = 2000
    c.eval.disentanglement_num_eval = 1000
  return c


def get_sweep(h):
  return h.product(h.sweep("loss.beta", [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
                   h.sweep("seed", [0, 1]))
