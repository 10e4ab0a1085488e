"""The PixelSNAIL samplers: valid, deterministic maps that follow the network's head, and
the cached sampler against the module's logits and the full-pass sampler's codes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixelsnail_cases import K, bottom_prior, codes as _codes, init as _init
from pixelsnail_cases import model as _model
from vaelab.models import pixelsnail_sampler


@pytest.fixture(scope="module")
def prior():
  return bottom_prior()


def test_sampling_valid_deterministic_and_follows_the_head(prior):
  model, variables, _, _ = prior
  cond = _codes(6, 3, 3, seed=4)
  key = jax.random.key(5)
  a = pixelsnail_sampler.sample(model, variables, key, (6, 5, 5), cond)
  b = pixelsnail_sampler.sample(model, variables, key, (6, 5, 5), cond)
  assert a.dtype == jnp.int32 and a.shape == (6, 5, 5)
  assert int(a.min()) >= 0 and int(a.max()) < K
  np.testing.assert_array_equal(a, b)
  c = pixelsnail_sampler.sample(model, variables, jax.random.key(6), (6, 5, 5), cond)
  assert np.any(np.asarray(a) != np.asarray(c))

  params = dict(variables["params"])
  params["logits"] = {**params["logits"], "bias": jnp.array([0.0, 0.0, 100.0, 0.0])}
  biased = pixelsnail_sampler.sample(model, {"params": params}, key, (6, 5, 5), cond)
  np.testing.assert_array_equal(biased, 2)


@pytest.mark.parametrize("arch", ["bottom_prior", "deep_gated_k5"])
def test_cached_sampler_matches_the_full_pass(prior, arch):
  """The cached sampler's logits (teacher-forced through its caches) are the module's, and
  from one key it draws the codes of the full-pass sampler: with attention and a
  lower-resolution condition, and (logits only, to save compilations) a deeper
  unconditional Gated PixelCNN with 5x5 kernels, whose caches are padded wider."""
  if arch == "bottom_prior":
    model, variables, _, _ = prior
    cond = _codes(6, 3, 3, seed=4)
  else:
    model = _model(attention=False, kernel_size=5, num_blocks=2, res_per_block=2,
                   condition_codes=0)
    variables, cond = _init(model, _codes(1, 5, 5), seed=3), None
  codes = _codes(6, 5, 5, seed=7)
  full = jax.jit(model.apply)(variables, codes, cond)
  cached = pixelsnail_sampler.cached_logits(model, variables, codes, cond)
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=1e-5)
  if arch != "bottom_prior":
    return
  key = jax.random.key(5)  # as in the sampling test below: the cached compilation is shared
  for temperature in (1.0, 0.0):
    maps = {s: np.asarray(pixelsnail_sampler.sample(model, variables, key, (6, 5, 5), cond,
                                                    temperature, sampler=s))
            for s in pixelsnail_sampler.SAMPLERS}
    np.testing.assert_array_equal(maps["cached"], maps["full"])
    assert len(np.unique(maps["cached"])) > 1  # not one constant code everywhere
  with pytest.raises(ValueError, match="sampler 'fast'"):
    pixelsnail_sampler.sample(model, variables, key, (6, 5, 5), cond, sampler="fast")
