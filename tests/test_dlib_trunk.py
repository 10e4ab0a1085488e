"""`model.encoder="dlib_conv"` is disentanglement_lib's conv_encoder / deconv_decoder
(methods/shared/architectures.py): every layer's shapes as written there, and its
transposed convolutions compute TF's conv2d_transpose (through flax's ConvTranspose, which
the decoder's faster phase-wise layer equals)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab.models import nets

LATENT = 10
# dlib's layers for 64x64x1 images and 10 latents, from architectures.py: (name, kernel
# shape in TF's layout, output shape). conv2d kernels are (h, w, in, out), dense (in, out),
# conv2d_transpose kernels (h, w, out, in).
DLIB_ENCODER = [
    ("e1", (4, 4, 1, 32), (32, 32, 32)),
    ("e2", (4, 4, 32, 32), (16, 16, 32)),
    ("e3", (2, 2, 32, 64), (8, 8, 64)),
    ("e4", (2, 2, 64, 64), (4, 4, 64)),
    ("e5", (1024, 256), (256,)),
    ("means", (256, LATENT), (LATENT,)),
    ("log_var", (256, LATENT), (LATENT,)),
]
DLIB_DECODER = [
    ("d1", (LATENT, 256), (256,)),
    ("d2", (256, 1024), (1024,)),  # reshaped to (4, 4, 64)
    ("d3", (4, 4, 64, 64), (8, 8, 64)),
    ("d4", (4, 4, 32, 64), (16, 16, 32)),
    ("d5", (4, 4, 32, 32), (32, 32, 32)),
    ("d6", (4, 4, 1, 32), (64, 64, 1)),
]
SPEC = nets.NetSpec(encoder="dlib_conv", conv_channels=(32, 32, 64, 64), dense=256)


def _layers(module, x):
  variables = module.init(jax.random.PRNGKey(0), x)
  _, state = module.apply(variables, x, capture_intermediates=True)
  params = variables["params"]
  out = state["intermediates"]
  return params, out


def test_encoder_layers_are_dlibs():
  enc = nets.make_encoder(SPEC, 2 * LATENT)
  params, inter = _layers(enc, jnp.zeros((2, 64, 64, 1)))
  names = ["conv_0", "conv_1", "conv_2", "conv_3", "dense"]
  for name, (dlib_name, kernel, out) in zip(names, DLIB_ENCODER):
    assert params[name]["kernel"].shape == kernel, dlib_name
    assert params[name]["bias"].shape == kernel[-1:], dlib_name
    assert inter[name]["__call__"][0].shape == (2,) + out, dlib_name
  # dlib's two heads, means and log_var, are the two halves of one dense layer here.
  assert params["out"]["kernel"].shape == (256, 2 * LATENT)
  assert inter["__call__"][0].shape == (2, 2 * LATENT)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert count == sum(np.prod(k) + k[-1] for _, k, _ in DLIB_ENCODER)


def test_decoder_layers_are_dlibs():
  dec = nets.make_decoder(SPEC, (64, 64, 1))
  params, inter = _layers(dec, jnp.zeros((2, LATENT)))
  names = ["dense", "to_map", "deconv_0", "deconv_1", "deconv_2", "deconv_3"]
  for name, (dlib_name, kernel, out) in zip(names, DLIB_DECODER):
    # flax's ConvTranspose kernel is (h, w, in, out): TF's last two axes swapped.
    want = kernel if len(kernel) == 2 else kernel[:2] + (kernel[3], kernel[2])
    assert params[name]["kernel"].shape == want, dlib_name
    assert params[name]["bias"].shape == want[-1:], dlib_name
    assert inter[name]["__call__"][0].shape == (2,) + out, dlib_name
  assert set(params) == set(names)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert count == sum(np.prod(k) + (k[-1] if len(k) == 2 else k[2])
                      for _, k, _ in DLIB_DECODER)


@pytest.mark.parametrize("side", [4, 5])
def test_transposed_convolution_is_tf_conv2d_transpose(side):
  # TF's conv2d_transpose(u, W, strides=2, padding="same") is the gradient of
  # conv2d(x, W, strides=2, padding="same") with respect to x; flax's ConvTranspose with
  # padding "SAME" computes it with the kernel flipped in space, exactly.
  rng = np.random.default_rng(side)
  u = jnp.asarray(rng.normal(size=(2, side, side, 3)), jnp.float32)
  layer = nets.nn.ConvTranspose(2, (4, 4), strides=(2, 2), padding="SAME", use_bias=False)
  kernel = layer.init(jax.random.PRNGKey(1), u)["params"]["kernel"]
  y = layer.apply({"params": {"kernel": kernel}}, u)
  w_tf = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # TF's (h, w, out, in)

  def conv2d(x):
    return jax.lax.conv_general_dilated(x, w_tf, (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  _, vjp = jax.vjp(conv2d, jnp.zeros((2, 2 * side, 2 * side, 2)))
  np.testing.assert_allclose(y, vjp(u)[0], rtol=1e-6, atol=1e-6)
  assert y.shape == (2, 2 * side, 2 * side, 2)


@pytest.mark.parametrize("side,c_in,c_out", [(4, 3, 2), (5, 16, 8), (1, 4, 4)])
def test_phase_computed_layer_is_the_transposed_convolution(side, c_in, c_out):
  # The decoder's layer computes flax's ConvTranspose (hence TF's conv2d_transpose, above)
  # from the same (4, 4, in, out) kernel and bias.
  rng = np.random.default_rng(side)
  u = jnp.asarray(rng.normal(size=(2, side, side, c_in)), jnp.float32)
  params = {"params": {"kernel": jnp.asarray(rng.normal(size=(4, 4, c_in, c_out)), jnp.float32),
                       "bias": jnp.asarray(rng.normal(size=(c_out,)), jnp.float32)}}
  want = nets.nn.ConvTranspose(c_out, (4, 4), strides=(2, 2), padding="SAME").apply(params, u)
  got = nets.DlibDeconv(c_out).apply(params, u)
  assert got.shape == want.shape == (2, 2 * side, 2 * side, c_out)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_trunk_is_unchanged_and_named_otherwise():
  assert nets.ENCODERS == ("mlp", "conv", "dlib_conv")
  enc = nets.make_encoder(nets.NetSpec(encoder="conv", conv_channels=(8, 8, 8, 8), dense=16), 4)
  params = enc.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))["params"]
  assert all(params[f"conv_{i}"]["kernel"].shape[:2] == (4, 4) for i in range(4))
  assert nets.dlib_kernels(4) == (4, 4, 2, 2) and nets.dlib_kernels(2) == (2, 2)
