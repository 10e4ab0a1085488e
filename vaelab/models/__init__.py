"""Model families, looked up by `config.model.name` (one module per family)."""
from __future__ import annotations

import importlib
import pkgutil

from vaelab.errors import ConfigError
from vaelab.models.base import Family

# Shared building blocks, not families: they define no FAMILY.
_NOT_FAMILIES = {"base", "frozen_vq", "fsq", "nets", "pixelsnail", "pixelsnail_sampler",
                 "quantizer", "quantizer_spec", "residual_vq", "vq_metrics", "vq_trunk"}


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_FAMILIES)


def get_family(name: str) -> Family:
  if name not in available():
    raise ConfigError(f"model.name={name!r} is not a known family; available: {available()}")
  return importlib.import_module(f"vaelab.models.{name}").FAMILY
