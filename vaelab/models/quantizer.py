"""Vector quantizer (van den Oord et al. 2017) shared by VQ-VAE and VQ-VAE-2.

A codebook of K vectors of size D; each encoder output is replaced by its nearest code.
With `ema_decay` = 0 the codebook is a parameter learned through the codebook loss
||sg(z_e) - e||^2 (losses/vq.py). With `ema_decay` = gamma > 0 it is state (the "vq"
variable collection) updated by exponential moving averages in Sonnet's form:

  N_i <- gamma N_i + (1 - gamma) n_i          n_i: vectors assigned to code i
  m_i <- gamma m_i + (1 - gamma) sum_j z_ij   sum of the vectors assigned to i
  N~_i = (N_i + eps) / (n + K eps) * n        Laplace smoothing, n = sum_i N_i
  e_i  = m_i / N~_i

N and m start at 1 and e: each code counts as having seen one vector, itself, so a code
no batch uses yet keeps its initial value (m/N = e) instead of collapsing to 0 or blowing
up, and the pseudo-count is negligible once real counts (thousands per step) arrive.

Devices. The update uses the statistics of the global batch: n_i and sum_j z_ij are
`lax.psum`med over the mesh axis `axis_name` before the update, so every device computes
the same codebook from the same numbers (and a run on 4 devices matches one on 1). The
psum needs the axis to be bound, which it is only inside the train step's shard_map; init,
evaluation and code extraction run outside it. So `axis_name` is a module field that is
None by default (no collective) and that the loss sets with `model.clone(axis_name=...)`
just for the call inside the step: the place that knows about the mesh says so, and the
module never has to guess whether an axis exists.

The update runs when, and only when, the "vq" collection is mutable in `apply` (the loss
passes mutable=["vq"]; evaluation does not), like Flax's BatchNorm statistics.

Options of the EMA codebook (they overwrite codes, so they need the codebook to be state):
  dead_code_steps > 0: a code assigned no vector of the global batch for that many
    consecutive steps is re-initialised from an encoder output of the current global batch
    (rows drawn with a key derived from the step's first example key, so the choice is the
    same on every device and for any device count);
  kmeans_init: the first update replaces the initial codebook by k-means centroids of the
    first global batch (Lloyd's algorithm, KMEANS_ITERS iterations, seeded the same way).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

COLLECTION = "vq"
KMEANS_ITERS = 10
# Streams folded into the step's first example key, apart from any other use of it.
_RESTART_STREAM, _KMEANS_STREAM = 1, 2


def squared_distances(z, codebook):
  """(N, D), (K, D) -> (N, K) squared distances ||z||^2 - 2 z.e + ||e||^2.

  One matmul: memory O(N K), where the direct form z[:, None] - e[None] builds N x K x D.
  """
  z2 = jnp.sum(jnp.square(z), axis=1, keepdims=True)
  e2 = jnp.sum(jnp.square(codebook), axis=1)
  return z2 - 2.0 * z @ codebook.T + e2[None, :]


def nearest_codes(z, codebook):
  """(N, D), (K, D) -> int32 (N,) index of each row's nearest code (first one on ties)."""
  return jnp.argmin(squared_distances(z, codebook), axis=1).astype(jnp.int32)


def straight_through(z_e, z_q):
  """The decoder's input z_e + sg(z_q - z_e): its value is z_q, its gradient is that of z_e.

  The nearest-code lookup has no useful gradient (argmin is piecewise constant), so the
  decoder's gradient at z_q is passed to the encoder unchanged; the codebook gets its
  signal from the codebook loss or the EMA update instead.
  """
  return z_e + lax.stop_gradient(z_q - z_e)


def perplexity(counts):
  """exp(entropy) of the code-usage distribution `counts` (K,): K when uniform, 1 when a
  single code is used (0 log 0 = 0)."""
  counts = jnp.asarray(counts, jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def ema_update(cluster_size, embed_sum, counts, sums, decay, epsilon):
  """One EMA step (module docstring): returns (N, m, codebook e)."""
  cluster_size = decay * cluster_size + (1 - decay) * counts
  embed_sum = decay * embed_sum + (1 - decay) * sums
  n = jnp.sum(cluster_size)
  smoothed = (cluster_size + epsilon) / (n + cluster_size.shape[0] * epsilon) * n
  return cluster_size, embed_sum, embed_sum / smoothed[:, None]


def kmeans(key, z, k: int, iters: int = KMEANS_ITERS):
  """Lloyd's algorithm on the rows of z (N, D) from k rows drawn by `key`; a centroid that
  loses all its points keeps its place."""
  n = z.shape[0]
  start = z[jax.random.choice(key, n, (k,), replace=n < k)]

  def step(_, centroids):
    onehot = jax.nn.one_hot(nearest_codes(z, centroids), k, dtype=z.dtype)
    counts = onehot.sum(0)
    means = (onehot.T @ z) / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, means, centroids)

  return lax.fori_loop(0, iters, step, start)


class VectorQuantizer(nn.Module):
  num_codes: int
  code_dim: int
  ema_decay: float = 0.99  # 0: codebook learned by gradient (a param), not by EMA
  epsilon: float = 1e-5
  dead_code_steps: int = 0
  kmeans_init: bool = False
  # The mesh axis to psum statistics over; set only for the call inside the train step.
  axis_name: str | None = None

  @property
  def ema(self) -> bool:
    return self.ema_decay > 0

  def setup(self):
    k, d = self.num_codes, self.code_dim
    init = lambda key: jax.random.normal(key, (k, d), jnp.float32)
    if not self.ema:
      self.codebook = self.param("codebook", init)
      return
    codebook = self.variable(COLLECTION, "codebook", lambda: init(self.make_rng("params")))
    self.codebook_var = codebook
    self.cluster_size = self.variable(COLLECTION, "cluster_size", jnp.ones, (k,), jnp.float32)
    self.embed_sum = self.variable(COLLECTION, "embed_sum", lambda: jnp.copy(codebook.value))
    if self.dead_code_steps > 0:
      self.unused_steps = self.variable(COLLECTION, "unused_steps", jnp.zeros, (k,), jnp.int32)
    if self.kmeans_init:
      self.initialized = self.variable(COLLECTION, "initialized", jnp.zeros, (), jnp.int32)

  def embeddings(self):
    """The current codebook (K, D)."""
    return self.codebook_var.value if self.ema else self.codebook

  def lookup(self, indices):
    """Code vectors of an integer array of indices: (...) -> (..., D)."""
    return jnp.take(self.embeddings(), indices, axis=0)

  def __call__(self, z_e, keys=None):
    """z_e (..., D) -> dict:
      quantized: the straight-through decoder input (value z_q, gradient to z_e)
      z_e:       the input, for the commitment loss
      z_q:       the nearest codes (..., D), from the codebook before this call's update
      indices:   int32 (...)
      counts:    (K,) uses of each code in the batch (global batch inside the train step)
    With a mutable "vq" collection, also updates the EMA codebook (module docstring);
    `keys` (per-example PRNG keys) are then needed for dead-code restarts and k-means."""
    update = self.ema and self.is_mutable_collection(COLLECTION) and not self.is_initializing()
    flat = z_e.reshape(-1, self.code_dim)
    if update and self.kmeans_init:
      self._kmeans_once(lax.stop_gradient(flat), keys)
    codebook = self.embeddings()
    idx = nearest_codes(flat, codebook)
    onehot = jax.nn.one_hot(idx, self.num_codes, dtype=flat.dtype)
    counts = self._psum(onehot.sum(0))
    if update:
      sums = self._psum(onehot.T @ lax.stop_gradient(flat))
      self._ema_step(counts, sums, lax.stop_gradient(flat), keys)
    z_q = jnp.take(codebook, idx, axis=0).reshape(z_e.shape)
    return {"quantized": straight_through(z_e, z_q), "z_e": z_e, "z_q": z_q,
            "indices": idx.reshape(z_e.shape[:-1]), "counts": counts}

  def _psum(self, x):
    return x if self.axis_name is None else lax.psum(x, self.axis_name)

  def _gather(self, x):
    """Rows of the global batch, in global order, the same on every device.

    A psum of each device's rows placed at its own offset, not `lax.all_gather`: shard_map
    types all_gather's result as varying across devices, and what is computed from it must
    be invariant (replicated state, and both branches of the k-means cond).
    """
    if self.axis_name is None:
      return x
    slots = jnp.zeros((lax.axis_size(self.axis_name), *x.shape), x.dtype)
    slots = slots.at[lax.axis_index(self.axis_name)].set(x)
    return lax.psum(slots, self.axis_name).reshape(-1, *x.shape[1:])

  def _step_key(self, keys, stream: int):
    """A key shared by all devices: the global batch's first example key, folded."""
    if keys is None:
      raise ValueError("the VQ codebook update with dead-code restarts or k-means needs the "
                       "per-example keys: call the model with (x, keys)")
    first = self._gather(jax.random.key_data(keys[:1]))[0]
    return jax.random.fold_in(jax.random.wrap_key_data(first), stream)

  def _ema_step(self, counts, sums, flat, keys):
    size, total, codebook = ema_update(self.cluster_size.value, self.embed_sum.value, counts,
                                       sums, self.ema_decay, self.epsilon)
    if self.dead_code_steps > 0:
      unused = jnp.where(counts > 0, 0, self.unused_steps.value + 1)
      dead = unused >= self.dead_code_steps
      z = self._gather(flat)
      rows = jax.random.choice(self._step_key(keys, _RESTART_STREAM), z.shape[0],
                               (self.num_codes,), replace=z.shape[0] < self.num_codes)
      fresh = z[rows]
      # A restarted code starts like an initial one: N = 1, m = e = the chosen vector.
      codebook = jnp.where(dead[:, None], fresh, codebook)
      total = jnp.where(dead[:, None], fresh, total)
      size = jnp.where(dead, 1.0, size)
      self.unused_steps.value = jnp.where(dead, 0, unused)
    self.cluster_size.value, self.embed_sum.value = size, total
    self.codebook_var.value = codebook

  def _kmeans_once(self, flat, keys):
    """Before the first update: k-means centroids of the first global batch as codebook."""
    state = (self.codebook_var.value, self.cluster_size.value, self.embed_sum.value)

    def fit(_):
      centroids = kmeans(self._step_key(keys, _KMEANS_STREAM), self._gather(flat),
                         self.num_codes)
      return centroids, jnp.ones_like(state[1]), centroids

    # A cond, not a select: Lloyd's iterations run on the first step only.
    codebook, size, total = lax.cond(self.initialized.value > 0, lambda _: state, fit, None)
    self.codebook_var.value, self.cluster_size.value, self.embed_sum.value = (codebook, size,
                                                                              total)
    self.initialized.value = jnp.ones_like(self.initialized.value)
