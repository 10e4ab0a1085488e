"""TD-VAE (Gregor et al. 2019) on moving digits: 20 frames, a digit moving one pixel per step
left or right with wrap-around from a random offset; jumps of 1 to 4 steps.

  python -m vaelab.main --config=configs/tdvae_moving_digits.py --workdir=/tmp/tdvae_digits
  # real digits from npz image files (any (N, 28, 28[, 1]) set; TFDS mnist works too):
  python -m vaelab.main --config=configs/tdvae_moving_digits.py --workdir=/tmp/tdvae_digits \
      --config.data.train_path=train.npz --config.data.eval_path=test.npz
  # (data.name=npz with the same paths builds the same sequences)

Without paths the digits are procedural glyphs (offline). results.json: eval/elbo (nats per
pair), eval/rollout_mse(_j1..4) of the frames predicted 1-4 steps after a 10-frame context
beside eval/rollout_mse_last_frame and eval/rollout_mse_mean_frame, and
eval/rollout_direction_accuracy (0.5 = blind to the direction of motion); rollouts.png.
"""
from vaelab import config_base
from vaelab.models import tdvae


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False)
  c = config_base.base_config()
  tdvae.config_keys(c, "moving_digits")
  c.batch_size = 64
  c.num_train_steps = 3000
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
