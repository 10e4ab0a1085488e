"""vaelab: the autoencoder family in JAX/Flax.

The notebook API, loaded on first use so that `import vaelab` stays light:
  vaelab.train(config, workdir=None) -> vaelab.Run   (vaelab/api.py)
  vaelab.load(workdir) -> vaelab.Run
  vaelab.disentanglement_scores(codes=, factors=) or (represent=, ground_truth=)
                                                     (vaelab/evaluate/disentanglement/)
  vaelab.register_family(family)                     a family defined outside vaelab
"""
import importlib

from vaelab import xla_flags

xla_flags.apply()  # before JAX creates a backend (see vaelab/xla_flags.py)

_API = {"train": ("vaelab.api", "train"), "load": ("vaelab.api", "load"),
        "Run": ("vaelab.api", "Run"),
        "disentanglement_scores": ("vaelab.evaluate.disentanglement", "scores"),
        "register_family": ("vaelab.models", "register_family"),
        "udr": ("vaelab.evaluate.disentanglement.udr", "udr")}


def __getattr__(name):
  if name in _API:
    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
