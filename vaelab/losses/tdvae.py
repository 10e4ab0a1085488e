"""The TD-VAE objective (Gregor et al., ICLR 2019) and its rollout scores.

For a pair of time steps t1 < t2 of a sequence with beliefs b_t (a forward LSTM over the
observations up to t), with z_t2 ~ p_B(. | b_t2) and z_t1 ~ q_S(. | z_t2, b_t1, b_t2):

  L = log p_D(x_t2 | z_t2) + log p_B(z_t1 | b_t1) + log p_T(z_t2 | z_t1, t2 - t1)
      - log p_B(z_t2 | b_t2) - log q_S(z_t1 | z_t2, b_t1, b_t2)

a single-sample estimate of a lower bound on log p(x_t2 | x_<=t1) (paper eq. 8). The loss is
-L averaged over `loss.num_pairs` pairs per sequence and over the batch. The Gaussian
log-densities are `losses.iwae.gaussian_log_density`; the decoder's term is
`losses.reconstruction.nll`.

Pairs: the jump t2 - t1 is uniform on [1, max_jump], or with probability `long_prob` uniform
on [1, long_jump] (the paper's oscillator: [1, 10] w.p. 0.8, [1, 120] w.p. 0.2); t1 is then
uniform over the positions that leave room for the jump. Every number is an array, so that it
can enter the step as a hyperparameter.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_jumps(key, num: int, max_jump, long_jump, long_prob):
  """(num,) int32 jumps: uniform on [1, max_jump], or w.p. long_prob on [1, long_jump]."""
  k_long, k_short, k_far = jax.random.split(key, 3)
  short = jax.random.randint(k_short, (num,), 1, jnp.asarray(max_jump, jnp.int32) + 1)
  far = jax.random.randint(k_far, (num,), 1, jnp.asarray(long_jump, jnp.int32) + 1)
  return jnp.where(jax.random.bernoulli(k_long, long_prob, (num,)), far, short)


def sample_pairs(key, seq_len: int, num: int, max_jump, long_jump=1, long_prob=0.0):
  """(t1, t2), each (num,) int32, with 0 <= t1 < t2 <= seq_len - 1.

  Jumps are capped at seq_len - 1 (validation refuses configs whose jumps do not fit).
  """
  k_jump, k_start = jax.random.split(key)
  jump = jnp.minimum(sample_jumps(k_jump, num, max_jump, long_jump, long_prob), seq_len - 1)
  # t1 uniform on [0, seq_len - 1 - jump]: floor(u * (seq_len - jump)).
  u = jax.random.uniform(k_start, (num,))
  t1 = jnp.minimum(jnp.floor(u * (seq_len - jump)).astype(jnp.int32), seq_len - 1 - jump)
  return t1, t1 + jump


def pair_elbo(terms: dict):
  """L of each pair from its five log-density terms (the keys of `TERMS`)."""
  return (terms["log_p_decoder"] + terms["log_p_belief_t1"] + terms["log_p_transition"]
          - terms["log_p_belief_t2"] - terms["log_q_smoothing"])


TERMS = ("log_p_decoder", "log_p_belief_t1", "log_p_transition", "log_p_belief_t2",
         "log_q_smoothing")


def tdvae_loss(terms: dict):
  """-L averaged over pairs and sequences, and the per-sequence L (averaged over its pairs)."""
  elbo = pair_elbo(terms).mean(-1)
  return -elbo.mean(), elbo


def frame_mse(pred, truth):
  """Mean squared error of each predicted frame over its pixels (or coordinates), (B,)."""
  return jnp.square(pred - truth).reshape(pred.shape[0], -1).mean(-1)


def direction_correct(pred, last, direction, jump: int, axis: int = 2):
  """1.0 where `pred` is closer in squared error to the last frame rolled `jump` pixels in
  the true `direction` (+1: right) along `axis` of a (B, H, W, C) frame than to it rolled the
  other way, 0.0 where farther, 0.5 on a tie (a prediction symmetric in the two directions
  is at chance). (B,)"""
  right, left = jnp.roll(last, jump, axis=axis), jnp.roll(last, -jump, axis=axis)
  forward = jnp.where(direction.reshape(-1, 1, 1, 1) > 0, right, left)
  backward = jnp.where(direction.reshape(-1, 1, 1, 1) > 0, left, right)
  to_forward, to_backward = frame_mse(pred, forward), frame_mse(pred, backward)
  # Equal up to float rounding (relative 1e-5) is a tie.
  tie = jnp.abs(to_forward - to_backward) <= 1e-5 * (to_forward + to_backward)
  return jnp.where(tie, 0.5, jnp.where(to_forward < to_backward, 1.0, 0.0))
