"""Model families, looked up by `config.model.name` in the registry below: each family's
module, imported when the family is first asked for (a run imports only its own)."""
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
    "vq_prior": "vaelab.models.vq_prior",
    "tdvae": "vaelab.models.tdvae",
}


def available() -> list[str]:
  return sorted(FAMILIES)


def get_family(name: str) -> Family:
  if name not in FAMILIES:
    raise ConfigError(f"model.name={name!r} is not a known family; available: {available()}")
  return importlib.import_module(FAMILIES[name]).FAMILY
