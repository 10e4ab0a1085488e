"""What the VQ families report about their codes: perplexity, codebook usage, commitment.

Every step train/perplexity and train/codebook_usage of the global batch (the quantizers'
`counts` are psummed over devices); at the end eval/perplexity and eval/codebook_usage of
the whole evaluation set (`final_analyses`: the eval step only averages per-example values,
and the perplexity of a set is not the mean of its images'; the per-image one is
eval/image_perplexity).
The names are the same for every quantizer: for fsq the usage and perplexity are over the
prod(fsq_levels) grid points, commitment is the squared distance of the bounded input to
its grid point (not in the loss); for residual each codebook has its own names with a
suffix _q0, _q1, ... (perplexity, codebook_usage, commitment = that level's
||r_l - q_l||^2, the residual it leaves), and the un-suffixed perplexity and codebook_usage
are their means over the levels, commitment the distance from z to the sum of its codes
(VQ-VAE-2 puts its level last: eval/codebook_usage_q0_bottom).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaelab import spmd
from vaelab.losses import vqvae as vq_losses
from vaelab.models.quantizer import code_counts
from vaelab.models.quantizer_spec import QuantizerSpec


def perplexity(counts):
  """exp(entropy) of the code-usage distribution `counts` (K,): K when uniform, 1 when a
  single code is used (0 log 0 = 0)."""
  counts = jnp.asarray(counts, jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def metric_name(metric: str, level: str) -> str:
  """A metric's name at a latent level ("" for the single level of VQ-VAE)."""
  return f"{metric}_{level}" if level else metric


def image_perplexity(indices, num_codes: int):
  """(B, ...) code indices -> (B,) perplexity of each image's own code usage."""
  counts = jax.vmap(lambda i: code_counts(i, num_codes))(indices)
  return jax.vmap(perplexity)(counts)


def per_codebook(indices, residual: bool):
  """A quantizer's index map(s) as a list, one per codebook (residual: the last axis)."""
  return [indices[..., l] for l in range(indices.shape[-1])] if residual else [indices]


def usage_metrics(q, level: str, residual: bool) -> dict:
  """train/ code statistics of one latent level from its quantizer output (module
  docstring: residual levels get _q<l> names, the plain names are their means)."""
  counts = q["counts"] if residual else q["counts"][None]
  ppl = [perplexity(c) for c in counts]
  usage = [jnp.mean(c > 0) for c in counts]
  out = {metric_name("perplexity", level): jnp.mean(jnp.stack(ppl)),
         metric_name("codebook_usage", level): jnp.mean(jnp.stack(usage))}
  if residual:
    for l, (p, u) in enumerate(zip(ppl, usage)):
      out[metric_name(f"perplexity_q{l}", level)] = p
      out[metric_name(f"codebook_usage_q{l}", level)] = u
  return out


def commitment_metrics(q, level: str, residual: bool) -> dict:
  """Per-example squared distances from each level's input to its code (module docstring)."""
  out = {metric_name("commitment", level): vq_losses.commitment_loss(q["z_e"], q["z_q"])}
  if residual:
    for l, (r, code) in enumerate(q["pairs"]):
      out[metric_name(f"commitment_q{l}", level)] = vq_losses.commitment_loss(r, code)
  return out


def encode_source(model, variables, source, batch_size: int = 500, limit=None,
                  method: str = "code_indices"):
  """Code indices of a whole split: a tuple (LEVELS order) of int32 arrays (N, H', W').

  What a prior trains on: `variables` of a frozen trained model (e.g.
  `training.workdir.restore_latest(exp, workdir).variables()`), `source` a data source. With
  method="code_maps", residual maps are (N, H', W', num_quantizers).
  """
  n = len(source) if limit is None else min(len(source), limit)
  maps = spmd.apply_in_chunks(model, variables, source, method=method, indices=np.arange(n),
                              chunk=batch_size)
  return tuple(np.asarray(m).astype(np.int32) for m in maps)


def code_statistics(indices, num_codes: int) -> tuple[float, float]:
  """(perplexity, fraction of codes used) of a set of code indices."""
  counts = np.bincount(np.asarray(indices).ravel(), minlength=num_codes)
  return float(perplexity(counts)), float(np.mean(counts > 0))


def final_analyses(config, model, variables, train_source, eval_source):
  """Set-level code statistics of the evaluation split: eval/perplexity = exp(entropy) of
  the code frequencies over all its latent positions, eval/codebook_usage = the fraction
  of the K codes used at least once (per level with a suffix for VQ-VAE-2; residual: per
  codebook with _q<l>, the plain names their means; fsq: K = prod(fsq_levels))."""
  spec = QuantizerSpec.from_config(config.model)
  residual = spec.quantizer == "residual"
  out = {}
  for level, idx in zip(model.LEVELS, encode_source(model, variables, eval_source,
                                                     int(config.eval.batch_size),
                                                     method="code_maps")):
    stats = [code_statistics(i, spec.codebook_size) for i in per_codebook(idx, residual)]
    out[f"eval/{metric_name('perplexity', level)}"] = float(np.mean([p for p, _ in stats]))
    out[f"eval/{metric_name('codebook_usage', level)}"] = float(np.mean([u for _, u in stats]))
    if residual:
      for l, (ppl, usage) in enumerate(stats):
        out[f"eval/{metric_name(f'perplexity_q{l}', level)}"] = ppl
        out[f"eval/{metric_name(f'codebook_usage_q{l}', level)}"] = usage
  return out
