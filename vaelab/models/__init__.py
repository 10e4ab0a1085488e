"""Model families, looked up by `config.model.name`: vaelab's own in the registry below (each
family's module imported when the family is first asked for: a run imports only its own),
and families defined elsewhere (a user's package, a notebook) added by `register_family`."""
from __future__ import annotations

import importlib

from vaelab.errors import ConfigError
from vaelab.models.base import Family

# {model.name: the module that defines its FAMILY}. The other modules here are shared
# building blocks (nets, quantizers, trunks, PixelSNAIL, ...).
FAMILIES = {
    "ae": "vaelab.models.ae",
    "dae": "vaelab.models.dae",
    "sparse_ae": "vaelab.models.sparse_ae",
    "ksparse": "vaelab.models.ksparse",
    "cae": "vaelab.models.cae",
    "vae": "vaelab.models.vae",
    "beta_tcvae": "vaelab.models.beta_tcvae",
    "dip_vae": "vaelab.models.dip_vae",
    "factor_vae": "vaelab.models.factor_vae",
    "ada_gvae": "vaelab.models.ada_gvae",
    "ada_mlvae": "vaelab.models.ada_mlvae",
    "vqvae": "vaelab.models.vqvae",
    "vqvae2": "vaelab.models.vqvae2",
    "vqgan": "vaelab.models.vqgan",
    "vq_prior": "vaelab.models.vq_prior",
    "tdvae": "vaelab.models.tdvae",
}


# Families registered at run time: {model.name: Family}.
_REGISTERED: dict[str, Family] = {}


def register_family(family) -> Family:
  """Makes `family` a value of `model.name` in this process: a `Family`, or a module (or its
  dotted name) that defines `FAMILY`. Returns the Family.

  The command line, sweeps and the contract tests load config files in every process they
  start, so a config file that imports the user's module and calls this (or a module that
  calls it when imported) is all they need. Registering a name again with another family,
  or one of vaelab's own names, is refused."""
  if isinstance(family, str):
    family = importlib.import_module(family)
  if not isinstance(family, Family) and isinstance(getattr(family, "FAMILY", None), Family):
    family = family.FAMILY
  if not isinstance(family, Family):
    raise TypeError(f"register_family takes a vaelab.models.base.Family or a module defining "
                    f"FAMILY, not {type(family).__name__}")
  if family.name in FAMILIES:
    raise ConfigError(f"model.name={family.name!r} is one of vaelab's own families; give the "
                      f"new family another name")
  known = _REGISTERED.get(family.name)
  if known is not None and known is not family and known != family:
    raise ConfigError(f"model.name={family.name!r} is already registered to another family "
                      f"({known.make_model!r}); give the new family another name")
  _REGISTERED[family.name] = family
  return family


def available() -> list[str]:
  return sorted([*FAMILIES, *_REGISTERED])


def get_family(name: str) -> Family:
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in FAMILIES:
    raise ConfigError(f"model.name={name!r} is not a known family; available: {available()} "
                      f"(a family defined outside vaelab joins with vaelab.register_family)")
  return importlib.import_module(FAMILIES[name]).FAMILY
