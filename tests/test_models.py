"""The family registry (vaelab/models/__init__.py), shared nets (nets.py), and the shapes and
finiteness every family's model, loss and evaluation share (the autoencoder and the VAE
themselves: tests/test_ae.py, tests/test_vae.py)."""
import ast
import os

import chex
import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab import config_base, models
from vaelab.data.base import SourceInfo
from vaelab.models import ae, nets, vae as vae_lib
from vaelab.spmd import example_keys


def _config(name, encoder="mlp", image_shape=(28, 28, 1)):
  c = config_base.base_config()
  if name == "vae":
    vae_lib.config_keys(c)
  else:
    ae.config_keys(c)
  c.model.encoder = encoder
  c.model.hidden = (16, 8)
  c.model.conv_channels = (4, 8)
  c.model.dense = 16
  c.model.latent_dim = 3
  return c, SourceInfo(image_shape=image_shape)


@pytest.mark.parametrize("name", ["ae", "vae"])
@pytest.mark.parametrize("encoder,shape", [("mlp", (28, 28, 1)), ("conv", (16, 16, 3))])
def test_forward_shapes_and_finiteness(name, encoder, shape):
  config, info = _config(name, encoder, shape)
  family = models.get_family(name)
  model = family.make_model(config, info)
  x = jnp.asarray(np.random.default_rng(0).random((5, *shape)), jnp.float32)
  keys = example_keys(0, 0, jnp.arange(5))
  hparams = family.hparams(config)
  loss_fn, eval_fn = family.make_loss(config), family.make_eval_metrics(config)

  @jax.jit  # one compilation instead of op-by-op dispatch
  def run(x, keys):
    variables = model.init(jax.random.key(0), x, keys)
    recon = model.apply(variables, x, method="reconstruct")
    loss, (metrics, _) = loss_fn(model, variables["params"], {}, {"image": x}, keys, hparams)
    return recon, loss, metrics, eval_fn(model, variables, {"image": x}, keys, hparams)

  recon, loss, metrics, per_example = run(x, keys)
  chex.assert_shape(recon, (5, *shape))
  chex.assert_tree_all_finite((recon, loss, metrics, per_example))
  assert float(recon.min()) >= 0 and float(recon.max()) <= 1
  for v in per_example.values():
    chex.assert_shape(v, (5,))


def test_upsample_can_express_a_stride2_transposed_convolution():
  """The pixel-shuffle layer replacing ConvTranspose represents it exactly (fitted weights)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 3)), jnp.float32)
  ct = nn.ConvTranspose(2, (4, 4), strides=(2, 2), padding="SAME")
  target = ct.apply(ct.init(jax.random.key(0), x), x)
  up = nets.Upsample(2)
  chex.assert_shape(up.apply(up.init(jax.random.key(1), x), x), target.shape)
  # Upsample is linear in its kernel: solve least squares for the kernel reproducing `target`.
  params = up.init(jax.random.key(1), x)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  f = lambda w: up.apply(unravel(w), x).ravel()
  basis = jax.vmap(lambda e: f(e) - f(jnp.zeros_like(flat)))(jnp.eye(flat.size))
  w, *_ = np.linalg.lstsq(np.asarray(basis.T), np.asarray(target.ravel() - f(jnp.zeros_like(flat))),
                          rcond=None)
  np.testing.assert_allclose(f(jnp.asarray(w, jnp.float32)), target.ravel(), atol=1e-4)


def test_unknown_family_is_refused_with_the_key():
  with pytest.raises(ValueError, match="model.name='nope'"):
    models.get_family("nope")


def _defines_family(path: str) -> bool:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  return any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAMILY"
                                                  for t in node.targets)
             for node in tree.body)


def test_the_registry_holds_every_module_that_defines_a_family_and_no_other():
  package = os.path.dirname(models.__file__)
  defining = {f"vaelab.models.{name[:-3]}" for name in os.listdir(package)
              if name.endswith(".py") and _defines_family(os.path.join(package, name))}
  assert set(models.FAMILIES.values()) == defining
  for name, module in models.FAMILIES.items():
    assert models.get_family(name).name == name, module
