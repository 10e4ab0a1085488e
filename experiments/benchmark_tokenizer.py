"""Speed of vaelab's VQGAN train step (generator and discriminator) against a bare jitted step.

Both train the same networks, configs/vqgan_mnist.py's VQGAN module (encoder, EMA quantizer
with dead-code restarts, decoder, patch discriminator), on the same batch:
- vaelab: the step `vaelab.training.experiment.build` compiles for the config (shard_map,
  per-example keys, the parameter groups' two optimizers, global-batch statistics, NaN
  guard, gradient norms, packed metrics);
- bare: one `jax.jit` step written by hand with optax: the same objective, computed the same
  way (the discriminator once on real and once on reconstructed images, the generator's
  adversarial gradient as the discriminator's input gradient, the adaptive weight from the
  last layer's kernel), the two Adam updates, donated state;
- naive (`--naive`): the textbook hand-written step, the generator's and the
  discriminator's losses each differentiated on their own, the adaptive weight by jax.grad
  of both losses with respect to the last kernel through the whole model.
Steps are timed in alternating rounds after warm-up (compile excluded), the median round
kept, so a noisy shared machine slows each alike. The adversarial terms act in every
timed step (loss.disc_start = 0).

  .venv/bin/python experiments/benchmark_tokenizer.py [--steps 50 --rounds 6]
      [--runlocal] [--naive] [--data ../shared/data/mnist_5k.npz]

The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import common
from vaelab import config_base, spmd
from vaelab.data.base import InMemorySource
from vaelab.losses import vqgan as gl
from vaelab.models import vqgan
from vaelab.training import experiment as experiment_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_images(path: str, n: int) -> np.ndarray:
  if path and os.path.exists(path):
    with np.load(path) as f:
      return f["image"][:n]
  return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), np.uint8)


def vaelab_step(config, images):
  src = InMemorySource("mnist_images", images)
  exp = experiment_lib.build(config, sources=(src, src))
  state = spmd.replicate(exp.mesh, exp.init_state())
  batch = spmd.shard_batch(exp.mesh, exp.batcher().batch(0))
  return (lambda s: exp.train_step(s, batch, exp.hparams)[0]), state, batch, exp


def _bernoulli(logits, x):
  return jnp.sum(jax.nn.softplus(logits) - x * logits, axis=(1, 2, 3))


def hand_step(config, exp, image, naive: bool):
  """(step(state) -> state, state) of the bare step on `image` (the vaelab batch's)."""
  model, c = exp.model, config
  variables = exp.init_state().variables()
  params = variables["params"]
  vq_state = {"vq": variables["vq"]}
  gparams = {k: v for k, v in params.items() if k != "discriminator"}
  dparams = params["discriminator"]
  sched = optax.cosine_decay_schedule(c.optimizer.learning_rate, c.num_train_steps)
  gtx = optax.adam(sched)
  dtx = optax.adam(c.discriminator_optimizer.learning_rate, b1=0.5, b2=0.9)
  beta, disc_weight = c.loss.commitment, c.loss.disc_weight
  n = image.shape[0]

  def forward(gp, dp, vq_state, keys):
    (logits, levels, h), new = model.apply({"params": {**gp, "discriminator": dp}, **vq_state},
                                           image, keys, method="forward", mutable=["vq"])
    (q,) = levels
    commit = sum(jnp.sum(jnp.square(ze - lax.stop_gradient(zq)), axis=(1, 2, 3))
                 for ze, zq in q["pairs"])
    return logits, h, beta * commit, new

  def disc(dp, gp, images):
    return model.apply({"params": {**gp, "discriminator": dp}}, images, method="discriminate")

  def head(gp, kernel, h):
    hp = {"conv": {**gp["head"]["conv"], "kernel": kernel}}
    return model.apply({"params": {**gp, "head": hp}}, h, method="apply_head")

  def losses(gp, dp, vq_state, keys):
    logits, h, commit, new = forward(gp, dp, vq_state, keys)
    x_hat = jax.nn.sigmoid(logits)
    rec, rec_vjp = jax.vjp(lambda l: _bernoulli(l, image).mean(), lax.stop_gradient(logits))
    (c_rec,) = rec_vjp(jnp.ones(()))
    real = disc(dp, gp, image)
    fake, fake_vjp = jax.vjp(lambda im: disc(dp, gp, im), lax.stop_gradient(x_hat))
    g = -jnp.mean(fake)
    (c_img,) = fake_vjp(jnp.full(fake.shape, -1.0 / fake.size))
    c_gen = lax.stop_gradient(c_img * x_hat * (1 - x_hat))
    kernel = gp["head"]["conv"]["kernel"]
    _, head_vjp = jax.vjp(lambda k: head(gp, k, lax.stop_gradient(h)), kernel)
    w = gl.adaptive_weight(head_vjp(c_rec)[0], head_vjp(c_gen)[0], disc_weight)
    total = c_rec + w * c_gen
    prod = jnp.sum(lax.stop_gradient(total) * logits)
    gloss = lax.stop_gradient(rec + w * g) + prod - lax.stop_gradient(prod) + commit.mean()
    dloss = 0.5 * (jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake)))
    return gloss + dloss, new

  def naive_gen(gp, dp, vq_state, keys):
    logits, h, commit, new = forward(gp, dp, vq_state, keys)
    x_hat = jax.nn.sigmoid(logits)
    kernel = gp["head"]["conv"]["kernel"]
    rec_of = lambda k: _bernoulli(head(gp, k, h), image).mean()
    gen_of = lambda k: -jnp.mean(disc(dp, gp, jax.nn.sigmoid(head(gp, k, h))))
    w = gl.adaptive_weight(jax.grad(rec_of)(kernel), jax.grad(gen_of)(kernel), disc_weight)
    loss = _bernoulli(logits, image).mean() + commit.mean() - w * jnp.mean(
        disc(dp, gp, x_hat))
    return loss, (new, x_hat)

  def naive_disc(dp, gp, x_hat):
    real, fake = disc(dp, gp, image), disc(dp, gp, lax.stop_gradient(x_hat))
    return 0.5 * (jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake)))

  def step(gp, dp, go, do, vq_state, i):
    keys = jax.random.split(jax.random.fold_in(jax.random.key(1), i), n)
    if naive:
      (_, (new, x_hat)), gg = jax.value_and_grad(naive_gen, has_aux=True)(gp, dp, vq_state,
                                                                          keys)
      dg = jax.grad(naive_disc)(dp, gp, x_hat)
    else:
      (_, new), (gg, dg) = jax.value_and_grad(losses, argnums=(0, 1), has_aux=True)(
          gp, dp, vq_state, keys)
    gu, go = gtx.update(gg, go, gp)
    du, do = dtx.update(dg, do, dp)
    return optax.apply_updates(gp, gu), optax.apply_updates(dp, du), go, do, new, i + 1

  step = jax.jit(step, donate_argnums=(0, 1, 2, 3, 4))
  state = (gparams, dparams, gtx.init(gparams), dtx.init(dparams), vq_state,
           jnp.zeros((), jnp.int32))
  return lambda s: step(*s), state


run = common.timed_steps


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=50, help="steps per timed round")
  p.add_argument("--rounds", type=int, default=6, help="alternating rounds per step")
  p.add_argument("--runlocal", action="store_true", help="the config's runlocal sizes")
  p.add_argument("--naive", action="store_true", help="also time the textbook bare step")
  p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "mnist_5k.npz"))
  args = p.parse_args()
  t0 = time.perf_counter()
  config = config_base.load_config(
      os.path.join(ROOT, "configs", "vqgan_mnist.py" + (":runlocal" if args.runlocal else "")))
  config.loss.disc_start = 0
  config.data.name = "npz"
  images = load_images(args.data, 4 * int(config.batch_size))

  v_fn, v_state, batch, exp = vaelab_step(config, images)
  image = jnp.asarray(np.asarray(batch["image"]), jnp.float32) / 255.0
  benches = {"vaelab": [v_fn, run(v_fn, v_state, 3)[0]]}
  names = ["vaelab", "bare"] + (["naive"] if args.naive else [])
  for name in names[1:]:
    fn, state = hand_step(config, exp, image, naive=name == "naive")
    benches[name] = [fn, run(fn, state, 3)[0]]
  times = {name: [] for name in names}
  for r in range(args.rounds):
    order = names if r % 2 == 0 else list(reversed(names))
    for name in order:
      fn, state = benches[name]
      benches[name][1], dt = run(fn, state, args.steps)
      times[name].append(dt)

  med = {name: statistics.median(t) for name, t in times.items()}
  device = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} x{jax.device_count()}"
  m = config.model
  print(f"device {device}; configs/vqgan_mnist.py{':runlocal' if args.runlocal else ''}: "
        f"conv {tuple(m.conv_channels)}, {m.num_codes} codes x {m.code_dim}, discriminator "
        f"{m.disc_layers} layers x {m.disc_filters}; batch {config.batch_size}; "
        f"{args.rounds} rounds x {args.steps} steps")
  print(f"{'step':<8}{'ms/step':>10}{'steps/s':>10}{'bare/this':>11}")
  for name in names:
    print(f"{name:<8}{med[name] * 1e3:>10.2f}{1 / med[name]:>10.2f}"
          f"{med['bare'] / med[name]:>11.3f}")
  print(f"vaelab/bare speed {med['bare'] / med['vaelab']:.3f}; took "
        f"{time.perf_counter() - t0:.0f}s")
  out = {f"{name}_ms": round(med[name] * 1e3, 3) for name in names}
  out.update({"ratio_vs_bare": round(med["bare"] / med["vaelab"], 4),
              "rounds_ms": {k: [round(t * 1e3, 3) for t in v] for k, v in times.items()},
              "batch_size": int(config.batch_size), "runlocal": args.runlocal,
              "num_codes": int(m.num_codes), "device": device})
  if args.naive:
    out["ratio_naive_vs_bare"] = round(med["bare"] / med["naive"], 4)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
