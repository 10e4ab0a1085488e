"""The VQ families' convolutional trunk (vaelab/models/vq_trunk.py): the encoder halves the
image once per stride-2 convolution, the decoder mirrors it back to the image's shape, in
float32 whatever the activations' dtype."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from vaelab.models import vq_trunk


def test_encoder_and_decoder_mirror_each_other():
  m = ml_collections.ConfigDict({"conv_channels": (4, 8), "num_res_blocks": 1,
                                 "res_channels": 4, "activation": "relu"})
  spec = vq_trunk.ConvSpec.from_config(m, "bfloat16")
  assert spec == vq_trunk.ConvSpec((4, 8), 1, 4, "relu", "bfloat16")
  x = jnp.zeros((2, 12, 8, 3))
  encoder, decoder = vq_trunk.Encoder(spec), vq_trunk.Decoder(spec, 3)
  params = jax.eval_shape(encoder.init, jax.random.key(0), x)
  h = jax.eval_shape(encoder.apply, params, x)
  assert h.shape == (2, 3, 2, 8) and h.dtype == jnp.bfloat16
  params = jax.eval_shape(decoder.init, jax.random.key(0), h)
  y = jax.eval_shape(decoder.apply, params, h)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert vq_trunk.dtype_of(ml_collections.ConfigDict({})) == "float32"
