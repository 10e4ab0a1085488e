"""Contractive autoencoder (Rifai et al. 2011): the encoder Jacobian's Frobenius norm of a CAE
against an unregularized AE and a denoising AE of the same shape (784-1000 sigmoid), their
reconstruction and probe errors, and the contraction ratio at growing distances.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/cae_jacobian.py [--steps N --seeds 0,1 --radii 0.1,1,4,16]

The runs (all one sigmoid layer of 1000 units, cross-entropy, Adam 1e-3 cosine, batch 128):

  CAE  configs/cae_mnist.py                                   (lambda = loss.contractive_weight)
  AE   configs/cae_mnist.py --config.loss.contractive_weight=0
  DAE  configs/dae_mnist.py --config.model.hidden='()' --config.model.latent_dim=1000 \
       --config.model.code_activation=sigmoid --config.num_train_steps=<CAE's> (mask nu = 0.25)

plus the npz data overrides. eval/jacobian_fro2 is the exact mean over evaluation images of
||J_f(x)||_F^2; Rifai et al. tabulate the mean of ||J_f(x)||_F, printed here too (computed per
image from the restored encoder). The contraction ratio at radius r is the mean over
evaluation images x and random directions u (||u|| = 1) of ||f(x + r u) - f(x)|| / r
(Rifai et al.'s contraction curves); as r -> 0 it tends to about ||J_f(x)||_F / sqrt(784). An
MNIST image has an L2 norm of about 9, so the larger radii leave the data far behind.
The last line of stdout is JSON.
"""
from __future__ import annotations

import time

import numpy as np

import common

# name, config file, overrides (the DAE's shape and budget follow the CAE config's).
MODELS = (("CAE", "cae_mnist", {}),
          ("AE (lambda=0)", "cae_mnist", {"loss.contractive_weight": 0.0}),
          ("DAE (mask 0.25)", "dae_mnist", {"model.hidden": (), "model.latent_dim": 1000,
                                             "model.code_activation": "sigmoid"}))
SHARED_KEYS = ("num_train_steps", "eval_every", "checkpoint_every", "batch_size",
               "optimizer.learning_rate", "optimizer.schedule")


def jacobian_norms(exp, state, images, batch: int = 250):
  """Per-image ||J_f(x)||_F^2 of the restored encoder (exact, any encoder)."""
  import jax
  from vaelab.losses import cae as cae_losses
  variables = jax.device_get(state.variables())
  encode = lambda v, x: exp.model.apply(v, x, method="encode")
  fn = jax.jit(lambda v, x: cae_losses.jacobian_fro2_exact(lambda y: encode(v, y), x))
  return np.concatenate([np.asarray(fn(variables, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def contraction(exp, state, images, radii, seed: int = 0):
  """Mean ||f(x + r u) - f(x)|| / r over images and one random unit direction u per image."""
  import jax
  variables = jax.device_get(state.variables())
  h0 = common.apply_batched(exp, variables, "encode", images)
  rng = np.random.default_rng(seed)
  out = {}
  for r in radii:
    u = rng.standard_normal(images.shape).astype(np.float32)
    u /= np.linalg.norm(u.reshape(len(u), -1), axis=1).reshape(-1, *([1] * (u.ndim - 1)))
    h = common.apply_batched(exp, variables, "encode", images + r * u)
    out[r] = float(np.mean(np.linalg.norm((h - h0).reshape(len(h), -1), axis=1)) / r)
  return out


def main():
  p = common.parser(__doc__.split("\n\n")[0], "cae_jacobian")
  p.add_argument("--radii", default="0.01,0.1,1,2,4,8,16,32",
                 help="distances (L2, pixels in [0,1]) of the contraction ratio; '' skips it")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  from vaelab.data import make_sources
  t0 = time.perf_counter()
  radii = [float(r) for r in args.radii.split(",") if r.strip()]
  seeds = common.seeds_of(args)
  sources, runs = None, {}
  for seed in seeds:
    cae = common.load_config("cae_mnist", None, common.common_overrides(args, seed))
    shared = {}
    for key in SHARED_KEYS:
      node = cae
      for part in key.split("."):
        node = node[part]
      shared[key] = node
    for label, name, overrides in MODELS:
      extra = dict(overrides, **(shared if name != "cae_mnist" else {}))
      config = common.load_config(name, None, {**common.common_overrides(args, seed), **extra})
      tag = label.split()[0].lower()
      workdir = common.workdir_for(args.workdir_root, tag, config)
      common.note(f"{label} seed={seed}: training {config.num_train_steps} steps in {workdir}")
      results, wall = common.train(config, workdir)
      sources = sources or make_sources(config.data)
      exp, state = common.restore(config, workdir, sources)
      images = common.eval_images(exp)
      fro2 = jacobian_norms(exp, state, images)
      curve = contraction(exp, state, images, radii, seed) if radii else {}
      runs[(label, seed)] = dict(
          results=results, wall_s=wall, fro=float(np.mean(np.sqrt(fro2))),
          fro2_check=float(np.mean(fro2)), curve=curve, steps=int(config.num_train_steps),
          weight=float(config.loss.get("contractive_weight", 0.0)))
      common.note(f"  jacobian_fro2 {results['eval/jacobian_fro2']:.2f} (recomputed "
                  f"{np.mean(fro2):.2f}), mean ||J||_F {np.mean(np.sqrt(fro2)):.3f}, recon_sse "
                  f"{results['eval/recon_sse']:.2f}, probe {results['eval/probe_error']:.4f}, "
                  f"{wall:.0f} s")

  out = {"seeds": seeds, "radii": radii, "models": {}}
  rows = []
  for label, _, _ in MODELS:
    rs = [runs[(label, s)] for s in seeds]
    m = {"jacobian_fro2": common.mean(r["results"]["eval/jacobian_fro2"] for r in rs),
         "jacobian_fro_mean": common.mean(r["fro"] for r in rs),
         "jacobian_fro2_recomputed": common.mean(r["fro2_check"] for r in rs),
         "recon_sse": common.mean(r["results"]["eval/recon_sse"] for r in rs),
         "denoise_sse": common.mean(r["results"]["eval/denoise_sse"] for r in rs),
         "probe_error": common.mean(r["results"]["eval/probe_error"] for r in rs),
         "contraction_ratio": {f"{c:g}": common.mean(r["curve"][c] for r in rs) for c in radii},
         "contractive_weight": rs[0]["weight"], "wall_s": common.mean(r["wall_s"] for r in rs)}
    out["models"][label] = m
    rows.append([label, common.fmt(m["jacobian_fro2"], ".2f"),
                 common.fmt(np.sqrt(m["jacobian_fro2"]), ".3f"),
                 common.fmt(m["jacobian_fro_mean"], ".3f"), common.fmt(m["recon_sse"], ".2f"),
                 common.fmt(m["denoise_sse"], ".2f"), common.pct(m["probe_error"]),
                 common.fmt(m["wall_s"], ".0f")])
  out["probe_error_pixels"] = common.mean(r["results"]["eval/probe_error_pixels"]
                                          for r in runs.values())
  steps = runs[(MODELS[0][0], seeds[0])]["steps"]
  common.print_table(
      ["model", "E||J||_F^2", "sqrt", "E||J||_F", "recon_sse", "denoise_sse 0.25", "probe err",
       "wall s"], rows,
      title=(f"784-1000 sigmoid autoencoders, {steps} steps, seeds {seeds}, CAE lambda = "
             f"{out['models']['CAE']['contractive_weight']:g}; evaluated on {args.eval} "
             f"(raw-pixel probe: {common.pct(out['probe_error_pixels'])})"))
  print("paper claim (Rifai et al. 2011, Table 1, MNIST): the CAE has the smallest average "
        "||J_f(x)||_F of the models compared (AE, AE+weight decay, DAEs, RBM) and the lowest "
        "classification error of them.")
  print()
  if radii:
    rows = [[label] + [common.fmt(out["models"][label]["contraction_ratio"][f"{r:g}"], ".4f")
                       for r in radii]
            + [common.fmt(out["models"][label]["jacobian_fro_mean"] / np.sqrt(784), ".4f")]
            for label, _, _ in MODELS]
    common.print_table(["model"] + [f"r={r:g}" for r in radii] + ["E||J||_F/28"], rows,
                       title="contraction ratio E ||f(x + r u) - f(x)|| / r, u a random unit "
                             "direction (paper claim: the CAE's curve lies below the others')")
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  out.update(steps=steps, wall_s=total)
  common.print_json(out)


if __name__ == "__main__":
  main()
