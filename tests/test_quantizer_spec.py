"""The quantizer of a VQ config (vaelab/models/quantizer_spec.py): the module each setting
builds, the number of values a code takes (what a prior models), the keys' defaults for a
config.json written before they existed, the refused settings, and the options both VQ
families declare."""
from __future__ import annotations

import ml_collections
import pytest

from conftest import vq_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.models import fsq, quantizer, residual_vq
from vaelab.models.quantizer_spec import QuantizerSpec, prior_num_codes


def _spec(**overrides):
  c = vq_config("train.npz", "eval.npz", **{f"model.{k}": v for k, v in overrides.items()})
  return c, QuantizerSpec.from_config(c.model)


def test_each_setting_builds_its_quantizer_and_counts_its_codes():
  c, spec = _spec()
  assert isinstance(spec.module(None), quantizer.VectorQuantizer) and spec.ema
  assert (spec.codebook_size, spec.num_indices, prior_num_codes(c)) == (16, 1, 16)
  c, spec = _spec(quantizer="fsq", fsq_levels=(5, 3, 3))
  fq = spec.module("batch", name="vq")
  assert isinstance(fq, fsq.FiniteScalarQuantizer) and fq.axis_name == "batch"
  assert not spec.ema and (spec.codebook_size, prior_num_codes(c)) == (45, 45)
  c, spec = _spec(quantizer="residual", num_quantizers=3, ema_decay=0.0)
  assert isinstance(spec.module(None), residual_vq.ResidualVectorQuantizer)
  assert not spec.ema and (spec.codebook_size, spec.num_indices) == (16, 3)
  with pytest.raises(ConfigError, match="model.num_quantizers=3"):
    prior_num_codes(c)


def test_a_config_written_before_the_quantizer_keys_gets_their_defaults():
  """A prior rebuilds its frozen VQ run from that run's config.json, which lacks the keys
  added since it was written."""
  keys = ("num_codes", "code_dim", "ema_decay", "ema_epsilon", "dead_code_steps",
          "kmeans_init")
  old = ml_collections.ConfigDict({k: vq_config("a", "b").model[k] for k in keys})
  spec = QuantizerSpec.from_config(old)
  assert (spec.quantizer, spec.codebook_norm, spec.codebook_dim, spec.gradient) == (
      "vq", "none", 0, "straight_through")
  assert spec.codebook_size == 16 and spec.ema


@pytest.mark.parametrize("overrides, match", [
    ({"model.quantizer": "pq"}, r"model\.quantizer='pq'"),
    ({"model.codebook_norm": "l1"}, r"model\.codebook_norm='l1'"),
    ({"model.gradient": "gumbel"}, r"model\.gradient='gumbel'"),
    ({"model.codebook_dim": -1}, r"model\.codebook_dim=-1"),
    ({"model.num_quantizers": 0}, r"model\.num_quantizers=0"),
    ({"model.fsq_levels": ()}, r"model\.fsq_levels=\(\)"),
    ({"model.fsq_levels": (8, 1)}, r"model\.fsq_levels \(entry 1\)"),
    ({"model.fsq_levels": (2**16, 2**16)}, r"model\.fsq_levels=.*int32"),
    ({"model.quantizer": "fsq", "model.codebook_norm": "l2"}, r"model\.codebook_norm='l2'"),
    ({"model.quantizer": "fsq", "model.codebook_dim": 4}, r"model\.codebook_dim=4"),
    ({"model.quantizer": "fsq", "model.dead_code_steps": 5}, r"model\.dead_code_steps=5"),
    ({"model.quantizer": "fsq", "model.kmeans_init": True}, r"model\.kmeans_init"),
    ({"model.quantizer": "residual", "model.codebook_norm": "l2"},
     r"model\.codebook_norm='l2'"),
])
def test_bad_quantizer_settings_are_refused_naming_the_key(npz_pair, overrides, match):
  with pytest.raises(ConfigError, match=match):
    validation.validate(vq_config(*npz_pair, **overrides), num_devices=1)


def test_both_families_declare_the_quantizer_options():
  from vaelab.models import get_family
  for name in ("vqvae", "vqvae2"):
    options = get_family(name).options
    assert options["model.quantizer"] == ("vq", "fsq", "residual", "lfq", "bsq", "simvq")
    assert options["model.codebook_norm"] == ("none", "l2")
    assert options["model.gradient"] == ("straight_through", "rotation")
