"""VQ-VAE and VQ-VAE-2 on MNIST, each followed by a PixelSNAIL-style prior over its codes:
held-out nats per code against the uniform and unigram baselines, and sample grids.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/vq_prior_mnist.py [--models vqvae,vqvae2 --steps N
      --prior_steps N --prior_set batch_size=32]

Each model is two ordinary runs, i.e.

  python -m vaelab.main --config=configs/vqvae_mnist.py --workdir=VQ $NPZ     (or vqvae2_mnist)
  python -m vaelab.main --config=configs/vq_prior_mnist.py --workdir=PRIOR \
      --config.vq_workdir=VQ $NPZ

The prior's figures are results.json's: eval/prior_nll (nats per held-out code; for
VQ-VAE-2 over both maps, with eval/prior_nll_top and _bottom), eval/prior_unigram_nll (the
training codes' frequencies) and eval/prior_uniform_nll (log K). samples.png in each prior's
workdir holds sampled code maps through the frozen decoder, code_reconstructions.png the
held-out codes through it. The time per image of sampling end to end (every level's prior
and the decoder, `vq_prior.sample`, eval.sampler's cached sampler, compilation apart) is
measured on the trained prior, as --mode=sample runs it.

The papers' likelihoods are CIFAR-10 bits per dimension (VQ-VAE with a PixelCNN prior 4.67,
a VAE 4.51; van den Oord et al. 2017, Table 1 in the text): CIFAR-10 cannot be fetched on
this machine (no network), so that row is printed as not run; configs/vqvae_cifar10.py then
configs/vq_prior_mnist.py's keys with data.name=cifar10 is the route where the data is
prepared. The last line of stdout is JSON.
"""
from __future__ import annotations

import ast
import math
import os
import time

import common

MODELS = {"vqvae": ("VQ-VAE, 7x7 codes", "vqvae_mnist"),
          "vqvae2": ("VQ-VAE-2, 7x7 top + 14x14 bottom", "vqvae2_mnist")}
PAPER = {"vqvae_cifar10_bits_per_dim": 4.67, "vae_cifar10_bits_per_dim": 4.51}


def main():
  p = common.parser(__doc__.split("\n\n")[0], "vq_prior_mnist")
  p.add_argument("--models", default=",".join(MODELS), help=f"from {sorted(MODELS)}")
  p.add_argument("--prior_steps", type=int, default=None,
                 help="num_train_steps of the priors (default: the config's)")
  p.add_argument("--prior_set", action="append", default=[], metavar="KEY=VALUE",
                 help="an override of configs/vq_prior_mnist.py for every prior, e.g. "
                      "batch_size=32 (repeatable; values are Python literals)")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  names = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = sorted(set(names) - set(MODELS))
  if unknown:
    raise SystemExit(f"--models: unknown {unknown}; known: {sorted(MODELS)}")
  seed = common.seeds_of(args)[0]
  t0 = time.perf_counter()
  out = {"models": {}, "paper": PAPER}
  for name in names:
    label, config_name = MODELS[name]
    vq_config = common.load_config(config_name, None, common.common_overrides(args, seed))
    vq_dir = common.workdir_for(args.workdir_root, name, vq_config)
    common.note(f"{label}: training {vq_config.num_train_steps} steps in {vq_dir}")
    vq, vq_wall = common.train(vq_config, vq_dir)
    prior_overrides = {**common.data_overrides(args), "seed": seed, "vq_workdir": vq_dir}
    if args.prior_steps is not None:
      prior_overrides["num_train_steps"] = args.prior_steps
    for item in args.prior_set:
      key, _, value = item.partition("=")
      prior_overrides[key] = ast.literal_eval(value)
    prior_config = common.load_config("vq_prior_mnist", None, prior_overrides)
    prior_dir = common.workdir_for(args.workdir_root, f"{name}_prior", prior_config)
    common.note(f"  prior: training {prior_config.num_train_steps} steps in {prior_dir}")
    prior, prior_wall = common.train(prior_config, prior_dir)
    codes = sum(h * w for h, w in _code_shapes(name, vq_config))
    figures = {
        "recon_sse": vq["eval/recon_sse"], "pca_recon_sse": vq.get("eval/pca_recon_sse"),
        "perplexity": vq["eval/perplexity"], "codebook_usage": vq["eval/codebook_usage"],
        "prior_nll": prior["eval/prior_nll"], "unigram_nll": prior["eval/prior_unigram_nll"],
        "uniform_nll": prior["eval/prior_uniform_nll"],
        "prior_bits_per_image": prior["eval/prior_nll"] * codes / math.log(2),
        "codes_per_image": codes, "vq_wall_s": vq_wall, "prior_wall_s": prior_wall,
        "samples": os.path.join(prior_dir, "samples.png"),
        "code_reconstructions": os.path.join(prior_dir, "code_reconstructions.png")}
    figures.update(_sample_time(prior_config, prior_dir))
    for level in ("top", "bottom"):
      for key, metric in (("prior_nll", "prior_nll"), ("unigram_nll", "prior_unigram_nll")):
        if f"eval/{metric}_{level}" in prior:
          figures[f"{key}_{level}"] = prior[f"eval/{metric}_{level}"]
    common.note(f"  prior_nll {figures['prior_nll']:.3f} nats/code vs unigram "
                f"{figures['unigram_nll']:.3f}, uniform {figures['uniform_nll']:.3f}")
    out["models"][name] = figures

  rows = []
  for name, f in out["models"].items():
    rows.append([MODELS[name][0], common.fmt(f["recon_sse"], ".2f"),
                 common.fmt(f["pca_recon_sse"], ".2f"), common.fmt(f["perplexity"], ".0f"),
                 common.fmt(f["prior_nll"], ".3f"), common.fmt(f["unigram_nll"], ".3f"),
                 common.fmt(f["uniform_nll"], ".3f"),
                 common.fmt(f["prior_bits_per_image"], ".0f"),
                 common.fmt(f["sample_ms_per_image"], ".1f"),
                 common.fmt(f["vq_wall_s"] + f["prior_wall_s"], ".0f")])
  common.print_table(
      ["model", "recon_sse", "PCA", "perplexity", "prior nats/code", "unigram", "uniform",
       "prior bits/image", "sample ms/image", "wall s"], rows,
      title=f"VQ models + PixelSNAIL priors on MNIST ({args.eval}), held-out codes")
  for name, f in out["models"].items():
    if "prior_nll_top" in f:
      print(f"{MODELS[name][0]}: top {f['prior_nll_top']:.3f} vs unigram "
            f"{f['unigram_nll_top']:.3f}; bottom {f['prior_nll_bottom']:.3f} vs unigram "
            f"{f['unigram_nll_bottom']:.3f} nats/code")
    print(f"{MODELS[name][0]} samples: {f['samples']}")
  print(f"paper (CIFAR-10, bits/dim): VQ-VAE + PixelCNN prior {PAPER['vqvae_cifar10_bits_per_dim']}"
        f", VAE {PAPER['vae_cifar10_bits_per_dim']} -- not run here: CIFAR-10 cannot be "
        f"fetched offline, and MNIST's Bernoulli cross-entropy on grey levels is no likelihood")
  checks = {name: {"beats_unigram": f["prior_nll"] < f["unigram_nll"],
                   "beats_uniform": f["prior_nll"] < f["uniform_nll"]}
            for name, f in out["models"].items()}
  print("checks: " + "; ".join(f"{n}: " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                                    for k, v in c.items())
                               for n, c in checks.items()))
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  out.update(checks=checks, wall_s=total)
  common.print_json(out)


def _sample_time(config, workdir: str, n: int = 64) -> dict:
  """Milliseconds per image of `vq_prior.sample` (n images, end to end) from the run's latest
  checkpoint: the second of two calls, so that compilation is left out."""
  import jax
  import numpy as np
  from vaelab.models import vq_prior
  exp, state = common.restore(config, workdir)
  variables = jax.device_get(state.variables())
  key = jax.random.key(int(config.seed))
  np.asarray(vq_prior.sample(exp.model, variables, key, n))
  t = time.perf_counter()
  np.asarray(vq_prior.sample(exp.model, variables, key, n))
  return {"sample_ms_per_image": 1e3 * (time.perf_counter() - t) / n,
          "sampler": str(config.eval.sampler)}


def _code_shapes(name: str, config):
  from vaelab.models import vqvae, vqvae2
  from vaelab.data.base import SourceInfo
  module = vqvae2 if name == "vqvae2" else vqvae
  return module.latent_shapes(module.make_model(config, SourceInfo((28, 28, 1))))


if __name__ == "__main__":
  main()
