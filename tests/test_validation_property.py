"""Property test: random overrides are either refused with a ConfigError naming a key they
set, before anything compiles, or accepted and then run a training step; the examples
reach both branches."""
from __future__ import annotations

import collections

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import set_overrides, tiny_config
from vaelab import spmd, validation
from vaelab.data import make_sources
from vaelab.errors import ConfigError
from vaelab.training import experiment as experiment_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_ints = lambda lo, hi: st.integers(lo, hi)
_floats = lambda lo, hi: st.one_of(st.floats(lo, hi), st.sampled_from([float("nan"),
                                                                      float("inf")]))

# Keys shared by the families tried here, with values around and beyond their valid ranges.
COMMON = {
    "batch_size": _ints(-2, 20),
    "num_train_steps": _ints(-1, 2),
    "log_every": _ints(-1, 2),
    "eval.batch_size": _ints(0, 40),
    "seed": _ints(-1, 5),
    "data.binarize": st.sampled_from(["none", "threshold", "dynamic", "bernoulli", ""]),
    "nonfinite": st.sampled_from(["stop", "skip", "ignore"]),
    "model.latent_dim": _ints(-1, 6),
    "model.hidden": st.lists(_ints(-1, 16), min_size=0, max_size=2).map(tuple),
    "model.activation": st.sampled_from(["relu", "elu", "tanh", "swish", "gelu"]),
    "optimizer.name": st.sampled_from(["adam", "adamw", "sgd", "lamb"]),
    "optimizer.learning_rate": _floats(-1.0, 1.0),
    "optimizer.schedule": st.sampled_from(["constant", "cosine", "warmup_cosine", "linear"]),
    "optimizer.b1": _floats(-0.5, 1.5),
}
PER_FAMILY = {
    "vae": {
        "loss.beta": _floats(-2.0, 10.0),
        "loss.objective": st.sampled_from(["elbo", "capacity", "iwae", "vae"]),
        "loss.capacity_max": _floats(-5.0, 30.0),
        "loss.capacity_steps": _ints(-1, 10),
        "loss.iwae_k": _ints(-1, 4),
        "eval.iwae_ks": st.lists(_ints(-1, 8), min_size=0, max_size=3).map(tuple),
        "model.likelihood": st.sampled_from(["bernoulli", "gaussian", "poisson"]),
    },
    "dae": {
        "model.corruption": st.sampled_from(["mask", "gaussian", "salt_pepper", "blur"]),
        "model.noise_level": _floats(-1.0, 2.0),
        "eval.noise_level": _floats(-1.0, 2.0),
    },
}


@st.composite
def overrides(draw):
  family = draw(st.sampled_from(sorted(PER_FAMILY)))
  keys = {**COMMON, **PER_FAMILY[family]}
  chosen = draw(st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=3, unique=True))
  return family, {k: draw(keys[k]) for k in chosen}


def _config(family, npz_pair, values):
  base = "vae" if family == "vae" else "ae"
  c = tiny_config(base, *npz_pair)
  if family == "dae":
    c.model.name = "dae"
    c.model.corruption = "mask"
    c.model.noise_level = 0.25
  return set_overrides(c, values)


def test_random_overrides_are_refused_by_key_or_train(npz_pair):
  outcomes = collections.Counter()

  @settings(max_examples=12, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow])
  @given(case=overrides())
  def check(case):
    family, values = case
    config = _config(family, npz_pair, values)
    try:
      validation.validate(config)
    except ConfigError as e:
      assert any(key in str(e) for key in values), (values, str(e))
      outcomes["refused"] += 1
      return
    # Accepted: it must build and take a step (the loss may be anything at a wild lr).
    exp = experiment_lib.build(config, make_sources(config.data))
    state = spmd.replicate(exp.mesh, exp.init_state())
    batch = spmd.shard_batch(exp.mesh, exp.batcher().batch(0))
    state, metrics = exp.train_step(state, batch, exp.hparams)
    assert int(jax.device_get(state.step)) == 1
    assert np.shape(jax.device_get(metrics["loss"])) == ()
    outcomes["trained"] += 1

  check()
  # Both branches were taken: the examples are not all refused (nor all accepted).
  assert outcomes["trained"] > 0 and outcomes["refused"] > 0, dict(outcomes)
