"""Vector quantizer (van den Oord et al. 2017) shared by VQ-VAE and VQ-VAE-2.

The default (`model.quantizer` = "vq"); fsq.py and residual_vq.py hold the others, which
return the same dict (see `VectorQuantizer.__call__`), so the families and the objective
treat every quantizer alike.

A codebook of K vectors of size D; each encoder output is replaced by its nearest code.
With `ema_decay` = 0 the codebook is a parameter learned through the codebook loss
||sg(z_e) - e||^2 (losses/vqvae.py). With `ema_decay` = gamma > 0 it is state (the "vq"
variable collection) updated by exponential moving averages in Sonnet's form:

  N_i <- gamma N_i + (1 - gamma) n_i          n_i: vectors assigned to code i
  m_i <- gamma m_i + (1 - gamma) sum_j z_ij   sum of the vectors assigned to i
  N~_i = (N_i + eps) / (n + K eps) * n        Laplace smoothing, n = sum_i N_i
  e_i  = m_i / N~_i

N and m start at 0, as in Sonnet: e = m/N is a ratio of two averages that share the
same zero-start bias (1 - gamma^t), so it needs no debiasing and a code's first update
puts it at the mean of its vectors. (Starting at N = 1, m = e instead left used codes at a
tenth of their target for tens of steps and halved the codebook use on MNIST.) A code no
vector has chosen yet goes to the origin at the first update (m = 0), near where the small
initial codes were; a code placed by a restart or by k-means starts at N = 1, m = e.

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

Lookup space (Yu et al. 2022, ViT-VQGAN). With `codebook_dim` > 0 the encoder output is
projected by a learned linear map to codebook_dim before the lookup and the code back to
code_dim after it (0: no projection, the lookup is in code_dim); with `codebook_norm` =
"l2" both the projected encoder output and the codes are l2-normalized, so the nearest code
is the one of largest cosine similarity. The codebook, its EMA statistics, restarts,
k-means and the commitment / codebook terms all live in that space (`z_e` and `z_q` of the
output are in it); the EMA keeps the raw means and the lookup normalizes them.

Gradient estimator (`gradient`): "straight_through" (above) or "rotation" (Fifty et al.
2024, `rotation_trick`): the decoder input has the value z_q but its Jacobian with respect
to z_e is the constant rotation and rescaling that maps z_e onto z_q, not the identity.

Options of the EMA codebook (they overwrite codes, so they need the codebook to be state):
  dead_code_steps > 0: a code assigned no vector of the global batch for that many
    consecutive steps is re-initialised from an encoder output of the current global batch
    (rows drawn with a key derived from the step's first example key, so the choice is the
    same on every device and for any device count);
  kmeans_init: the first update replaces the initial codebook by k-means centroids of the
    first global batch (Lloyd's algorithm, KMEANS_ITERS iterations from K rows drawn the
    same way; each iteration psums the per-device counts and sums like the EMA update).
    Under codebook_norm = "l2" it is spherical k-means: every centroid is normalized as
    the lookup normalizes the codes, so the vectors are assigned by cosine, as the lookup
    will assign them, and not by distance to means shortened by their clusters' spread.
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
  At full precision: TPUs (and GPUs with TF32) multiply f32 in bf16 passes by default,
  which would move codes that are nearly as close past each other.
  """
  z2 = jnp.sum(jnp.square(z), axis=1, keepdims=True)
  e2 = jnp.sum(jnp.square(codebook), axis=1)
  return z2 - 2.0 * jnp.dot(z, codebook.T, precision=lax.Precision.HIGHEST) + e2[None, :]


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


def l2_normalize(x, eps: float = 1e-6):
  """x / |x| over the last axis; a vector shorter than eps (the direction is undefined)
  becomes 0 with a zero gradient. x / max(|x|, eps), torch's F.normalize, would send a
  gradient of 1/eps = 1e6 into the encoder there, and exact zeros are common at the start
  (a black image region through zero-initialized biases)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  ok = sq > eps * eps
  return jnp.where(ok, x * lax.rsqrt(jnp.where(ok, sq, 1.0)), 0.0)


def rotation_trick(z_e, z_q, eps: float = 1e-6):
  """The decoder input sg(lambda R) z_e of the rotation trick (Fifty et al. 2024, sec. 4.2).

  R is the rotation taking e^ = z_e/|z_e| to q^ = z_q/|z_q| that acts only in their plane,
  in the paper's Householder form R = I - 2 r r^T + 2 q^ e^T with r = (e^ + q^)/|e^ + q^|,
  and lambda = |z_q|/|z_e|; both are held constant in the backward pass, so the value is
  lambda R z_e = z_q and the gradient reaching z_e is (lambda R)^T times the gradient at the
  decoder input: its angle to the code and the relative norms are kept, where
  straight-through copies it. Computed without forming R (the paper's efficient form):
  R z = z - 2 r (r.z) + 2 q^ (e^.z), O(D) per vector. The value is then moved onto z_q
  exactly (z_q - that value is a constant), so the forward pass equals straight-through's
  to rounding. At z_e = -z_q, r = 0 still gives R e^ = q^.

  Where |z_q| <= eps (FSQ's all-zero grid point, an EMA code no vector has chosen) there is
  no direction to rotate onto and lambda = 0 would pass no gradient at all; where
  |z_e| <= eps (exact zeros are common at the start: a black image region through
  zero-initialized biases) there is none to rotate from and lambda = |z_q|/|z_e| is
  unbounded. Both cases take straight-through's identity, the estimator the trick replaces
  and the trick's own map (lambda R = I) where the code equals z_e; so, like
  l2_normalize's, the gradient is bounded through eps: at most |z_q|/eps times the one at
  the decoder input.
  """
  sg = lax.stop_gradient
  e, q = sg(z_e), sg(z_q)
  e_sq = jnp.sum(jnp.square(e), axis=-1, keepdims=True)
  q_sq = jnp.sum(jnp.square(q), axis=-1, keepdims=True)
  rotates = (e_sq > eps * eps) & (q_sq > eps * eps)
  e_norm = jnp.sqrt(jnp.where(rotates, e_sq, 1.0))
  q_norm = jnp.sqrt(jnp.where(rotates, q_sq, 1.0))
  e_hat, q_hat = e / e_norm, q / q_norm
  r = l2_normalize(e_hat + q_hat, eps)
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  rotated = z_e - 2.0 * r * dot(r, z_e) + 2.0 * q_hat * dot(e_hat, z_e)
  out = jnp.where(rotates, sg(q_norm / e_norm) * rotated, z_e)
  return out + sg(z_q - out)


# `model.gradient`: how the decoder's gradient at z_q reaches the encoder output z_e.
GRADIENTS = {"straight_through": straight_through, "rotation": rotation_trick}
CODEBOOK_NORMS = ("none", "l2")


def code_counts(indices, num_codes: int):
  """float32 (K,) uses of each code among the integer `indices`: an integer scatter-add
  (exact and deterministic on every backend), O(N + K) memory where a one-hot is O(N K)."""
  flat = jnp.asarray(indices).reshape(-1)
  return jnp.zeros((num_codes,), jnp.int32).at[flat].add(1).astype(jnp.float32)


def ema_update(cluster_size, embed_sum, counts, sums, decay, epsilon):
  """One EMA step (module docstring): returns (N, m, codebook e)."""
  cluster_size = decay * cluster_size + (1 - decay) * counts
  embed_sum = decay * embed_sum + (1 - decay) * sums
  n = jnp.sum(cluster_size)
  smoothed = (cluster_size + epsilon) / (n + cluster_size.shape[0] * epsilon) * n
  return cluster_size, embed_sum, embed_sum / smoothed[:, None]


def kmeans(start, z, iters: int = KMEANS_ITERS, psum=lambda x: x, normalize=None):
  """Lloyd's algorithm from the centroids `start` (K, D) on the rows of z (N, D); a centroid
  that loses all its points keeps its place. With `psum` summing over devices, z is each
  device's shard and every device gets the centroids of the union. `normalize` (e.g.
  l2_normalize) maps every centroid as a lookup maps its codes: with unit rows of z and
  unit centroids the nearest centroid is the one of largest cosine (spherical k-means)."""
  k = start.shape[0]
  if normalize is not None:
    start = normalize(start)

  def step(_, centroids):
    onehot = jax.nn.one_hot(nearest_codes(z, centroids), k, dtype=z.dtype)
    counts = psum(onehot.sum(0))
    sums = psum(jnp.dot(onehot.T, z, precision=lax.Precision.HIGHEST))
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    if normalize is not None:
      means = normalize(means)
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
  codebook_norm: str = "none"  # CODEBOOK_NORMS
  codebook_dim: int = 0  # > 0: lookup in a learned projection to this many dimensions
  gradient: str = "straight_through"  # a key of GRADIENTS

  @property
  def ema(self) -> bool:
    return self.ema_decay > 0

  @property
  def lookup_dim(self) -> int:
    """The dimension of the codes and of the space the lookup is in."""
    return self.codebook_dim or self.code_dim

  def setup(self):
    k, d = self.num_codes, self.lookup_dim
    if self.codebook_dim:
      self.project_in = nn.Dense(self.codebook_dim, name="project_in")
      self.project_out = nn.Dense(self.code_dim, name="project_out")
    # Codes near the origin (uniform in +-1/K): the first assignments then go by the
    # direction of z_e (argmin ||e||^2 - 2 z.e ~ argmax z.e) and spread over the codebook;
    # codes at the scale of N(0, 1), far from an untrained encoder's small outputs, would
    # all lose to the one of smallest norm and the codebook would collapse to one code.
    init = lambda key: jax.random.uniform(key, (k, d), jnp.float32, -1.0 / k, 1.0 / k)
    if not self.ema:
      self.codebook = self.param("codebook", init)
      return
    codebook = self.variable(COLLECTION, "codebook", lambda: init(self.make_rng("params")))
    self.codebook_var = codebook
    self.cluster_size = self.variable(COLLECTION, "cluster_size", jnp.zeros, (k,), jnp.float32)
    self.embed_sum = self.variable(COLLECTION, "embed_sum", jnp.zeros, (k, d), jnp.float32)
    if self.dead_code_steps > 0:
      self.unused_steps = self.variable(COLLECTION, "unused_steps", jnp.zeros, (k,), jnp.int32)
    if self.kmeans_init:
      self.initialized = self.variable(COLLECTION, "initialized", jnp.zeros, (), jnp.int32)

  def embeddings(self):
    """The current codebook (K, lookup_dim), l2-normalized under codebook_norm="l2"."""
    codebook = self.codebook_var.value if self.ema else self.codebook
    return l2_normalize(codebook) if self.codebook_norm == "l2" else codebook

  def _out(self, z):
    """A vector of the lookup space as the decoder's input (code_dim)."""
    return self.project_out(z) if self.codebook_dim else z

  def lookup(self, indices):
    """Decoder inputs of an integer array of indices: (...) -> (..., code_dim)."""
    return self._out(jnp.take(self.embeddings(), indices, axis=0))

  def to_lookup_space(self, z_e):
    """Encoder outputs (..., code_dim) -> the vectors that are quantized (..., lookup_dim)."""
    z = self.project_in(z_e) if self.codebook_dim else z_e
    return l2_normalize(z) if self.codebook_norm == "l2" else z

  def __call__(self, z_e, keys=None):
    """z_e (..., code_dim) -> dict, the interface every quantizer returns:
      quantized: the decoder input (..., code_dim): value the code (projected out), gradient
                 to z_e by `gradient` (straight-through or the rotation trick)
      z_e:       the vector that was quantized (..., lookup_dim): the input, projected and
                 normalized as configured
      z_q:       its code (..., lookup_dim), from the codebook before this call's update
      indices:   int32 (...)
      counts:    (K,) uses of each code in the batch (global batch inside the train step)
      pairs:     the (input, code) pairs the commitment / codebook terms act on
                 (losses/vqvae.py): here ((z_e, z_q),)
    With a mutable "vq" collection, also updates the EMA codebook (module docstring);
    `keys` (per-example PRNG keys) are then needed for dead-code restarts and k-means."""
    update = self.ema and self.is_mutable_collection(COLLECTION) and not self.is_initializing()
    z_e = self.to_lookup_space(z_e)
    flat = z_e.reshape(-1, self.lookup_dim)
    if update and self.kmeans_init:
      self._kmeans_once(lax.stop_gradient(flat), keys)
    codebook = self.embeddings()
    idx = nearest_codes(flat, codebook)
    counts = self._psum(code_counts(idx, self.num_codes))
    if update:
      # A one-hot matmul, not a scatter: float scatter-adds are not deterministic on GPUs,
      # and resumed runs must reach bitwise the same codebook.
      onehot = jax.nn.one_hot(idx, self.num_codes, dtype=flat.dtype)
      sums = self._psum(jnp.dot(onehot.T, lax.stop_gradient(flat),
                                precision=lax.Precision.HIGHEST))
      self._ema_step(counts, sums, lax.stop_gradient(flat), keys)
    z_q = jnp.take(codebook, idx, axis=0).reshape(z_e.shape)
    return {"quantized": self._out(GRADIENTS[self.gradient](z_e, z_q)), "z_e": z_e,
            "z_q": z_q, "indices": idx.reshape(z_e.shape[:-1]), "counts": counts,
            "pairs": ((z_e, z_q),)}

  def _psum(self, x):
    return x if self.axis_name is None else lax.psum(x, self.axis_name)

  def _devices(self) -> int:
    return 1 if self.axis_name is None else lax.axis_size(self.axis_name)

  def _global_rows(self, flat, rows):
    """Rows `rows` (indices into the global batch, in its order) of the encoder outputs, the
    same on every device. Each device fills in the rows it holds and a psum of the (K, D)
    result combines them: no device needs the whole global batch."""
    if self.axis_name is None:
      return flat[rows]
    local = rows - lax.axis_index(self.axis_name) * flat.shape[0]
    mine = (local >= 0) & (local < flat.shape[0])
    picked = flat[jnp.clip(local, 0, flat.shape[0] - 1)]
    return lax.psum(jnp.where(mine[:, None], picked, 0.0), self.axis_name)

  def _step_key(self, keys, stream: int):
    """A key shared by all devices: the global batch's first example key, folded."""
    if keys is None:
      raise ValueError("the VQ codebook update with dead-code restarts or k-means needs the "
                       "per-example keys: call the model with (x, keys)")
    first = jax.random.key_data(keys[0])
    if self.axis_name is not None:  # device 0 holds example 0
      first = lax.psum(jnp.where(lax.axis_index(self.axis_name) == 0, first, 0),
                       self.axis_name)
    return jax.random.fold_in(jax.random.wrap_key_data(first), stream)

  def _random_rows(self, flat, keys, stream: int):
    """K encoder outputs of the global batch drawn without replacement (with, if it has
    fewer than K rows) by a key that is the same on every device and device count."""
    n = flat.shape[0] * self._devices()
    rows = jax.random.choice(self._step_key(keys, stream), n, (self.num_codes,),
                             replace=n < self.num_codes)
    return self._global_rows(flat, rows)

  def _ema_step(self, counts, sums, flat, keys):
    size, total, codebook = ema_update(self.cluster_size.value, self.embed_sum.value, counts,
                                       sums, self.ema_decay, self.epsilon)
    if self.dead_code_steps > 0:
      unused = jnp.where(counts > 0, 0, self.unused_steps.value + 1)
      dead = unused >= self.dead_code_steps
      fresh = self._random_rows(flat, keys, _RESTART_STREAM)
      # A restarted code counts as having seen one vector, the one it is set to.
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
      centroids = kmeans(self._random_rows(flat, keys, _KMEANS_STREAM), flat, KMEANS_ITERS,
                         self._psum, l2_normalize if self.codebook_norm == "l2" else None)
      return centroids, jnp.ones_like(state[1]), centroids

    # A cond, not a select: Lloyd's iterations run on the first step only.
    codebook, size, total = lax.cond(self.initialized.value > 0, lambda _: state, fit, None)
    self.codebook_var.value, self.cluster_size.value, self.embed_sum.value = (codebook, size,
                                                                              total)
    self.initialized.value = jnp.ones_like(self.initialized.value)
