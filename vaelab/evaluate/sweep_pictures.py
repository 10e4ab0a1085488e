"""A sweep's metrics against each swept key: one panel per eval/ metric, in pages of at most
`PAGE` panels per key (`sweep_<key>.png`, then `sweep_<key>_2.png`, ...): the headline metrics
first, per-latent ones (`eval/kl_dim3`) last, none left out."""
from __future__ import annotations

import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _number(v):
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def log_spaced(values) -> bool:
  """Positive values whose ratios vary less than their differences (1e-4, 1e-3, 1e-2; 1, 2,
  4, 8): shown on a log axis, where a linear one crowds the small ones into a corner."""
  v = np.unique(np.asarray(values, np.float64))
  if len(v) < 3 or v[0] <= 0:
    return False
  ratios, steps = v[1:] / v[:-1], np.diff(v)
  return ratios.max() / ratios.min() < steps.max() / steps.min()


PAGE = 30
# What a reader of a sweep looks for first: the objective, the bounds, reconstruction, the
# disentanglement scores; then the rest in name order, per-latent metrics last.
HEADLINE = ("eval/loss", "eval/elbo", "eval/nll", "eval/kl", "eval/recon_sse",
            "eval/active_units", "eval/mig", "eval/factorvae_score", "eval/betavae_score",
            "eval/dci_disentanglement", "eval/sap_score", "eval/modularity_score",
            "eval/irs", "eval/perplexity", "eval/codebook_usage", "eval/probe_error")


def metric_order(metrics) -> list[str]:
  """Every metric once: HEADLINE's first, then by name, `..._dim<d>` ones last by d."""
  metrics = set(metrics)
  per_latent = lambda m: re.fullmatch(r"(.*_dim)(\d+)", m)
  head = [m for m in HEADLINE if m in metrics]
  rest = sorted(m for m in metrics - set(head) if not per_latent(m))
  latent = sorted((m for m in metrics - set(head) if per_latent(m)),
                  key=lambda m: (per_latent(m).group(1), int(per_latent(m).group(2))))
  return head + rest + latent


def plot_metrics(rows: list[dict], workdir: str, page: int = PAGE) -> list[str]:
  """`sweep_<key>.png` (and `sweep_<key>_<n>.png` past `page` panels) for every swept
  numeric key: each metric against the key's values, one line per setting of the other
  swept keys (e.g. per seed). Returns the paths."""
  swept = [k for k in rows[0] if k != "trial" and not k.startswith("eval/")]
  ordered = metric_order({k for r in rows for k in r if k.startswith("eval/")})
  paths = []
  for key in swept:
    if not all(_number(r.get(key)) for r in rows) or len({r[key] for r in rows}) < 2:
      continue
    for n, start in enumerate(range(0, len(ordered), page)):
      name = f"sweep_{key}.png" if n == 0 else f"sweep_{key}_{n + 1}.png"
      paths.append(_plot_page(rows, swept, key, ordered[start:start + page],
                              os.path.join(workdir, name)))
  return paths


def _plot_page(rows, swept, key, metrics, path) -> str:
  others = [k for k in swept if k != key]
  log_x = log_spaced([r[key] for r in rows])
  cols = min(5, len(metrics))
  fig, axes = plt.subplots(math.ceil(len(metrics) / cols), cols, squeeze=False,
                           figsize=(3.2 * cols, 2.6 * math.ceil(len(metrics) / cols)))
  lines: dict[tuple, list] = {}
  for r in rows:
    lines.setdefault(tuple(str(r.get(k)) for k in others), []).append(r)
  for ax, metric in zip(axes.flat, metrics):
    for label, members in lines.items():
      members = sorted(members, key=lambda r: r[key])
      ax.plot([r[key] for r in members], [r.get(metric, np.nan) for r in members], "o-",
              label=",".join(f"{k}={v}" for k, v in zip(others, label)) or None)
    ax.set_title(metric, fontsize=8)
    ax.set_xlabel(key + (" (log)" if log_x else ""), fontsize=8)
    if log_x:
      ax.set_xscale("log")
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(metrics):]:
    ax.axis("off")
  if others:
    axes.flat[0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path
