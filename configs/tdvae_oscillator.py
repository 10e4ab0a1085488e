"""TD-VAE (Gregor et al. 2019) on a noisy harmonic oscillator (the paper's 1-D experiment):
length-200 sequences of noisy (position, velocity / omega), jumps t2 - t1 uniform on [1, 10]
with probability 0.8 and on [1, 120] with probability 0.2.

  python -m vaelab.main --config=configs/tdvae_oscillator.py --workdir=/tmp/tdvae_oscillator

results.json: eval/elbo (nats per pair), eval/rollout_mse_j{J} of the values predicted J steps
after a 50-step context (one jump of J; eval/rollout_mse_iter_j{J}: repeated jumps of 10)
beside the last-value and mean baselines; rollouts.png draws predicted trajectories over the
true ones.
"""
from vaelab import config_base
from vaelab.models import tdvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  tdvae.config_keys(c, "oscillator")
  c.data.seq_len = 200
  c.data.num_eval = 1000
  c.model.frame_hidden = (32,)
  c.model.belief_dim = 32
  c.model.latent_dim = 8
  c.model.hidden = (64,)
  c.model.decoder_hidden = (32,)
  c.model.likelihood = "gaussian"
  c.model.obs_sigma = 0.1
  c.loss.num_pairs = 8
  c.loss.max_jump = 10
  c.loss.long_jump = 120
  c.loss.long_jump_prob = 0.2
  c.eval.context = 50
  c.eval.jumps = (1, 2, 5, 10, 20, 50, 100)
  c.eval.rollout_step = 10
  c.batch_size = 64
  c.num_train_steps = 5000
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.optimizer.learning_rate = 1e-3
  c.eval.batch_size = 500
  if arg.runlocal:
    c.num_train_steps = 1000  # about a minute of training on a 2-core CPU
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 500
    c.data.num_eval = 100
    c.eval.batch_size = 50
  return c
