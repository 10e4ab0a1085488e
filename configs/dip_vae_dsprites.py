"""DIP-VAE-I and DIP-VAE-II (Kumar et al. 2018) on procedural dSprites, disentanglement_lib's
unsupervised_study_v1 settings.

  python -m vaelab.main --config=configs/dip_vae_dsprites.py --workdir=/tmp/dip_vae_i
  python -m vaelab.main --config=configs/dip_vae_dsprites.py:dip_type=ii --workdir=/tmp/dip_ii
  python -m vaelab.main --config=configs/dip_vae_dsprites.py:runlocal --workdir=/tmp/dip
  python -m vaelab.main --config=configs/dip_vae_dsprites.py:runlocal,dip_type=ii \
      --workdir=/tmp/dip_ii_local
  # the sweep below (both types x lambda_od x seed), trained as populations:
  python -m vaelab.sweep --config=configs/dip_vae_dsprites.py:runlocal --workdir=/tmp/dip_sweep

The full config is the study's (Locatello et al. 2019; dlib's model_configs/shared.gin):
disentanglement_lib's conv encoder and deconv decoder (`model.encoder=dlib_conv`: 4x4, 4x4,
2x2, 2x2 stride-2 convolutions 32, 32, 64, 64, a 256-unit dense layer; dense 256 and 1024,
four 4x4 stride-2 transposed convolutions), Bernoulli pixels, 10 latents, batch 64,
Adam at 1e-4 with b1 = 0.9, b2 = 0.999 and epsilon 1e-8 (optax's default epsilon), 300k
steps. The objective is -ELBO + lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i
(C_ii - 1)^2, C the batch's covariance of the encoder means (`dip_type=i`) or of the
aggregate posterior (`ii`). The variants `dip_type=` and `lambda_od=` set the type and
lambda_od; lambda_d is left at -1, derived from them as the study ties it (10 * lambda_od
for i, lambda_od for ii; default: i, lambda_od = 10, lambda_d = 100, a point of dlib's
grid), so `--config.loss.dip_type=ii` or `--config.loss.lambda_od=20` on the command line
moves lambda_d with them; `--config.loss.lambda_d=V` (V >= 0) sets it explicitly.

`runlocal` is an MLP (512, 256) trunk for 4000 steps at lr 1e-3, a few CPU minutes on 2
cores, with a fifth of dlib's disentanglement sample sizes. metrics.jsonl logs train/dip
(the penalty), train/dip_offdiag and train/dip_diag; results.json has the VAE's metrics,
eval/dip_offdiag and eval/dip_diag of the evaluation set and the four disentanglement
scores.

`get_sweep` is dlib's grid for this model: for each type, lambda_od in (1, 2, 5, 10, 20,
50) with lambda_d derived as above, times seeds (0, 1) (the study ran 50 seeds per setting);
24 runs, the 12 of each type trained as populations (lambda_od and lambda_d are step
arguments; the type changes the step).
"""
from vaelab import config_base
from vaelab.models import dip_vae

LAMBDA_OD_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, dip_type="i", lambda_od=10.0)
  if arg.dip_type not in dip_vae.DIP_TYPES:
    raise ValueError(f"config variant dip_type={arg.dip_type!r}: expected one of "
                     f"{dip_vae.DIP_TYPES}")
  c = config_base.base_config()
  dip_vae.config_keys(c, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.model.encoder = "dlib_conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.dip_type = arg.dip_type
  c.loss.lambda_od = arg.lambda_od
  c.loss.lambda_d = dip_vae.DERIVED
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
  trials = []
  for dip_type in dip_vae.DIP_TYPES:
    trials += h.product(
        h.fixed("loss.dip_type", dip_type),
        h.sweep("loss.lambda_od", list(LAMBDA_OD_GRID)),
        h.sweep("seed", [0, 1]))
  return trials
