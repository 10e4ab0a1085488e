"""Speed of the PixelSNAIL prior's two samplers side by side, and that they draw the same codes.

`full` runs the whole network once per position (H*W passes over the map); `cached`
(eval.sampler's default) computes per new position only what its logits need, from cached
activations of the masked convolutions and cached attention keys and values
(vaelab/models/pixelsnail_sampler.py). Both draw position p from fold_in(key, p), so from one key
they must give the same codes.

The priors are randomly initialised at the size the configs train: configs/vq_prior_mnist.py's
PixelSNAIL (32 channels, 2 blocks of 2 gated layers, 4-head attention) over the codes of
configs/vqvae_mnist.py (one 7x7 map, K = 256) and configs/vqvae2_mnist.py (a 7x7 top map and
a 14x14 bottom map conditioned on it). Rows: each level's prior alone, and VQ-VAE-2 end to
end (top prior, bottom prior and a randomly initialised VQ-VAE-2 decoder in one compiled
program, `vq_prior.sample_images`, what --mode=sample runs).
Each sampler is compiled ahead of time (compile time reported apart), then called
`--repeats` times (`--full_repeats` for the slow full sampler) after one warm-up call of
the cached one; the table shows the median call, per image.

  .venv/bin/python experiments/benchmark_prior_sampler.py [--batch 64 --repeats 5
      --full_repeats 1 --rows vqvae,vqvae2_top,vqvae2_bottom,vqvae2_end_to_end
      --matmul_precision highest]

Matmuls run at `--matmul_precision` (default highest, float32): on GPUs JAX's default may
use TF32, where the two samplers' different evaluation orders differ by ~1e-3 in the logits
and an occasional draw can flip; `--matmul_precision default` times that setting.
Goal: cached >= 10x faster than full on the 14x14 bottom prior, with identical codes.
Runs unchanged on a GPU (it prints jax.devices()). The last line of stdout is JSON.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
from vaelab.data.base import SourceInfo
from vaelab.models import pixelsnail_sampler, vq_prior, vqvae, vqvae2
from vaelab.models.quantizer_spec import prior_num_codes

IMAGE_SHAPE = (28, 28, 1)
ROWS = {"vqvae": "VQ-VAE prior, 7x7", "vqvae2_top": "VQ-VAE-2 top prior, 7x7",
        "vqvae2_bottom": "VQ-VAE-2 bottom prior, 14x14 | 7x7 top",
        "vqvae2_end_to_end": "VQ-VAE-2 top + bottom + decoder"}


def code_prior(vq_name: str):
  """(CodePrior of configs/vq_prior_mnist.py over the codes of configs/<vq_name>.py, its VQ
  model, the VQ model's config) without a trained VQ run."""
  vq_config = common.load_config(vq_name)
  module = vqvae2 if vq_name.startswith("vqvae2") else vqvae
  vq_model = module.make_model(vq_config, SourceInfo(IMAGE_SHAPE))
  shapes = tuple(tuple(s) for s in module.latent_shapes(vq_model))
  prior_config = common.load_config("vq_prior_mnist")
  model = vq_prior.CodePrior(vq_prior.PriorSpec.from_config(prior_config),
                             prior_num_codes(vq_config), tuple(vq_model.LEVELS), shapes,
                             vq_workdir="", vq_step=0, image_shape=IMAGE_SHAPE)
  return model, vq_model


def timed(fn, args, repeats: int, warmup: bool):
  """(compile s, [call s], first output) of jax.jit(fn) on args, compiled ahead of time."""
  t = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t
  out = None
  if warmup:
    out = jax.block_until_ready(compiled(*args))
  calls = []
  for _ in range(repeats):
    t = time.perf_counter()
    result = jax.block_until_ready(compiled(*args))
    calls.append(time.perf_counter() - t)
    out = result if out is None else out
  return compile_s, calls, np.asarray(out)


def bench_row(name: str, args, priors) -> dict:
  b = args.batch
  key = jax.random.key(args.seed)
  if name == "vqvae2_end_to_end":
    model, vq_model, variables = priors["vqvae2"]
    vq_variables = jax.jit(vq_model.init)(jax.random.key(1), jnp.zeros((1, *IMAGE_SHAPE)))
    make = lambda s: (lambda v, vqv, k: vq_prior.sample_images(
        model, vq_model, v, vqv, k, b, 1.0, s))
    inputs = (variables, vq_variables, key)
    shape = (b, *IMAGE_SHAPE)
  else:
    vq_name, level = {"vqvae": ("vqvae", 0), "vqvae2_top": ("vqvae2", 0),
                      "vqvae2_bottom": ("vqvae2", 1)}[name]
    model, _, variables = priors[vq_name]
    level_model = vq_prior.level_prior(model, level)
    level_vars = {"params": variables["params"][vq_prior.prior_name(model.levels[level])]}
    # The bottom prior is conditioned on random top codes (what the top prior would draw).
    condition = tuple(jax.random.randint(jax.random.key(100 + i), (b, *model.code_shapes[i]),
                                         0, model.num_codes) for i in range(level)) or None
    shape = (b, *model.code_shapes[level])
    make = lambda s: (lambda v, k, c: pixelsnail_sampler.sample(level_model, v, k, shape, c,
                                                                1.0, s))
    inputs = (level_vars, key, condition)
  out = {"shape": list(shape)}
  samples = {}
  for sampler in ("cached", "full"):
    repeats = args.repeats if sampler == "cached" else args.full_repeats
    common.note(f"{ROWS[name]}: {sampler} sampler, compiling then {repeats} call(s)")
    compile_s, calls, samples[sampler] = timed(make(sampler), inputs, repeats,
                                               warmup=sampler == "cached")
    median = statistics.median(calls)
    out[sampler] = {"compile_s": compile_s, "call_s": median, "calls_s": calls,
                    "ms_per_image": 1e3 * median / b}
  out["speedup"] = out["full"]["call_s"] / out["cached"]["call_s"]
  if name == "vqvae2_end_to_end":
    out["max_image_difference"] = float(np.abs(samples["cached"] - samples["full"]).max())
    out["identical"] = out["max_image_difference"] == 0.0
  else:
    out["fraction_codes_equal"] = float(np.mean(samples["cached"] == samples["full"]))
    out["identical"] = bool(np.array_equal(samples["cached"], samples["full"]))
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=64, help="maps per call (eval.num_pictures)")
  p.add_argument("--repeats", type=int, default=5, help="timed calls of the cached sampler")
  p.add_argument("--full_repeats", type=int, default=1, help="timed calls of the full one")
  p.add_argument("--rows", default=",".join(ROWS), help=f"from {list(ROWS)}")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--matmul_precision", default="highest",
                 help="jax.default_matmul_precision: highest | default | ...")
  args = p.parse_args()
  rows = [r.strip() for r in args.rows.split(",") if r.strip()]
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    raise SystemExit(f"--rows: unknown {unknown}; known: {list(ROWS)}")
  print(f"jax {jax.__version__}, devices: {jax.devices()}", flush=True)
  t0 = time.perf_counter()
  priors = {}
  with jax.default_matmul_precision(args.matmul_precision):
    for vq_name in sorted({"vqvae" if r == "vqvae" else "vqvae2" for r in rows}):
      model, vq_model = code_prior(f"{vq_name}_mnist")
      zeros = tuple(jnp.zeros((1, h, w), jnp.int32) for h, w in model.code_shapes)
      priors[vq_name] = (model, vq_model, jax.jit(model.init)(jax.random.key(0), zeros))
    results = {name: bench_row(name, args, priors) for name in rows}

  table = []
  for name, r in results.items():
    table.append([ROWS[name], "x".join(map(str, r["shape"][1:3])),
                  common.fmt(r["full"]["ms_per_image"], ".2f"),
                  common.fmt(r["cached"]["ms_per_image"], ".3f"),
                  common.fmt(r["speedup"], ".1f") + "x",
                  common.fmt(r["full"]["compile_s"], ".1f"),
                  common.fmt(r["cached"]["compile_s"], ".1f"),
                  "yes" if r["identical"] else "NO"])
  common.print_table(
      ["prior", "map", "full ms/image", "cached ms/image", "speedup", "full compile s",
       "cached compile s", "same samples"], table,
      title=f"PixelSNAIL samplers, batch {args.batch}, random priors of the configs' size, "
            f"{jax.devices()[0].platform}, matmul precision {args.matmul_precision}")
  checks = {}
  if "vqvae2_bottom" in results:
    bottom = results["vqvae2_bottom"]
    checks = {"bottom_speedup_at_least_10x": bottom["speedup"] >= 10,
              "bottom_codes_identical": bottom["identical"]}
    print("goal (14x14 bottom prior): cached >= 10x faster with identical codes: "
          + ("met" if all(checks.values()) else "NOT met")
          + f" ({bottom['speedup']:.1f}x, identical {bottom['identical']})")
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  common.print_json({"devices": [str(d) for d in jax.devices()], "batch": args.batch,
                     "matmul_precision": args.matmul_precision, "rows": results,
                     "checks": checks, "wall_s": total})


if __name__ == "__main__":
  main()
