"""The Family contract (vaelab/models/base.py) held by every registered family: its hooks
are callables of the kinds base.py documents, and `features` applies the model."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from vaelab import models
from vaelab.models import base, ksparse, nets, vae

OPTIONAL_HOOKS = ("make_eval_set_stats", "make_final_eval_metrics", "final_analyses", "sample",
                  "final_baselines", "features", "encode", "decode", "pictures",
                  "transform_sources", "init_input")


@pytest.mark.parametrize("name", models.available())
def test_every_hook_is_a_callable_or_none(name):
  family = models.get_family(name)
  assert family.name == name
  for hook in ("make_model", "make_loss", "make_eval_metrics", "hparams", "validate"):
    assert callable(getattr(family, hook)), hook
  for hook in OPTIONAL_HOOKS:
    value = getattr(family, hook)
    assert value is None or callable(value), (hook, value)
  assert {f.name for f in dataclasses.fields(base.Family)} >= set(OPTIONAL_HOOKS)


def test_features_are_the_model_method_they_name():
  x = jax.random.uniform(jax.random.key(0), (3, 4, 4, 1))
  for family, model in ((vae.FAMILY, vae.VAE(nets.NetSpec(hidden=(8,)), 2, (4, 4, 1))),
                        (ksparse.FAMILY, ksparse.KSparseAE(nets.NetSpec(hidden=()), 6,
                                                           (4, 4, 1), 1, 3.0))):
    variables = model.init(jax.random.key(1), x, jax.random.split(jax.random.key(2), 3))
    method = "posterior_mean" if family is vae.FAMILY else "features"
    np.testing.assert_array_equal(family.features(model, variables, x),
                                  model.apply(variables, x, method=method))
  # The k-sparse probe reads alpha*k units, its codes k.
  codes = np.asarray(ksparse.FAMILY.encode(model, variables, x))
  assert (np.count_nonzero(np.asarray(ksparse.FAMILY.features(model, variables, x)), 1) == 3).all()
  assert (np.count_nonzero(codes, 1) == 1).all()
