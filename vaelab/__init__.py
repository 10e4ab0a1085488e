"""vaelab: the autoencoder family in JAX/Flax.

The notebook API (vaelab/api.py), loaded on first use so that `import vaelab` stays light:
  vaelab.train(config, workdir=None) -> vaelab.Run   (the vaelab.train package is callable)
  vaelab.load(workdir) -> vaelab.Run
  vaelab.disentanglement_scores(...)                 (vaelab/evaluate/disentanglement.py)
"""
import importlib

_API = {"load": "vaelab.api", "Run": "vaelab.api"}


def __getattr__(name):
  if name == "train":
    return importlib.import_module("vaelab.train")
  if name in _API:
    return getattr(importlib.import_module(_API[name]), name)
  raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
