"""The contractive penalty ||J_f(x)||_F^2 of an encoder f (Rifai et al. 2011), three ways.

`jacfwd` is the definition and works for any encoder, but builds the full (H x D) Jacobian
per example, many times an AE step. For one sigmoid layer the closed form is
exact and costs a matmul; for deep encoders the random-projection estimator
E_v ||J v||^2 = ||J||_F^2 (v ~ N(0, I)) is unbiased and costs one jvp per projection.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PENALTIES = ("jacfwd", "closed_form", "estimator")


def jacobian_fro2_jacfwd(encode, x):
  """Per-example ||d encode(x_i) / d x_i||_F^2 from the full Jacobian; `encode` maps (B, ...) -> (B, H)."""
  jac = jax.vmap(jax.jacfwd(lambda xi: encode(xi[None])[0]))(x)
  return jnp.square(jac).reshape(x.shape[0], -1).sum(-1)


def jacobian_fro2_sigmoid(h, kernel):
  """Exact ||J||_F^2 of h = sigmoid(x W + b): sum_j (h_j (1 - h_j))^2 sum_i W_ij^2."""
  return jnp.square(h * (1 - h)) @ jnp.square(kernel).sum(0)


def jacobian_fro2_estimator(encode, x, keys, num_projections: int):
  """Unbiased estimate of ||J||_F^2: mean over Gaussian projections v of ||J v||^2 (one jvp each).

  Each example draws its own projections from its own key. `encode` must treat examples
  independently (no batch statistics), so one batched jvp gives every J_i v_i.
  """
  def one_projection(p):
    v = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, p), x.shape[1:], x.dtype))(keys)
    _, jv = jax.jvp(encode, (x,), (v,))
    return jnp.square(jv).reshape(x.shape[0], -1).sum(-1)

  return jax.vmap(one_projection)(jnp.arange(num_projections)).mean(0)


def jacobian_fro2_exact(encode, x, chunk: int = 16):
  """Per-example ||J||_F^2 from the full Jacobian, for evaluation of any encoder.

  Built in whichever mode is cheaper (reverse mode when the code is smaller than the input:
  30 backward passes, not 784), `chunk` examples at a time so that a 1000-unit code does
  not materialize a (batch, 1000, 784) Jacobian.
  """
  out_dim = jax.eval_shape(encode, x[:1]).size
  jac_mode = jax.jacfwd if out_dim >= x[0].size else jax.jacrev
  one = lambda xi: jnp.square(jac_mode(lambda v: encode(v[None])[0])(xi)).sum()
  return jax.lax.map(one, x, batch_size=chunk)
