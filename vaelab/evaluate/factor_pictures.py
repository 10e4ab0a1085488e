"""Pictures of what latents capture, for the beta-VAE reproduction (Higgins et al. 2017,
Burgess et al. 2018): the latent x factor mutual information, the factor each latent
stands for, the disentanglement scores over training, and the per-latent KL over
training (capacity annealing switches latents on one at a time).

Inputs are plain arrays and lists, so that the figures can be drawn from a run's
`disentanglement.scores(...)` result (`.mig.mutual_information`, `.mig.factor_entropy`),
from `metrics.jsonl` rows, or from a notebook. Each function writes one PNG (matplotlib,
Agg backend) and returns its path.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def _names(names, count, prefix):
  if names is None:
    return [f"{prefix}{i}" for i in range(count)]
  if len(names) != count:
    raise ValueError(f"{len(names)} names for {count} {prefix or 'entries'} "
                     f"(expected one per column/row)")
  return [str(n) for n in names]


def factor_of_latent(mi: np.ndarray, factor_names: Sequence[str] | None = None,
                     entropy: np.ndarray | None = None, min_value: float = 0.0
                     ) -> list[tuple[str | None, float]]:
  """Per latent (row of the (d, F) mutual-information matrix): the factor it shares the
  most information with and that information, normalised by the factor's entropy when
  `entropy` (F,) is given (1 = the latent determines the factor), in nats otherwise.

  Factor columns that are all NaN (factors that do not vary) are ignored. A latent whose
  best value is at most `min_value` (a collapsed latent) gets (None, value).
  """
  mi = np.asarray(mi, np.float64)
  if mi.ndim != 2:
    raise ValueError(f"mi must be (latents, factors), got shape {mi.shape}")
  names = _names(factor_names, mi.shape[1], "factor ")
  score = mi if entropy is None else mi / np.asarray(entropy, np.float64)[None, :]
  out = []
  for row in score:
    if np.isnan(row).all():
      out.append((None, float("nan")))
      continue
    j = int(np.nanargmax(row))
    out.append((names[j] if row[j] > min_value else None, float(row[j])))
  return out


def latent_labels(mi: np.ndarray, factor_names: Sequence[str] | None = None,
                  entropy: np.ndarray | None = None, kl: Sequence[float] | None = None,
                  min_value: float = 0.05) -> list[str]:
  """"z3: posX (0.71, 2.4 nats)": a traversal row's label from `factor_of_latent`."""
  found = factor_of_latent(mi, factor_names, entropy, min_value)
  labels = []
  for i, (name, value) in enumerate(found):
    parts = [f"{value:.2f}"] + ([f"KL {kl[i]:.2f}"] if kl is not None else [])
    labels.append(f"z{i}: {name or '-'} ({', '.join(parts)})")
  return labels


def save_mutual_information(mi: np.ndarray, path: str,
                            factor_names: Sequence[str] | None = None,
                            kl: Sequence[float] | None = None,
                            entropy: np.ndarray | None = None, title: str | None = None) -> str:
  """Heat map of the (latents, factors) mutual information: factors across, latents down
  (labelled with their KL in nats when `kl` is given); normalised by each factor's entropy
  when `entropy` is given, so that columns share one 0..1 scale."""
  mi = np.asarray(mi, np.float64)
  if mi.ndim != 2:
    raise ValueError(f"mi must be (latents, factors), got shape {mi.shape}")
  d, num_f = mi.shape
  shown = mi if entropy is None else mi / np.asarray(entropy, np.float64)[None, :]
  rows = [f"z{i}" + (f" (KL {kl[i]:.2f})" if kl is not None else "") for i in range(d)]
  fig, ax = plt.subplots(figsize=(1.2 + 0.9 * num_f, 0.8 + 0.38 * d))
  im = ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", aspect="auto",
                 vmin=0.0, vmax=1.0 if entropy is not None else None)
  ax.set_xticks(range(num_f), _names(factor_names, num_f, "factor "), rotation=30, ha="right")
  ax.set_yticks(range(d), rows)
  for i in range(d):
    for j in range(num_f):
      if np.isfinite(shown[i, j]):
        ax.text(j, i, f"{shown[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if shown[i, j] < 0.6 * np.nanmax(shown) else "black")
  fig.colorbar(im, ax=ax, label="MI / H(factor)" if entropy is not None else "MI (nats)")
  ax.set_title(title or "latent x factor mutual information")
  return _save(fig, path)


def _strip(metric: str) -> str:
  return metric[len("eval/"):] if metric.startswith("eval/") else metric


def save_metric_curves(runs, path: str,
                       metrics: Sequence[str] = ("betavae_score", "factorvae_score", "mig",
                                                 "dci_disentanglement"),
                       title: str | None = None, group=None) -> str:
  """Scores against training step: one panel per metric, one line per run label (e.g.
  "beta=4"), the mean over that label's runs (seeds) with their min-max spread shaded.

  runs: [{"label": "beta=4", "curves": {"mig": [(step, value), ...], ...}}, ...], or a
  dict {run name: {metric: [(step, value), ...]}} whose names `group(name)` maps to line
  labels (e.g. "beta=4 seed=1" -> "beta=4"; default: one line per run). Metric names may
  carry the eval/ prefix. Runs of one label are averaged at the steps all of them have.
  """
  if isinstance(runs, Mapping):
    runs = [{"label": group(name) if group else name, "curves": c} for name, c in runs.items()]
  if not runs:
    raise ValueError("save_metric_curves: no runs")
  by_label: dict[str, list[dict]] = {}
  for run in runs:
    if "label" not in run or "curves" not in run:
      raise ValueError(f"a run must be {{'label': ..., 'curves': {{metric: [(step, value)]}}}}"
                       f", got keys {sorted(run)}")
    curves = {_strip(k): v for k, v in run["curves"].items()}
    by_label.setdefault(str(run["label"]), []).append(curves)
  metrics = [_strip(m) for m in metrics]
  cols = min(4, len(metrics))
  fig, axes = plt.subplots(math.ceil(len(metrics) / cols), cols, squeeze=False,
                           figsize=(3.6 * cols, 2.9 * math.ceil(len(metrics) / cols)))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, metric in zip(axes.flat, metrics):
    for c, (label, members) in enumerate(by_label.items()):
      series = [dict((int(s), float(v)) for s, v in m.get(metric, [])) for m in members]
      series = [s for s in series if s]
      if not series:
        continue
      steps = sorted(set.intersection(*(set(s) for s in series)))
      if not steps:
        continue
      values = np.array([[s[t] for t in steps] for s in series])
      color = colors[c % len(colors)]
      ax.plot(steps, values.mean(0), color=color, marker="o", ms=3,
              label=f"{label} (n={len(series)})")
      if len(series) > 1:
        ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2)
    ax.set_title(metric)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(metrics):]:
    ax.axis("off")
  drawn = [ax for ax in axes.flat if ax.lines]
  if drawn:
    drawn[0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def save_kl_curves(kl_per_step: Sequence[tuple[int, Sequence[float]]], path: str,
                   labels: Sequence[str] | None = None,
                   capacity: Sequence[tuple[int, float]] | None = None,
                   title: str | None = None) -> str:
  """Per-latent KL (nats) against training step, one line per latent labelled with what it
  captures (`labels`, e.g. from `latent_labels`); `capacity` [(step, C)] adds the target
  capacity beside the total KL (Burgess et al.: latents switch on one at a time as C
  grows)."""
  if not kl_per_step:
    raise ValueError("save_kl_curves: no (step, kl) rows")
  steps = np.array([int(s) for s, _ in kl_per_step])
  kl = np.array([np.asarray(v, np.float64) for _, v in kl_per_step])
  if kl.ndim != 2:
    raise ValueError(f"each row must hold one KL per latent; got shape {kl.shape}")
  names = _names(labels, kl.shape[1], "z")
  fig, ax = plt.subplots(figsize=(7.5, 4.2))
  for i in np.argsort(-kl[-1]):  # legend in order of final KL
    ax.plot(steps, kl[:, i], label=names[i], lw=1.4)
  if capacity is not None:
    cs = np.array([(int(s), float(c)) for s, c in capacity])
    ax2 = ax.twinx()
    ax2.plot(cs[:, 0], cs[:, 1], "k--", lw=1, label="capacity C")
    ax2.plot(steps, kl.sum(1), "k:", lw=1, label="total KL")
    ax2.set_ylabel("nats (total)")
    ax2.legend(loc="upper left", fontsize=7)
  ax.set_xlabel("step")
  ax.set_ylabel("KL per latent (nats)")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.08 if capacity is not None
                                                           else 1.0, 0.5))
  ax.grid(alpha=0.3)
  ax.set_title(title or "per-latent KL during training")
  return _save(fig, path)


def save_latent_kl_curves(kl: Mapping[int, Sequence[tuple[int, float]]], path: str,
                          labels: Mapping[int, str] | Sequence[str] | None = None,
                          capacity: Sequence[tuple[int, float]] | None = None,
                          title: str | None = None) -> str:
  """`save_kl_curves` from per-latent curves {latent: [(step, KL), ...]} (a run's
  eval/kl_dim{d} rows) and labels {latent: factor name}: lines are "z{d}: factor",
  drawn at the steps every latent has."""
  if not kl:
    raise ValueError("save_latent_kl_curves: no latents")
  latents = sorted(kl)
  series = [dict((int(s), float(v)) for s, v in kl[d]) for d in latents]
  steps = sorted(set.intersection(*(set(c) for c in series)))
  if not steps:
    raise ValueError("save_latent_kl_curves: the latents share no step")
  names = labels if isinstance(labels, Mapping) else (
      {} if labels is None else dict(zip(latents, labels)))
  rows = [(t, [c[t] for c in series]) for t in steps]
  return save_kl_curves(rows, path, [f"z{d}: {names.get(d, '-')}" for d in latents],
                        capacity=capacity, title=title)


# The plane Higgins et al. (2017, fig. 7) show latent responses over: where a ground truth
# has both, a latent that encodes one of them alone varies along one axis of the picture.
POSITION_PLANE = ("pos_x", "pos_y")


def latent_responses(represent, ground_truth, factors: Sequence[int], draws: int,
                     rng: np.random.Generator) -> np.ndarray:
  """(size_a, size_b, d) mean code of `represent` at every pair of values of the two
  `factors`, averaged over `draws` uniform draws of the other factors (the same draws in
  every cell, so that a cell's mean differs from another's only by the two factors)."""
  a, b = factors
  sizes = ground_truth.factor_sizes
  others = ground_truth.sample_factors(draws, rng)
  grid = np.stack(np.meshgrid(np.arange(sizes[a]), np.arange(sizes[b]), indexing="ij"), -1)
  f = np.repeat(others[None], sizes[a] * sizes[b], axis=0)  # (cells, draws, factors)
  f[:, :, a] = grid.reshape(-1, 2)[:, :1]
  f[:, :, b] = grid.reshape(-1, 2)[:, 1:]
  f = f.reshape(-1, len(sizes))
  codes = np.concatenate([represent(ground_truth.observations(f[i:i + 1024]))
                          for i in range(0, len(f), 1024)])
  return codes.reshape(sizes[a], sizes[b], draws, -1).mean(2)


def save_latent_responses(responses: np.ndarray, path: str, latents: Sequence[int],
                          factor_names: Sequence[str] = POSITION_PLANE,
                          labels: Sequence[str] | None = None) -> str:
  """One heat map per latent in `latents` of its mean over the two factors' grid
  (`latent_responses`): the first factor across, the second down; each on its own colour
  scale, titled with `labels` (e.g. the factor it captures and its KL) when given."""
  responses = np.asarray(responses, np.float64)
  if responses.ndim != 3:
    raise ValueError(f"responses must be (size_a, size_b, latents), got {responses.shape}")
  latents = list(latents) or [0]
  fig, axes = plt.subplots(1, len(latents), figsize=(2.2 * len(latents), 2.6), squeeze=False)
  for ax, d, label in zip(axes[0], latents, labels or [f"z{d}" for d in latents]):
    ax.imshow(responses[:, :, d].T, cmap="RdBu_r", origin="lower")
    ax.set_title(label, fontsize=8)
    ax.set_xlabel(factor_names[0], fontsize=8)
    ax.set_ylabel(factor_names[1], fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("mean code over the two factors", fontsize=9)
  return _save(fig, path)
