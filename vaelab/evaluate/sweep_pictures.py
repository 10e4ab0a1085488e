"""A sweep's metrics against each swept key: one PNG per key, one panel per eval/ metric."""
from __future__ import annotations

import math
import os

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


def plot_metrics(rows: list[dict], workdir: str, max_panels: int = 30) -> list[str]:
  """`sweep_<key>.png` for every swept numeric key: each metric against the key's values,
  one line per setting of the other swept keys (e.g. per seed). Returns the paths."""
  swept = [k for k in rows[0] if k != "trial" and not k.startswith("eval/")]
  metrics = sorted({k for r in rows for k in r if k.startswith("eval/")})[:max_panels]
  paths = []
  for key in swept:
    if not all(_number(r.get(key)) for r in rows) or len({r[key] for r in rows}) < 2:
      continue
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
    path = os.path.join(workdir, f"sweep_{key}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)
  return paths
