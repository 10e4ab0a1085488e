"""The quantizer of a VQ family's config: its keys, their checks, and the module they build.

Quantizers (`model.quantizer`, each usable in both VQ families and at both levels of
VQ-VAE-2; their modules return one dict, see quantizer.VectorQuantizer.__call__):
  vq        the nearest of `model.num_codes` codes (models/quantizer.py; EMA codebook unless
            `model.ema_decay` = 0; restarts, k-means). The default.
  fsq       finite scalar quantization (models/fsq.py) to the grid `model.fsq_levels`:
            prod(levels) implicit codes, no codebook, no quantization loss. model.code_dim
            may differ from len(fsq_levels): a learned projection is put between them.
  residual  `model.num_quantizers` codebooks of `model.num_codes` codes, each quantizing
            the previous one's residual (models/residual_vq.py); EMA etc. as for vq.
  lfq       lookup-free quantization (models/lfq.py, MAGVIT-v2): the signs of
            d = log2(model.num_codes) channels (num_codes a power of 2), 2^d implicit codes,
            a learned projection code_dim <-> d when they differ; commitment term and the
            entropy penalty (loss.entropy_weight, loss.entropy_temperature).
  bsq       binary spherical quantization (models/bsq.py): as lfq on the unit sphere, codes
            sign(u) / sqrt(d); its factorised entropy penalty.
  simvq     SimVQ (models/simvq.py): a frozen random codebook times a learned linear map,
            trained by the codebook loss; no EMA, restarts or k-means.
The quantizers without a learned codebook of their own (fsq, lfq, bsq, simvq) do not read
`model.ema_decay` (a default every VQ config sets); lfq and bsq alone read the loss.entropy_*
keys. Options where they apply: `model.codebook_norm` = "l2" (vq: cosine lookup, ViT-VQGAN),
`model.codebook_dim` > 0 (vq, residual: lookup in a learned projection to that dimension;
0 = no projection), `model.gradient` = "straight_through" | "rotation" (all: the rotation
trick, quantizer.rotation_trick). `validate` refuses what does not apply.

One index per latent position, in [0, prior_num_codes(config)) (fsq: prod(fsq_levels)),
is what a prior over the codes models; a residual model has num_quantizers indices per
position, which that prior does not (`refuse_multiple_indices`).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn

from vaelab import checks
from vaelab.errors import ConfigError
from vaelab.models import fsq, lfq, quantizer as quantizer_lib
from vaelab.models.bsq import BinarySphericalQuantizer
from vaelab.models.quantizer import VectorQuantizer
from vaelab.models.residual_vq import ResidualVectorQuantizer
from vaelab.models.simvq import SimVectorQuantizer

QUANTIZERS = ("vq", "fsq", "residual", "lfq", "bsq", "simvq")
# The quantizers whose implicit codebook is the 2^d sign patterns (entropy penalty).
BINARY = ("lfq", "bsq")
# The step-changing string options, with all their values (Family.options).
OPTIONS = {"model.quantizer": QUANTIZERS,
           "model.codebook_norm": quantizer_lib.CODEBOOK_NORMS,
           "model.gradient": tuple(quantizer_lib.GRADIENTS)}


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
  num_codes: int = 512
  code_dim: int = 64
  ema_decay: float = 0.99
  epsilon: float = 1e-5
  dead_code_steps: int = 0
  kmeans_init: bool = False
  quantizer: str = "vq"
  codebook_norm: str = "none"
  codebook_dim: int = 0
  gradient: str = "straight_through"
  fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
  num_quantizers: int = 4

  @classmethod
  def from_config(cls, m) -> "QuantizerSpec":
    # .get: a prior rebuilds a frozen run from its config.json, which lacks the keys that
    # did not exist when it was written (it used today's defaults).
    return cls(int(m.num_codes), int(m.code_dim), float(m.ema_decay), float(m.ema_epsilon),
               int(m.dead_code_steps), bool(m.kmeans_init), m.get("quantizer", "vq"),
               m.get("codebook_norm", "none"), int(m.get("codebook_dim", 0)),
               m.get("gradient", "straight_through"),
               tuple(int(l) for l in m.get("fsq_levels", (8, 5, 5, 5))),
               int(m.get("num_quantizers", 4)))

  @property
  def codebook_size(self) -> int:
    """The number of values one index takes (fsq: the grid's prod(fsq_levels))."""
    return fsq.codebook_size(self.fsq_levels) if self.quantizer == "fsq" else self.num_codes

  @property
  def num_indices(self) -> int:
    """Indices per latent position: num_quantizers for residual, else 1."""
    return self.num_quantizers if self.quantizer == "residual" else 1

  @property
  def ema(self) -> bool:
    """Whether the module updates state in the "vq" collection (an EMA codebook)."""
    return self.quantizer in ("vq", "residual") and self.ema_decay > 0

  @property
  def codebook_loss(self) -> bool:
    """Whether the objective has the codebook term ||sg(z_e) - e||^2: codes learned by
    gradient (vq and residual without EMA, simvq's linear map)."""
    return self.quantizer == "simvq" or (self.quantizer in ("vq", "residual")
                                         and not self.ema)

  @property
  def entropy(self) -> bool:
    """Whether the objective has the entropy penalty (lfq, bsq)."""
    return self.quantizer in BINARY

  def module(self, axis_name, name=None) -> nn.Module:
    if self.quantizer == "lfq":
      return lfq.LookupFreeQuantizer(self.num_codes, self.code_dim, self.gradient, axis_name,
                                     name=name)
    if self.quantizer == "bsq":
      return BinarySphericalQuantizer(self.num_codes, self.code_dim, self.gradient, axis_name,
                                      name=name)
    if self.quantizer == "simvq":
      return SimVectorQuantizer(self.num_codes, self.code_dim, self.gradient, axis_name,
                                name=name)
    if self.quantizer == "fsq":
      return fsq.FiniteScalarQuantizer(self.fsq_levels, self.code_dim, self.gradient,
                                       axis_name, name=name)
    if self.quantizer == "residual":
      return ResidualVectorQuantizer(
          self.num_quantizers, self.num_codes, self.code_dim, self.ema_decay, self.epsilon,
          self.dead_code_steps, self.kmeans_init, axis_name, self.codebook_dim,
          self.gradient, name=name)
    return VectorQuantizer(self.num_codes, self.code_dim, self.ema_decay, self.epsilon,
                           self.dead_code_steps, self.kmeans_init, axis_name,
                           self.codebook_norm, self.codebook_dim, self.gradient, name=name)


def refuse_multiple_indices(spec: QuantizerSpec) -> None:
  """Raises ConfigError when a latent position has more than one index (what a prior over
  one code per position cannot take)."""
  if spec.num_indices > 1:
    raise ConfigError(
        f"model.quantizer={spec.quantizer!r} stores model.num_quantizers={spec.num_indices} "
        f"indices per latent position; encode_indices / decode_indices (and the vq_prior) "
        f"take one: use model.quantizer='vq' or 'fsq', or code_maps for all the levels")


def prior_num_codes(config) -> int:
  """The number of values a code of a trained VQ run takes, what a prior over its codes
  models: model.num_codes, or prod(model.fsq_levels) for fsq. ConfigError for residual."""
  spec = QuantizerSpec.from_config(config.model)
  refuse_multiple_indices(spec)
  return spec.codebook_size


def validate(m) -> None:
  """Checks the quantizer keys of `config.model`, its options and the combinations that do
  not apply; raises ConfigError naming the key."""
  checks.integer(m.num_codes, "model.num_codes", 1)
  checks.integer(m.code_dim, "model.code_dim", 1)
  if not 0 <= float(m.ema_decay) < 1:
    raise ConfigError(f"model.ema_decay={m.ema_decay}: must be in [0, 1) (0 turns the EMA "
                      f"codebook off)")
  if not 0 < float(m.ema_epsilon) < math.inf:
    raise ConfigError(f"model.ema_epsilon={m.ema_epsilon}: must be a number > 0")
  checks.integer(m.dead_code_steps, "model.dead_code_steps", 0)
  if not isinstance(m.kmeans_init, bool):
    raise ConfigError(f"model.kmeans_init={m.kmeans_init!r}: must be True or False")
  if float(m.ema_decay) == 0 and m.quantizer not in BINARY + ("simvq",):
    # Both overwrite codes; a parameter codebook may only change by the optimizer's updates.
    if m.dead_code_steps > 0:
      raise ConfigError(f"model.dead_code_steps={m.dead_code_steps} needs the EMA codebook: "
                        f"set model.ema_decay > 0 or model.dead_code_steps=0")
    if m.kmeans_init:
      raise ConfigError("model.kmeans_init=True needs the EMA codebook: set "
                        "model.ema_decay > 0 or model.kmeans_init=False")
  for key, values in OPTIONS.items():
    value = m[key.split(".")[1]]
    if value not in values:
      raise ConfigError(f"{key}={value!r}: expected one of {values}")
  checks.integer(m.codebook_dim, "model.codebook_dim", 0)
  checks.integer(m.num_quantizers, "model.num_quantizers", 1)
  levels = m.fsq_levels
  if not isinstance(levels, (tuple, list)) or not levels:
    raise ConfigError(f"model.fsq_levels={levels!r}: expected a non-empty tuple of integers "
                      f">= 2, e.g. (8, 5, 5, 5)")
  for level in levels:
    checks.integer(level, f"model.fsq_levels (entry {level!r})", 2)
  if fsq.codebook_size(levels) >= 2**31:
    raise ConfigError(f"model.fsq_levels={tuple(levels)}: prod = {fsq.codebook_size(levels)} "
                      f"codes do not fit an int32 index; use fewer or smaller levels")
  if m.quantizer == "fsq":
    _validate_fsq(m, levels)
  if m.quantizer in BINARY + ("simvq",):
    _validate_fixed(m)
  if m.quantizer == "residual" and m.codebook_norm != "none":
    raise ConfigError(f"model.codebook_norm={m.codebook_norm!r} does not apply to "
                      f"model.quantizer='residual' (unit-norm codes cannot sum to the "
                      f"shrinking residuals): use 'none'")


def _validate_fsq(m, levels) -> None:
  # FSQ has a fixed grid and no codebook: nothing to normalize, restart or initialize, and
  # its lookup space is len(fsq_levels) (a projection from code_dim is added when needed).
  # model.ema_decay is not read (it has a default that every VQ config sets).
  if m.codebook_norm != "none":
    raise ConfigError(f"model.codebook_norm={m.codebook_norm!r} does not apply to "
                      f"model.quantizer='fsq' (its codes are a fixed grid): use 'none'")
  if m.codebook_dim:
    raise ConfigError(f"model.codebook_dim={m.codebook_dim} does not apply to "
                      f"model.quantizer='fsq': its dimension is len(model.fsq_levels) = "
                      f"{len(levels)} (projected from model.code_dim when they differ); "
                      f"use 0")
  if m.dead_code_steps > 0:
    raise ConfigError(f"model.dead_code_steps={m.dead_code_steps} needs a learned codebook; "
                      f"model.quantizer='fsq' has none: set model.dead_code_steps=0")
  if m.kmeans_init:
    raise ConfigError("model.kmeans_init=True needs a learned codebook; "
                      "model.quantizer='fsq' has none: set model.kmeans_init=False")


def _validate_fixed(m) -> None:
  # lfq and bsq have an implicit codebook of sign patterns, simvq a frozen one moved by its
  # linear map: nothing to normalize, restart or initialize by k-means, and the lookup is
  # in their own space (lfq, bsq: d = log2(num_codes) channels; simvq: code_dim).
  # model.ema_decay is not read (it has a default that every VQ config sets).
  q = m.quantizer
  if m.codebook_norm != "none":
    raise ConfigError(f"model.codebook_norm={m.codebook_norm!r} does not apply to "
                      f"model.quantizer={q!r}: use 'none'")
  if m.codebook_dim:
    where = ("log2(model.num_codes), projected from model.code_dim when they differ"
             if q in BINARY else "model.code_dim")
    raise ConfigError(f"model.codebook_dim={m.codebook_dim} does not apply to "
                      f"model.quantizer={q!r}: its lookup dimension is {where}; use 0")
  if m.dead_code_steps > 0:
    raise ConfigError(f"model.dead_code_steps={m.dead_code_steps} needs an EMA codebook; "
                      f"model.quantizer={q!r} has none: set model.dead_code_steps=0")
  if m.kmeans_init:
    raise ConfigError(f"model.kmeans_init=True needs an EMA codebook; model.quantizer={q!r} "
                      f"has none: set model.kmeans_init=False")
  if q in BINARY:
    k = m.num_codes
    if not lfq.is_power_of_two(k) or k > 2**lfq.MAX_BITS:
      raise ConfigError(f"model.num_codes={k}: model.quantizer={q!r} has 2^d codes for d "
                        f"channels; use a power of 2 from 2 to 2^{lfq.MAX_BITS} (e.g. "
                        f"16384 = 2^14)")


def validate_entropy(loss) -> None:
  """Checks loss.entropy_weight (>= 0) and loss.entropy_temperature (> 0), the penalty of
  lfq and bsq; raises ConfigError naming the key."""
  weight, tau = loss.get("entropy_weight", 0.0), loss.get("entropy_temperature", 1.0)
  for key, value in (("loss.entropy_weight", weight), ("loss.entropy_temperature", tau)):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{key}={value!r}: must be a number")
  if not 0 <= float(weight) < math.inf:
    raise ConfigError(f"loss.entropy_weight={weight}: must be a number >= 0 (0 turns the "
                      f"entropy penalty of lfq / bsq off)")
  if not 0 < float(tau) < math.inf:
    raise ConfigError(f"loss.entropy_temperature={tau}: must be a number > 0 (the soft "
                      f"assignment's temperature)")
