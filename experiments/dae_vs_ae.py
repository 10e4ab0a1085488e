"""Denoising autoencoder (Vincent et al. 2008) against the same network trained without
corruption: reconstruction of corrupted evaluation images at several noise levels, and the
linear-probe error of both codes.

  .venv/bin/python experiments/split_npz.py ../shared/data/mnist_5k.npz \
      /tmp/mnist_train.npz /tmp/mnist_eval.npz --eval 1000
  .venv/bin/python experiments/dae_vs_ae.py [--noise_levels 0,0.1,0.25,0.5 --steps N --seeds 0,1]

The two runs are configs/dae_mnist.py (784-1000-500-250-30 ReLU, linear code, masking noise
nu = 0.25 during training) and the same config with model.noise_level=0, i.e.

  python -m vaelab.main --config=configs/dae_mnist.py --workdir=DIR \
      --config.data.name=npz --config.data.train_path=TRAIN --config.data.eval_path=EVAL \
      [--config.model.noise_level=0]

Each model trains once; its latest checkpoint is then evaluated with eval.noise_level set to
each level (eval/denoise_sse: squared error between the clean image and the reconstruction of
its masked version, the same masks for both models). The probe is eval/probe_error of each
run (logistic regression on the 30-d codes). Vincent et al. report error rates of stacked,
fine-tuned networks on 60k images, which do not transfer to one shallow probe on 4k, so the
paper column states the claim that our figures test. The last line of stdout is JSON.
"""
from __future__ import annotations

import time

import common

MODELS = (("DAE nu=0.25", "dae", {}), ("AE nu=0", "ae", {"model.noise_level": 0.0}))


def _holds(ok: bool) -> str:
  return "yes" if ok else "no"


def _probe_holds(dae: float, ae: float, n: int) -> str:
  """'tie' when the two error rates differ by less than one standard error of one of them."""
  p = (dae + ae) / 2
  if abs(dae - ae) < (p * (1 - p) / n) ** 0.5:
    return "tie (< 1 s.e.)"
  return _holds(dae < ae)


def main():
  p = common.parser(__doc__.split("\n\n")[0], "dae_vs_ae")
  p.add_argument("--noise_levels", default="0,0.1,0.25,0.5",
                 help="eval.noise_level values (fraction of masked pixels)")
  p.add_argument("--corruption", default="mask", help="eval.corruption: mask | salt_pepper | gaussian")
  args = p.parse_args()
  common.check_data(args)
  common.setup_logging(args.verbose)
  from vaelab.data import make_sources
  t0 = time.perf_counter()
  levels = [float(v) for v in args.noise_levels.split(",")]
  seeds = common.seeds_of(args)
  sources = None
  runs = {}
  for label, tag, overrides in MODELS:
    for seed in seeds:
      config = common.load_config("dae_mnist", None,
                                  {**common.common_overrides(args, seed), **overrides})
      workdir = common.workdir_for(args.workdir_root, tag, config)
      common.note(f"{label} seed={seed}: training {config.num_train_steps} steps in {workdir}")
      results, wall = common.train(config, workdir)
      sources = sources or make_sources(config.data)
      evals = common.evaluate(
          config, workdir,
          [{"eval.corruption": args.corruption, "eval.noise_level": l} for l in levels], sources)
      denoise = {l: ev["eval/denoise_sse"] for l, ev in zip(levels, evals)}
      common.note(f"  recon_sse {results['eval/recon_sse']:.2f}, denoise_sse "
                  + ", ".join(f"{l:g}: {v:.2f}" for l, v in denoise.items())
                  + f", probe {results['eval/probe_error']:.4f}, {wall:.0f} s")
      runs[(tag, seed)] = dict(results=results, denoise=denoise, wall_s=wall,
                               steps=int(config.num_train_steps),
                               train_noise=float(config.model.noise_level))

  def avg(tag, fn):
    return common.mean(fn(runs[(tag, s)]) for s in seeds)

  out = {"noise_levels": levels, "corruption": args.corruption, "seeds": seeds}
  for _, tag, _ in MODELS:
    out[tag] = {
        "denoise_sse": {f"{l:g}": avg(tag, lambda r: r["denoise"][l]) for l in levels},
        "recon_sse": avg(tag, lambda r: r["results"]["eval/recon_sse"]),
        "probe_error": avg(tag, lambda r: r["results"]["eval/probe_error"]),
        "pca_recon_sse": avg(tag, lambda r: r["results"].get("eval/pca_recon_sse", float("nan"))),
        "wall_s": avg(tag, lambda r: r["wall_s"])}
  out["probe_error_pixels"] = common.mean(r["results"]["eval/probe_error_pixels"]
                                          for r in runs.values())
  dae, ae = out["dae"], out["ae"]
  steps = runs[("dae", seeds[0])]["steps"]

  rows = []
  for l in levels:
    d, a = dae["denoise_sse"][f"{l:g}"], ae["denoise_sse"][f"{l:g}"]
    claim, holds = ("none (clean input)", "") if l == 0 else ("DAE lower", _holds(d < a))
    rows.append([f"{args.corruption} {l:g}", common.fmt(d, ".2f"), common.fmt(a, ".2f"),
                 common.fmt(a / d if d else float("nan"), ".2f"), claim, holds])
  common.print_table(
      ["eval corruption", "DAE", "AE", "AE/DAE", "paper claim", "holds"], rows,
      title=(f"eval/denoise_sse (per image, pixels in [0,1]) of 784-1000-500-250-30 ReLU AEs, "
             f"{steps} steps, seeds {seeds}; {args.eval}"))
  rows = [["linear probe error, 30-d code", common.pct(dae["probe_error"]),
           common.pct(ae["probe_error"]), "DAE lower (stacked DAEs beat stacked AEs, Table 1)",
           _probe_holds(dae["probe_error"], ae["probe_error"], len(sources[1]) * len(seeds))],
          ["linear probe error, raw pixels", common.pct(out["probe_error_pixels"]),
           common.pct(out["probe_error_pixels"]), "", ""],
          ["eval/recon_sse (clean)", common.fmt(dae["recon_sse"], ".2f"),
           common.fmt(ae["recon_sse"], ".2f"), "", ""],
          ["PCA-30 recon_sse", common.fmt(dae["pca_recon_sse"], ".2f"),
           common.fmt(ae["pca_recon_sse"], ".2f"), "", ""],
          ["wall s (train + final eval)", common.fmt(dae["wall_s"], ".0f"),
           common.fmt(ae["wall_s"], ".0f"), "", ""]]
  common.print_table(["", "DAE", "AE", "paper claim", "holds"], rows)
  print("The DAE never sees a clean image in training (a fraction nu of every input is masked),\n"
        "so its error on clean inputs can exceed its error on masked ones.")
  total = time.perf_counter() - t0
  print(f"took {total:.0f} s")
  out.update(steps=steps, wall_s=total)
  common.print_json(out)


if __name__ == "__main__":
  main()
