"""The KL term of a Gaussian-posterior VAE decomposed over a batch (Chen et al. 2018,
"Isolating Sources of Disentanglement in Variational Autoencoders").

With q(z) = (1/N) sum_n q(z | x_n) the aggregate posterior of a training set of N examples
and z_j ~ q(z | x_j), each example's Monte Carlo KL splits into three terms:

  log q(z_j | x_j) - log p(z_j)
    =  [log q(z_j | x_j) - log q(z_j)]                      index-code mutual information
     + [log q(z_j) - sum_l log q(z_jl)]                     total correlation
     + [sum_l log q(z_jl) - log p(z_jl)]                    dimension-wise KL

q(z_j) and its marginals q(z_jl) are estimated from the batch's posteriors,
log q(z_j) ~ logsumexp_i [log q(z_j | x_i) + log w_ji], with the weights w of

  mws  minibatch-weighted sampling: w_ji = 1 / (N B) for every i, Chen et al.'s
       log(N B) normalizer (disentanglement_lib's beta-TCVAE trains with this estimator,
       less the constant (D - 1) log(N B) it leaves out of the TC, which moves no
       gradient). A row's weights sum to 1/N, not one: beside an estimator whose weights
       sum to one (mss), log q(z) reads about log N lower and sum_l log q(z_l) about
       D log N lower, so mi reads about log N higher, tc (D - 1) log N higher and dwkl
       D log N lower (dSprites: log N ~ 13.5 nats);
  mss  minibatch stratified sampling: w_jj = 1/N for the example's own posterior,
       w_ji = (N - M) / (N M) for one other example (i = j + 1 mod B), and 1/M for the
       remaining M - 1, with M = B - 1; each row sums to one. (The weight matrix of Chen
       et al.'s published code strides its flattened view by the row length, which puts
       1/N and the stratum weight in the first two columns of every row instead of on
       the example's own posterior and its neighbour's: these are the weights it means.)

Every term is summed over the GLOBAL batch (`vaelab.spmd.global_gather`): the estimate of
q(z) on one device's shard would be another estimator on every device count. Each device
scores its own rows against all B posteriors, (B/devices, B, D) values, and the means go
through `spmd.global_mean`.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import logsumexp

from vaelab import spmd

ESTIMATORS = ("mws", "mss")
_LOG_2PI = math.log(2 * math.pi)


def log_density(z, mean, logvar):
  """log N(z; mean, exp(logvar)) of each coordinate (no sum), broadcasting."""
  return -0.5 * (_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar))


def log_weights(estimator: str, rows, batch: int, num_examples: int):
  """log w_ji (module docstring) of rows `rows` (their positions in the batch) against all
  `batch` columns: (len(rows), batch)."""
  n = float(num_examples)
  if estimator == "mws":
    return jnp.full((rows.shape[0], batch), -math.log(n * batch), jnp.float32)
  if estimator != "mss":
    raise ValueError(f"loss.tc_estimator={estimator!r}: expected one of {ESTIMATORS}")
  m = batch - 1
  cols = jnp.arange(batch)[None, :]
  own = cols == rows[:, None]
  stratum = cols == (rows[:, None] + 1) % batch
  # With B = 2 the stratum is the only other example and 1/M is never used.
  return jnp.where(own, -math.log(n),
                   jnp.where(stratum, math.log((n - m) / (n * m)), -math.log(m)))


def decomposition(z, mean, logvar, z_all, mean_all, logvar_all, rows, num_examples: int,
                  estimator: str):
  """Per-example (mi, tc, dwkl), each (b,), of the b examples (z, mean, logvar) at positions
  `rows` of the batch (z_all, mean_all, logvar_all), (B, D) each. mi + tc + dwkl is
  log q(z|x) - log p(z), the sampled KL."""
  # [j, i, l] = log q(z_jl | x_i)
  cond = log_density(z[:, None, :], mean_all[None], logvar_all[None])
  w = log_weights(estimator, rows, z_all.shape[0], num_examples)
  log_qz = logsumexp(cond.sum(-1) + w, axis=1)
  log_qz_dims = logsumexp(cond + w[:, :, None], axis=1).sum(-1)
  log_qz_x = log_density(z, mean, logvar).sum(-1)
  log_pz = log_density(z, 0.0, 0.0).sum(-1)
  return log_qz_x - log_qz, log_qz - log_qz_dims, log_qz_dims - log_pz


def _batch_rows(local: int, total: int):
  """This device's rows' positions in the global batch; all rows outside the step."""
  try:
    return spmd.local_rows(total)
  except NameError:
    return jnp.arange(local, dtype=jnp.int32)


def global_decomposition(z, mean, logvar, num_examples: int, estimator: str):
  """(mi, tc, dwkl): means over the global batch of `decomposition`, from one device's
  shard (B_local, D) of samples and posterior parameters."""
  z_all, mean_all, logvar_all = (spmd.global_gather(a) for a in (z, mean, logvar))
  rows = _batch_rows(z.shape[0], z_all.shape[0])
  terms = decomposition(z, mean, logvar, z_all, mean_all, logvar_all, rows, num_examples,
                        estimator)
  return tuple(spmd.global_mean(t.mean()) for t in terms)


def beta_tcvae_loss(nll, kl, tc, beta):
  """Batch mean of -ELBO + (beta - 1) * TC (disentanglement_lib's form, with the analytic
  KL): Chen et al.'s -log p(x|z) + MI + beta TC + DWKL with its sampled KL replaced by the
  closed form, whose expectation it is. `tc` is the global batch's estimate; `beta` an
  array, so a population of betas shares one compiled step."""
  return (nll + kl).mean() + (beta - 1.0) * tc
