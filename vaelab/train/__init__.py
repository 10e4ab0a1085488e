"""Training: the state, the SPMD step, the loop, checkpoints, populations and sweeps.

The package is also the notebook API's `vaelab.train(config, workdir=None) -> vaelab.Run`
(vaelab/api.py): calling the module trains a run. A module cannot be called, so its class
is swapped for a callable subclass; `vaelab.train.loop` and the other submodules stay
where they are.
"""
import sys
import types


class _CallableModule(types.ModuleType):

  def __call__(self, config, workdir=None, **kwargs):
    from vaelab import api
    return api.train(config, workdir, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
