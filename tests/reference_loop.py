"""A fixed reference loop that says how fast this machine is, so that the suite's cost can
be read across machines: a bare jitted training loop of a small MLP autoencoder (784-32-30,
batch 32, Adam; experiments/benchmark_loop.py's `small` model, without vaelab), on fixed
random images. `make test` reports its steps/s beside the suite's CPU-minutes.

  python tests/reference_loop.py
"""
from __future__ import annotations

import time

import numpy as np

STEPS = 2000
WARMUP = 100


def steps_per_second(steps: int = STEPS) -> float:
  import jax
  import jax.numpy as jnp
  import optax

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(64, 32, 784)).astype(np.float32))
  sizes = [(784, 32), (32, 30), (30, 32), (32, 784)]
  params = [(jnp.asarray(rng.normal(size=s).astype(np.float32) / np.sqrt(s[0])),
             jnp.zeros(s[1], jnp.float32)) for s in sizes]
  opt = optax.adam(1e-3)

  def loss(params, batch):
    h = batch
    for i, (w, b) in enumerate(params):
      h = h @ w + b
      if i < len(params) - 1:
        h = jax.nn.relu(h)
    return jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(h, batch), -1))

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(loss)(params, batch)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  for i in range(WARMUP):
    params, state = step(params, state, x[i % 64])
  jax.block_until_ready(params)
  began = time.perf_counter()
  for i in range(steps):
    params, state = step(params, state, x[i % 64])
  jax.block_until_ready(params)
  return steps / (time.perf_counter() - began)


if __name__ == "__main__":
  print(f"{steps_per_second():.0f} steps/s")
