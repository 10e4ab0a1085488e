"""Temporal-difference VAE (Gregor et al., ICLR 2019): belief states, jumpy predictions, rollouts.

The networks (frame encoder, belief LSTM, belief, transition, smoothing and decoder
distributions) are `vaelab.models.tdvae_net`.

The objective is `vaelab.losses.tdvae`; the train step and loop are the shared ones. Pairs
(t1, t2) are drawn inside the loss from the per-example keys.

Rollouts: the belief after `eval.context` frames, one sample z ~ p_B, then the transition
with dt = J for each J in `eval.jumps` (jumpy), or repeated jumps of `eval.rollout_step`
(iterated), each state decoded to its decoder mean. Scores are of single rollouts, never of
an average of many (an average is a blur that hides a transition that learned nothing):
  eval/rollout_mse_j{J}, eval/rollout_mse (mean over J): mean squared error per frame value
  eval/rollout_mse_iter_j{J}: the same for the iterated rollout
  eval/rollout_direction_accuracy(_j{J}) (moving digits): fraction of sequences whose
      prediction is closer to the last context frame shifted J pixels in the true direction
      than to it shifted J pixels the other way (0.5: blind to the direction)
  eval/rollout_mse_last_frame(_j{J}), eval/rollout_mse_mean_frame(_j{J}): baselines scored
      the same way (repeat the last context frame; the mean training frame)
  eval/elbo: L per pair, nats.
"""
from __future__ import annotations

import jax
import numpy as np

from vaelab import checks
from vaelab.errors import ConfigError
from vaelab.evaluate import rollout_pictures
from vaelab.losses import reconstruction
from vaelab.losses import tdvae as tdvae_losses
from vaelab.models import nets
from vaelab.models.base import Family, method
from vaelab.models.tdvae_net import TDVAE, fold_keys

# The bound on log p(x_t2 | x_<=t1) needs a normalized density.
LIKELIHOODS = reconstruction.DENSITIES
LAYERS = (1, 2)


def config_keys(c, data: str = "moving_digits") -> None:
  """The keys of the TD-VAE family (replacing the image trunk keys it does not read)."""
  c.model.name = "tdvae"
  c.model.frame_hidden = (256,)  # MLP on each observation before the LSTM (last layer too)
  c.model.belief_dim = 128  # LSTM state
  c.model.latent_dim = 32  # per layer
  c.model.layers = 1  # 1 | 2 (the paper's hierarchical z)
  c.model.hidden = (256,)  # MLPs of p_B, q_S and p_T
  c.model.decoder_hidden = (256, 512)
  c.model.activation = "relu"
  c.model.likelihood = "bernoulli"  # bernoulli | gaussian (losses/reconstruction.py)
  c.model.obs_sigma = 1.0  # scale of the gaussian likelihood
  for key in ("encoder", "conv_channels", "dense"):
    del c.model[key]
  c.loss.num_pairs = 4  # (t1, t2) pairs per sequence and step
  c.loss.max_jump = 4  # t2 - t1 uniform on [1, max_jump] ...
  c.loss.long_jump = 4  # ... or, with probability long_jump_prob, on [1, long_jump]
  c.loss.long_jump_prob = 0.0
  c.data.name = data
  c.data.seq_len = 20
  c.data.num_train = 60000  # training sequences (an epoch)
  c.data.num_eval = 1000
  c.eval.context = 10  # frames the belief sees before a rollout
  c.eval.jumps = (1, 2, 3, 4)  # jumps scored and drawn
  c.eval.rollout_step = 1  # the jump repeated by the iterated rollout
  c.eval.num_pictures = 8  # sequences in the rollout picture
  if data == "oscillator":
    c.data.period = 23.0  # steps per cycle (no eval horizon is a multiple of it)
    c.data.obs_noise = 0.1
    c.data.phase_noise = 0.02  # per-step std of the phase (radians)


# --- the family -----------------------------------------------------------------------------

def largest_jump(config) -> int:
  """The largest t2 - t1 the objective draws."""
  l = config.loss
  return max(int(l.max_jump), int(l.long_jump) if float(l.long_jump_prob) > 0 else 0)


def make_model(config, info):
  m = config.model
  seq_len, *obs_shape = info.image_shape
  check_lengths(config, seq_len, "the data")
  return TDVAE(tuple(obs_shape), tuple(int(h) for h in m.frame_hidden), int(m.belief_dim),
               int(m.latent_dim), int(m.layers), tuple(int(h) for h in m.hidden),
               tuple(int(h) for h in m.decoder_hidden), m.activation, m.likelihood,
               float(m.obs_sigma), float(largest_jump(config)))


def _pairs(config, keys, seq_len: int, hparams):
  """(t1, t2), each (B, P), and per-pair keys (B, P), from the per-example keys."""
  num = int(config.loss.num_pairs)

  def one(key):
    t1, t2 = tdvae_losses.sample_pairs(jax.random.fold_in(key, 0), seq_len, num,
                                       hparams["max_jump"], hparams["long_jump"],
                                       hparams["long_jump_prob"])
    return t1, t2, jax.random.split(jax.random.fold_in(key, 1), num)
  return jax.vmap(one)(keys)


def make_loss(config, info=None):
  def loss(model, params, model_state, batch, keys, hparams):
    variables = {"params": params, **model_state}
    x = batch["image"]
    t1, t2, pair_keys = _pairs(config, keys, x.shape[1], hparams)
    terms = model.apply(variables, x, t1, t2, pair_keys, method=TDVAE.pair_terms)
    value, elbo = tdvae_losses.tdvae_loss(terms)
    metrics = {"elbo": elbo.mean(), "recon": -terms["log_p_decoder"].mean(),
               # The two KL-like terms of the bound, single-sample estimates.
               "kl_transition": (terms["log_p_belief_t2"] - terms["log_p_transition"]).mean(),
               "kl_smoothing": (terms["log_q_smoothing"] - terms["log_p_belief_t1"]).mean()}
    return value, (metrics, model_state)

  return loss


def make_eval_metrics(config):
  context, step = int(config.eval.context), int(config.eval.rollout_step)
  jumps = tuple(int(j) for j in config.eval.jumps)

  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    truth = batch.get("image_raw", x)
    t1, t2, pair_keys = _pairs(config, fold_keys(keys, 0), x.shape[1], hparams)
    terms = model.apply(variables, x, t1, t2, pair_keys, method=TDVAE.pair_terms)
    _, elbo = tdvae_losses.tdvae_loss(terms)
    out = {"elbo": elbo, "loss": -elbo, "recon": -terms["log_p_decoder"].mean(-1)}
    jumpy, iterated = model.apply(variables, x[:, :context], fold_keys(keys, 1), jumps, step,
                                  method=TDVAE.rollout)
    last = truth[:, context - 1]
    for i, j in enumerate(jumps):
      out[f"rollout_mse_j{j}"] = tdvae_losses.frame_mse(jumpy[:, i], truth[:, context - 1 + j])
      if j % step == 0:
        out[f"rollout_mse_iter_j{j}"] = tdvae_losses.frame_mse(
            iterated[:, j // step - 1], truth[:, context - 1 + j])
      # Frames (H, W, C) that move along W: the moving digits.
      if "direction" in batch and x.ndim == 5:
        out[f"rollout_direction_accuracy_j{j}"] = tdvae_losses.direction_correct(
            jumpy[:, i], last, batch["direction"], j)
    out["rollout_mse"] = sum(out[f"rollout_mse_j{j}"] for j in jumps) / len(jumps)
    if f"rollout_direction_accuracy_j{jumps[0]}" in out:
      out["rollout_direction_accuracy"] = sum(
          out[f"rollout_direction_accuracy_j{j}"] for j in jumps) / len(jumps)
    return out

  return eval_metrics


def final_baselines(config, train_source, eval_source):
  """eval/rollout_mse_last_frame(_j{J}) and eval/rollout_mse_mean_frame(_j{J}): the same frames
  as the rollouts, predicted by the last context frame and by the mean training frame."""
  context = int(config.eval.context)
  jumps = tuple(int(j) for j in config.eval.jumps)
  rng = np.random.default_rng(0)
  n = min(len(train_source), 2000)
  idx = np.sort(rng.choice(len(train_source), n, replace=False))
  mean_frame = sum(train_source.get(idx[i:i + 250])["image"].sum((0, 1))
                   for i in range(0, n, 250)) / (n * train_source.info.image_shape[0])
  sums = {f"{kind}_j{j}": 0.0 for kind in ("last_frame", "mean_frame") for j in jumps}
  for start in range(0, len(eval_source), 250):
    x = eval_source.get(np.arange(start, min(start + 250, len(eval_source))))["image"]
    b = len(x)
    for j in jumps:
      truth = x[:, context - 1 + j].reshape(b, -1)
      sums[f"last_frame_j{j}"] += np.square(truth - x[:, context - 1].reshape(b, -1)).mean(1).sum()
      sums[f"mean_frame_j{j}"] += np.square(truth - mean_frame.reshape(1, -1)).mean(1).sum()
  out = {f"eval/rollout_mse_{k}": float(v) / len(eval_source) for k, v in sums.items()}
  for kind in ("last_frame", "mean_frame"):
    out[f"eval/rollout_mse_{kind}"] = float(np.mean([out[f"eval/rollout_mse_{kind}_j{j}"]
                                                     for j in jumps]))
  return out


def hparams(config):
  l = config.loss
  return {"max_jump": float(l.max_jump), "long_jump": float(l.long_jump),
          "long_jump_prob": float(l.long_jump_prob)}


def transform_sources(config, train_source, eval_source):
  """Digit images (npz, TFDS mnist, ...) become moving-digit sequences; sequences pass."""
  if len(train_source.info.image_shape) == 3:
    from vaelab.data import sequences as seq
    t = int(config.data.seq_len)
    train_source = seq.MovingDigits(train_source, int(config.data.num_train), t,
                                    seq.TRAIN_SEED, f"moving_digits({train_source.name})")
    eval_source = seq.MovingDigits(eval_source, int(config.data.num_eval), t, seq.EVAL_SEED,
                                   f"moving_digits({eval_source.name})")
  check_lengths(config, train_source.info.image_shape[0], train_source.name)
  return train_source, eval_source


def check_lengths(config, seq_len: int, source: str | None = None) -> None:
  """Sequences must hold the largest trained jump, and the context plus the largest rollout.

  `source` names data whose sequences have `seq_len` steps; None: the length is data.seq_len.
  """
  l, e = config.loss, config.eval
  have = (f"data.seq_len={seq_len}" if source is None
          else f"the sequences of {source} have {seq_len} steps")
  if seq_len < 2:
    raise ConfigError(f"{have}: TD-VAE needs sequences of at least 2 steps")
  jump = largest_jump(config)
  key = "loss.max_jump" if jump == int(l.max_jump) else "loss.long_jump"
  if jump > seq_len - 1:
    raise ConfigError(f"{key}={jump}: a jump of {jump} steps needs sequences of at least "
                      f"{jump + 1} steps, but {have}; use {key} <= {seq_len - 1} or longer "
                      f"sequences")
  context, far = int(e.context), max(int(j) for j in e.jumps)
  if context + far > seq_len:
    raise ConfigError(f"eval.context={context}: a context of {context} steps followed by "
                      f"rollouts of up to {far} steps (eval.jumps) needs sequences of "
                      f"{context + far} steps, but {have}; use eval.context <= "
                      f"{max(seq_len - far, 0)} or shorter eval.jumps")


def _int_tuple(value, key: str):
  if not isinstance(value, (tuple, list)) or not value:
    raise ConfigError(f"{key}={value!r}: must be a non-empty tuple of integers >= 1")
  for v in value:
    checks.integer(v, f"{key} (entry {v!r})", 1)


def validate(config):
  m, l, e, d = config.model, config.loss, config.eval, config.data
  for key in ("frame_hidden", "hidden", "decoder_hidden"):
    _int_tuple(m[key], f"model.{key}")
  for key in ("belief_dim", "latent_dim"):
    checks.integer(m[key], f"model.{key}", 1)
  checks.integer(m.layers, "model.layers", min(LAYERS), max(LAYERS))
  if m.activation not in nets.ACTIVATIONS:
    raise ConfigError(f"model.activation={m.activation!r}: expected one of "
                      f"{tuple(nets.ACTIVATIONS)}")
  reconstruction.validate(m.likelihood, LIKELIHOODS, m.name)
  if not float(m.obs_sigma) > 0:
    raise ConfigError(f"model.obs_sigma={m.obs_sigma}: must be > 0")
  for key in ("num_pairs", "max_jump", "long_jump"):
    checks.integer(l[key], f"loss.{key}", 1)
  if not 0.0 <= float(l.long_jump_prob) <= 1.0:
    raise ConfigError(f"loss.long_jump_prob={l.long_jump_prob}: must lie in [0, 1]")
  if "seq_len" not in d:
    raise ConfigError("data.seq_len is missing: TD-VAE needs the sequence keys of "
                      "configs/tdvae_*.py")
  checks.integer(d.seq_len, "data.seq_len", 2)
  checks.integer(d.num_train, "data.num_train", 1)
  checks.integer(e.context, "eval.context", 1)
  _int_tuple(e.jumps, "eval.jumps")
  checks.integer(e.rollout_step, "eval.rollout_step", 1)
  if d.name == "oscillator":
    if not float(d.period) > 0:
      raise ConfigError(f"data.period={d.period}: must be > 0")
    for key in ("obs_noise", "phase_noise"):
      if not float(d[key]) >= 0:
        raise ConfigError(f"data.{key}={d[key]}: must be >= 0")
  check_lengths(config, int(d.seq_len))


FAMILY = Family(
    name="tdvae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    hparams=hparams,
    validate=validate,
    final_baselines=final_baselines,
    pictures=rollout_pictures.save_rollout_pictures,
    transform_sources=transform_sources,
    encode=method("encode"),
    decode=method("decode_mean"),
    options={"model.likelihood": LIKELIHOODS},
)
