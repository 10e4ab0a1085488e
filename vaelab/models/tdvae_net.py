"""The TD-VAE's networks (Gregor et al., ICLR 2019); the family, its objective's wiring and its
evaluation are `vaelab.models.tdvae`.

The model:
  frame encoder  an MLP on each observation (a flattened frame, or the oscillator's 2 values)
  belief         b_t = LSTM over the encoded observations x_1..x_t (forward only: b_t never
                 sees a later frame)
  p_B(z_t | b_t)                      belief distribution
  p_T(z_t2 | z_t1, dt)                transition, dt = t2 - t1 an input (as dt / dt_scale,
                                      log dt and sinusoids of dt): mean (1 - g) * z_t1 + g * h,
                                      gate g and proposal h from an MLP (the paper's gated
                                      transition)
  q_S(z_t1 | z_t2, b_t1, b_t2)        smoothing posterior
  p_D(x_t | z_t)                      decoder, Bernoulli logits (frames) or Gaussian means
all diagonal Gaussians; with `model.layers` = 2 each z is two layers as in the paper: the top
layer is drawn first, the lower one conditioned on it (and the transition and smoothing of
each layer see the whole z of the other time step).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaelab.losses import reconstruction
from vaelab.losses import tdvae as tdvae_losses
from vaelab.losses.iwae import gaussian_log_density
from vaelab.models import nets

# Smallest standard deviation of every Gaussian: keeps the log-densities bounded.
_MIN_SCALE = 1e-3
_DT_PERIODS = 8  # sinusoidal features of dt


def _sample(keys, mean, logvar):
  eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))(keys)
  return mean + jnp.exp(0.5 * logvar) * eps


def fold_keys(keys, i: int):
  """Each per-example key folded with i: the draws of one part of the model."""
  return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)


def _logvar(raw):
  return 2.0 * jnp.log(nn.softplus(raw) + _MIN_SCALE)


class GaussianHead(nn.Module):
  """An MLP to the mean and log-variance of a diagonal Gaussian."""
  hidden: Sequence[int]
  out: int
  act: str

  @nn.compact
  def __call__(self, h):
    mean, raw = jnp.split(nets.MLP((*self.hidden, 2 * self.out), self.act)(h), 2, -1)
    return mean, _logvar(raw)


class GatedTransition(nn.Module):
  """p_T of one layer: mean (1 - g) * z_prev + g * h, with g, h and the scale from an MLP of
  the condition (the whole z_t1, the layers of z_t2 above, and dt)."""
  hidden: Sequence[int]
  out: int
  act: str

  @nn.compact
  def __call__(self, z_prev, cond):
    trunk = nets.activation(self.act)(nets.MLP(self.hidden, self.act)(cond))
    gate = nn.sigmoid(nn.Dense(self.out, name="gate")(trunk))
    proposal = nn.Dense(self.out, name="proposal")(trunk)
    raw = nn.Dense(self.out, name="scale")(trunk)
    return (1.0 - gate) * z_prev + gate * proposal, _logvar(raw)


class TDVAE(nn.Module):
  obs_shape: tuple  # one observation: (H, W, C) or (2,)
  frame_hidden: Sequence[int]
  belief_dim: int
  latent_dim: int
  layers: int
  hidden: Sequence[int]
  decoder_hidden: Sequence[int]
  act: str = "relu"
  likelihood: str = "bernoulli"
  obs_sigma: float = 1.0  # scale of the gaussian likelihood
  dt_scale: float = 4.0  # the largest trained jump, the scale of the dt features

  def setup(self):
    self.frame_encoder = nets.MLP(tuple(self.frame_hidden), self.act)
    self.lstm = nn.RNN(nn.OptimizedLSTMCell(self.belief_dim), name="belief_lstm")
    heads = lambda kind: [GaussianHead(tuple(self.hidden), self.latent_dim, self.act,
                                       name=f"{kind}_{l}") for l in range(self.layers)]
    self.belief_heads = heads("belief")
    self.smoothing_heads = heads("smoothing")
    self.transitions = [GatedTransition(tuple(self.hidden), self.latent_dim, self.act,
                                        name=f"transition_{l}") for l in range(self.layers)]
    self.decoder = nets.MLPDecoder(tuple(self.decoder_hidden), tuple(self.obs_shape), self.act)

  # b_t -------------------------------------------------------------------------------------
  def beliefs(self, x):
    """(B, T, *obs) -> (B, T, belief_dim); b_t depends on x_1..x_t only."""
    b, t = x.shape[:2]
    e = nets.activation(self.act)(self.frame_encoder(x.reshape(b * t, -1))).reshape(b, t, -1)
    # A zero initial state made from the data, not a constant: under the step's shard_map the
    # scan's carry must vary over devices like the data it is combined with.
    zero = jnp.broadcast_to(jnp.zeros_like(e[:, 0, :1]), (b, self.belief_dim))
    return self.lstm(e, initial_carry=(zero, zero))

  # The layered Gaussians: layer 0 is the top, drawn first; each lower layer sees the ones
  # above. `given` evaluates the log-density of a given z instead of sampling one.
  def _layered(self, dist, keys, given=None):
    zs, logp = [], 0.0
    for l in range(self.layers):
      mean, logvar = dist(l, jnp.concatenate(zs, -1) if zs else None)
      z = (given[..., l * self.latent_dim:(l + 1) * self.latent_dim] if given is not None
           else _sample(fold_keys(keys, l), mean, logvar))
      logp = logp + gaussian_log_density(z, mean, logvar)
      zs.append(z)
    return jnp.concatenate(zs, -1), logp

  @staticmethod
  def _cat(*parts):
    return jnp.concatenate([p for p in parts if p is not None], -1)

  def belief(self, b, keys=None, given=None):
    """z ~ p_B(. | b) (or the given z) and log p_B(z | b), (N,)."""
    return self._layered(lambda l, above: self.belief_heads[l](self._cat(b, above)), keys, given)

  def smoothing(self, z2, b1, b2, keys):
    return self._layered(
        lambda l, above: self.smoothing_heads[l](self._cat(z2, b1, b2, above)), keys)

  def _dt_features(self, dt):
    """dt / dt_scale, log dt, and sin and cos of 2 pi dt / p for periods p geometric from 2 to
    2 dt_scale: an MLP of a scalar dt alone hardly learns a transition that rotates a phase
    several times over the trained jumps (the oscillator's), these make it a linear read-out."""
    dt = jnp.asarray(dt, jnp.float32).reshape(-1, 1)
    periods = jnp.geomspace(2.0, 2.0 * max(self.dt_scale, 2.0), _DT_PERIODS)
    angle = 2 * jnp.pi * dt / periods
    return jnp.concatenate([dt / self.dt_scale, jnp.log(dt), jnp.sin(angle), jnp.cos(angle)], -1)

  def transition(self, z1, dt, keys=None, given=None):
    """z_t2 ~ p_T(. | z_t1, dt) (or the given z_t2) and its log-density; dt is (N,)."""
    d = self._dt_features(dt)
    d = jnp.broadcast_to(d, (z1.shape[0], d.shape[-1]))

    def dist(l, above):
      z_prev = z1[..., l * self.latent_dim:(l + 1) * self.latent_dim]
      return self.transitions[l](z_prev, self._cat(z1, above, d))
    return self._layered(dist, keys, given)

  def decode(self, z):
    return self.decoder(z)

  def encode(self, x):
    """The state after x (B, T, *obs): the mean of z ~ p_B(. | b_T), each layer's mean given
    the means of the layers above (what a rollout would start from, without its noise)."""
    b = self.beliefs(x)[:, -1]
    zs = []
    for l in range(self.layers):
      mean, _ = self.belief_heads[l](self._cat(b, jnp.concatenate(zs, -1) if zs else None))
      zs.append(mean)
    return jnp.concatenate(zs, -1)

  def decode_mean(self, z):
    return reconstruction.mean_image(self.likelihood, self.decoder(z))

  # The objective's terms -----------------------------------------------------------------
  def pair_terms(self, x, t1, t2, keys):
    """The five log-density terms of the TD-VAE bound for pairs (t1, t2), each (B, P).

    x: (B, T, *obs); t1, t2: (B, P) int with t1 < t2; keys: (B, P) one per pair.
    """
    bsz, p = t1.shape
    b = self.beliefs(x)
    rows = jnp.arange(bsz)[:, None]
    flat = lambda a: a.reshape(bsz * p, *a.shape[2:])
    b1, b2, x2 = flat(b[rows, t1]), flat(b[rows, t2]), flat(x[rows, t2])
    keys = keys.reshape(-1)
    z2, log_pb2 = self.belief(b2, fold_keys(keys, 0))
    z1, log_qs = self.smoothing(z2, b1, b2, fold_keys(keys, 1))
    _, log_pb1 = self.belief(b1, given=z1)
    _, log_pt = self.transition(z1, flat(t2 - t1), given=z2)
    # The decoder's log-likelihood is the negated reconstruction term of the shared helper.
    log_pd = -reconstruction.nll(self.likelihood, self.decode(z2), x2, self.obs_sigma)
    terms = dict(zip(tdvae_losses.TERMS, (log_pd, log_pb1, log_pt, log_pb2, log_qs)))
    return {k: v.reshape(bsz, p) for k, v in terms.items()}

  def __call__(self, x, keys):
    """The terms of the pair (0, 1) of each sequence: touches every parameter (for init)."""
    zeros = jnp.zeros((x.shape[0], 1), jnp.int32)
    return self.pair_terms(x, zeros, zeros + 1, keys[:, None])

  # Rollouts --------------------------------------------------------------------------------
  def rollout(self, context, keys, jumps: tuple, step: int = 1):
    """Predictions after the context (B, C, *obs) from one z ~ p_B(. | b_C) per sequence.

    Returns (jumpy, iterated): jumpy (B, len(jumps), *obs) decodes z_{C+J} ~ p_T(. | z_C, J)
    for each J in `jumps`; iterated (B, n, *obs) decodes the states after 1..n jumps of
    `step` (n = max(jumps) // step). Decoder means of single samples, never averages.
    """
    bsz = context.shape[0]
    b = self.beliefs(context)[:, -1]
    z, _ = self.belief(b, fold_keys(keys, 0))
    nj = len(jumps)
    # All jumps at once: the state repeated per jump, one transition call.
    zj = jnp.repeat(z, nj, axis=0)
    dt = jnp.tile(jnp.asarray(jumps, jnp.float32), bsz)
    jump_keys = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(
        jnp.arange(nj)))(fold_keys(keys, 1)).reshape(-1)
    zj, _ = self.transition(zj, dt, jump_keys)
    jumpy = self.decode_mean(zj).reshape(bsz, nj, *self.obs_shape)
    iterated, cur = [], z
    for i in range(max(jumps) // step):
      cur, _ = self.transition(cur, jnp.full((bsz,), float(step)), fold_keys(keys, 2 + i))
      iterated.append(self.decode_mean(cur))
    iterated = jnp.stack(iterated, 1) if iterated else jnp.zeros((bsz, 0, *self.obs_shape))
    return jumpy, iterated
