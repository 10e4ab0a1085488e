"""What the VQ families report about their codes (vaelab/models/vq_metrics.py): perplexity
and codebook usage, a split's code maps extracted in chunks, and the set-level final analyses."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import vq_config
from vaelab import spmd, validation
from vaelab.data.base import SourceInfo
from vaelab.data.npz import load_npz
from vaelab.models import vq_metrics


def test_perplexity_is_k_for_uniform_use_and_1_for_a_single_code():
  assert float(vq_metrics.perplexity(jnp.full((16,), 5.0))) == pytest.approx(16.0, rel=1e-6)
  assert float(vq_metrics.perplexity(jnp.array([0, 0, 7.0, 0]))) == pytest.approx(1.0, abs=1e-6)
  assert float(vq_metrics.perplexity(jnp.array([1.0, 1, 2, 0]))) == pytest.approx(
      np.exp(-(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5))), rel=1e-6)
  idx = np.array([[0, 1], [2, 3]])
  assert vq_metrics.code_statistics(idx, 8) == pytest.approx((4.0, 0.5))
  # Each image's own usage: one code everywhere, then four codes equally.
  per_image = vq_metrics.image_perplexity(jnp.array([[[1, 1], [1, 1]], [[0, 1], [2, 3]]]), 8)
  np.testing.assert_allclose(per_image, [1.0, 4.0], rtol=1e-6)


def test_a_split_is_encoded_in_chunks_and_its_codes_counted(npz_pair):
  config = vq_config(*npz_pair)
  family = validation.validate(config, num_devices=1)
  model = family.make_model(config, SourceInfo((8, 8, 1)))
  variables = spmd.init(model, jax.random.key(0, impl="rbg"), jnp.zeros((1, 8, 8, 1)))
  source = load_npz(npz_pair[1], "eval")  # 64 images: chunks of 20, 20, 20 and 4
  maps, = vq_metrics.encode_source(model, variables, source, batch_size=20)
  whole, = spmd.apply(model, variables, source.get(np.arange(len(source)))["image"],
                      method="code_indices")
  assert maps.dtype == np.int32 and maps.shape == (64, 4, 4)
  np.testing.assert_array_equal(maps, whole)
  first, = vq_metrics.encode_source(model, variables, source, batch_size=20, limit=30)
  np.testing.assert_array_equal(first, whole[:30])
  results = vq_metrics.final_analyses(config, model, variables, None, source)
  ppl, usage = vq_metrics.code_statistics(maps, 16)
  assert results == {"eval/perplexity": pytest.approx(ppl),
                     "eval/codebook_usage": pytest.approx(usage)}
