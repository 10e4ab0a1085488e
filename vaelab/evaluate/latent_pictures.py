"""Pictures of a latent space: traversals, interpolations, and for 2-D latents the learned
manifold (Kingma & Welling 2014, Fig. 4) and the scatter of codes.

`save_latent_pictures` has the signature of a family's `pictures` hook; it serves every
family with a continuous code. With `posterior=True` (VAEs) the model's `encode(x)` returns
(mean, logvar): rows are ordered by KL and traversals run over the prior's +-3. With
`posterior=False` (autoencoders) `encode` returns the code: rows are ordered by the code's
variance over the images and each traversal runs over its latent's 5%-95% range. `generate`
maps codes to images in [0, 1] (the families' decode convention). `latent_labels` (one
string per latent, e.g. the factor it captures, from the disentanglement scores) label the
traversal rows.
"""
from __future__ import annotations

import functools
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from vaelab import spmd  # noqa: E402
from vaelab.evaluate import pictures  # noqa: E402
from vaelab.losses import kl as kl_lib  # noqa: E402

# Every model call runs at this batch size (the last chunk padded), so encode and generate
# compile once each whatever the number of images a picture needs.
CHUNK = 256
KL_SAMPLE = 1000  # images behind the per-dimension KL that orders the traversal rows
SCATTER_SAMPLE = 5000
MANIFOLD_QUANTILES = (0.05, 0.95)


# Jitted: op by op, each of the formula's few operations would be compiled on its own.
_mean_kl = jax.jit(lambda mean, logvar: kl_lib.gaussian_kl_per_dim(mean, logvar).mean(0))


def kl_per_dim(mean, logvar) -> np.ndarray:
  """Mean over images of KL(q(z_d|x) || N(0, 1)) for each dimension d, (D,), in nats."""
  return np.asarray(_mean_kl(np.asarray(mean, np.float32), np.asarray(logvar, np.float32)))


def traversal_order(kl, max_rows: int | None = None) -> np.ndarray:
  """Dimensions by decreasing KL (ties by index, so the order is reproducible), at most
  `max_rows` of them: the dimensions a reader should look at first."""
  kl = np.asarray(kl)
  order = np.lexsort((np.arange(len(kl)), -kl))
  return order if max_rows is None else order[:max_rows]


def traversal_latents(base, dims, values) -> np.ndarray:
  """(len(dims) * len(values), D): `base` with dimension dims[r] set to each value in turn."""
  base, values = np.asarray(base, np.float32), np.asarray(values, np.float32)
  z = np.tile(base, (len(dims), len(values), 1))
  for r, d in enumerate(dims):
    z[r, :, d] = values
  return z.reshape(-1, base.shape[-1])


def interpolation_latents(z_start, z_end, steps: int) -> np.ndarray:
  """(pairs, steps, D): straight lines from each z_start to its z_end, ends included."""
  t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :, None]
  z_start, z_end = np.asarray(z_start)[:, None], np.asarray(z_end)[:, None]
  return (1 - t) * z_start + t * z_end


def manifold_latents(n: int = 20, quantiles=MANIFOLD_QUANTILES) -> np.ndarray:
  """(n*n, 2) row-major: z_0 grows to the right, z_1 grows upward (as in the scatter plot).

  Equal steps in prior probability rather than in z, so each tile covers the same prior mass.
  """
  q = stats.norm.ppf(np.linspace(*quantiles, n)).astype(np.float32)
  z1, z0 = np.meshgrid(q[::-1], q, indexing="ij")
  return np.stack([z0.ravel(), z1.ravel()], -1)


def _chunked(fn, variables, x: np.ndarray):
  """fn over x in CHUNK-sized pieces, the last one padded, results concatenated on host."""
  outs = []
  for i in range(0, len(x), CHUNK):
    part = x[i:i + CHUNK]
    pad = CHUNK - len(part)
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
    outs.append(jax.tree.map(lambda a: np.asarray(a)[:CHUNK - pad], fn(variables, part)))
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def _model_inputs(config, images: np.ndarray) -> np.ndarray:
  # The evaluation's input transform: a model trained on binarized pixels is shown them.
  return spmd.eval_input(config.data.binarize, int(config.seed), images,
                         np.arange(len(images)))


def _save_labelled_rows(images, ncols: int, row_labels, path: str, title: str) -> str:
  """A grid like `pictures.save_grid`, with a text label at the left of each row."""
  canvas = pictures.tile(images, ncols)
  image_h = images.shape[1]
  # Small images (8x8) would be unreadable at one screen pixel each.
  scale = max(1, -(-300 // canvas.shape[1]))
  w, h = canvas.shape[1] * scale / 100, canvas.shape[0] * scale / 100  # inches at 100 dpi
  # Monospace at 8 pt is about 0.07 inch a character.
  label_w, title_h = max(1.4, 0.07 * max(map(len, row_labels), default=0) + 0.2), 0.4
  fig = plt.figure(figsize=(w + label_w, h + title_h), dpi=100)
  ax = fig.add_axes([label_w / (w + label_w), 0, w / (w + label_w), h / (h + title_h)])
  if canvas.shape[-1] == 1:
    ax.imshow(canvas[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  else:
    ax.imshow(canvas, interpolation="nearest")
  centres = [1 + r * (image_h + 1) + image_h / 2 for r in range(len(row_labels))]
  ax.set_yticks(centres, row_labels, fontsize=8, family="monospace")
  ax.set_xticks([])
  ax.tick_params(length=0)
  for spine in ax.spines.values():
    spine.set_visible(False)
  fig.text(0.5, 1 - 0.05 / (h + title_h), title, fontsize=7, ha="center", va="top")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _save_scatter(mean, labels, path: str, num_classes: int | None, box: float) -> str:
  fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
  kw = dict(s=4, alpha=0.7, linewidths=0)
  if labels is None:
    ax.scatter(mean[:, 0], mean[:, 1], color="tab:blue", **kw)
  else:
    k = int(num_classes or labels.max() + 1)
    if k <= 20:  # discrete colours, one tick per class
      cmap = plt.get_cmap("tab10" if k <= 10 else "tab20").resampled(k)
      norm = mcolors.BoundaryNorm(np.arange(k + 1) - 0.5, k)
      sc = ax.scatter(mean[:, 0], mean[:, 1], c=labels, cmap=cmap, norm=norm, **kw)
      fig.colorbar(sc, ax=ax, ticks=np.arange(k), label="label")
    else:
      sc = ax.scatter(mean[:, 0], mean[:, 1], c=labels, cmap="viridis", **kw)
      fig.colorbar(sc, ax=ax, label="label")
  # The region manifold.png decodes, so the two pictures can be read together.
  ax.add_patch(plt.Rectangle((-box, -box), 2 * box, 2 * box, fill=False, ls="--", lw=0.8,
                             color="0.4"))
  ax.set_xlabel("z0")
  ax.set_ylabel("z1")
  ax.set_title(f"codes of {len(mean)} evaluation images", fontsize=9)
  ax.set_aspect("equal", adjustable="datalim")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def code_order(codes, max_rows: int | None = None) -> np.ndarray:
  """Latents by decreasing variance of their codes over the images (ties by index): the
  autoencoders' counterpart of the KL order."""
  return traversal_order(np.var(np.asarray(codes, np.float64), axis=0), max_rows)


def save_latent_pictures(config, model, variables, workdir: str, source, latent_labels=None,
                         *, posterior: bool = True, encode: str = "encode",
                         decode: str = "generate", traversal_range: float = 3.0,
                         traversal_steps: int = 10, max_traversal_rows: int = 10,
                         num_pairs: int = 8, interpolation_steps: int = 10,
                         manifold_size: int = 20, seed: int = 0) -> list[str]:
  """traversals.png, interpolations.png and, for 2-D latents, manifold.png (VAEs) and
  latent_scatter.png in `workdir`; returns the paths written."""
  n_source = len(source)
  if n_source == 0 or source.info.image_shape is None or len(source.info.image_shape) != 3:
    return []
  encode_fn = functools.partial(spmd.apply, model, method=encode)
  generate = functools.partial(spmd.apply, model, method=decode)

  def decode_fn(z):
    return _chunked(generate, variables, np.asarray(z, np.float32))

  # A random sample rather than the first images: sources are often ordered by class.
  probe = _chunked(encode_fn, variables, _model_inputs(config, source.get(np.arange(1))["image"]))
  latent_dim = int((probe[0] if posterior else probe).shape[-1])
  n = min(n_source, SCATTER_SAMPLE if latent_dim == 2 else KL_SAMPLE)
  idx = np.random.default_rng(seed).permutation(n_source)[:n]
  means, logvars, labels = [], [], []
  for i in range(0, n, 1000):  # bounded host memory for large images
    batch = source.get(idx[i:i + 1000])
    out = _chunked(encode_fn, variables, _model_inputs(config, batch["image"]))
    means.append(out[0] if posterior else out)
    logvars.append(out[1] if posterior else None)
    labels.append(batch.get("label"))
  mean = np.concatenate(means).reshape(n, -1)
  has_label = source.info.has_label and all(lb is not None for lb in labels)
  labels = np.concatenate(labels) if has_label else None
  n_shown = min(n, max(1, 2 * num_pairs))
  shown = _model_inputs(config, source.get(idx[:n_shown])["image"])
  paths = []

  if posterior:
    kl = kl_per_dim(mean[:KL_SAMPLE], np.concatenate(logvars)[:KL_SAMPLE])
    dims = traversal_order(kl, max_traversal_rows)
    values = np.broadcast_to(np.linspace(-traversal_range, traversal_range, traversal_steps),
                             (latent_dim, traversal_steps))
    names = [f"z{d:<3d} KL {kl[d]:5.2f}" for d in dims]
    how = (f"z_d from {-traversal_range:g} to {traversal_range:g}, others at one image's "
           f"posterior mean;\nrows by mean KL (nats)")
  else:
    dims = code_order(mean, max_traversal_rows)
    lo, hi = np.quantile(mean, MANIFOLD_QUANTILES, axis=0)
    values = np.linspace(lo, hi, traversal_steps, axis=1)
    names = [f"z{d:<3d} sd {np.std(mean[:, d]):5.2f}" for d in dims]
    how = "z_d over its 5%-95% range, others at one image's code;\nrows by the code's variance"
  if latent_labels is not None:
    names = [latent_labels[d] for d in dims]
  z = np.tile(mean[:1], (len(dims), traversal_steps, 1))
  for r, d in enumerate(dims):
    z[r, :, d] = values[d]
  images = decode_fn(z.reshape(-1, latent_dim))
  more = f", top {len(dims)} of {latent_dim} dims" if len(dims) < latent_dim else ""
  paths.append(_save_labelled_rows(images, traversal_steps, names,
                                   os.path.join(workdir, "traversals.png"), how + more))

  pairs = min(num_pairs, n_shown // 2)
  if pairs:
    a, b = np.arange(0, 2 * pairs, 2), np.arange(1, 2 * pairs, 2)
    z = interpolation_latents(mean[a], mean[b], interpolation_steps)
    between = decode_fn(z.reshape(-1, latent_dim)).reshape(pairs, interpolation_steps,
                                                           *shown.shape[1:])
    rows = np.concatenate([shown[a][:, None], between, shown[b][:, None]], 1)
    paths.append(pictures.save_grid(rows.reshape(-1, *shown.shape[1:]),
                                    os.path.join(workdir, "interpolations.png"),
                                    ncols=interpolation_steps + 2))

  if latent_dim == 2:
    box = float(np.abs(mean).max())
    if posterior:
      z = manifold_latents(manifold_size)
      paths.append(pictures.save_grid(decode_fn(z), os.path.join(workdir, "manifold.png"),
                                      ncols=manifold_size))
      box = float(np.abs(z).max())
    paths.append(_save_scatter(mean, labels, os.path.join(workdir, "latent_scatter.png"),
                               source.info.num_classes, box))
  return paths


# The autoencoders' hook: codes, not posteriors.
save_code_pictures = functools.partial(save_latent_pictures, posterior=False)
