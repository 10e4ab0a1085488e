"""Objectives against closed forms, Monte Carlo and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vaelab.losses import kl as kl_lib
from vaelab.losses import reconstruction, vae as vae_losses

jax.config.update("jax_enable_x64", False)


def test_bernoulli_nll_matches_log_probabilities():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (4, 5, 5, 1)).astype(np.float32)
  x = (rng.random((4, 5, 5, 1)) > 0.5).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(4, -1).sum(1)
  np.testing.assert_allclose(reconstruction.bernoulli_nll(logits, x), expected, rtol=1e-5)


def test_bernoulli_nll_is_stable_for_extreme_logits():
  logits = jnp.array([[1e4, -1e4]])
  x = jnp.array([[1.0, 0.0]])
  assert np.isfinite(reconstruction.bernoulli_nll(logits, x)).all()
  np.testing.assert_allclose(reconstruction.bernoulli_nll(logits, x), 0.0, atol=1e-6)


def test_gaussian_nll_matches_scipy():
  rng = np.random.default_rng(1)
  mean, x = rng.normal(size=(2, 3, 7)).astype(np.float32)
  expected = -stats.norm.logpdf(x, mean, 0.3).sum(1)
  np.testing.assert_allclose(reconstruction.gaussian_nll(mean, x, 0.3), expected, rtol=1e-5)


def test_each_likelihood_has_one_image_and_one_term():
  rng = np.random.default_rng(2)
  out = rng.normal(0, 2, (3, 4, 4, 1)).astype(np.float32)
  x = rng.random((3, 4, 4, 1)).astype(np.float32)
  image = 1 / (1 + np.exp(-out.astype(np.float64)))
  terms = {"bernoulli": -(x * np.log(image) + (1 - x) * np.log(1 - image)),
           "gaussian": -stats.norm.logpdf(x, out, 0.3),
           "sigmoid_sse": np.square(image - x)}
  images = {"bernoulli": image, "gaussian": out, "sigmoid_sse": image}
  assert set(terms) == set(reconstruction.LIKELIHOODS)
  for name in reconstruction.LIKELIHOODS:
    np.testing.assert_allclose(reconstruction.nll(name, out, x, 0.3),
                               terms[name].reshape(3, -1).sum(1), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(reconstruction.mean_image(name, out), images[name], rtol=1e-6,
                               err_msg=name)
  with pytest.raises(ValueError, match="'mse'"):
    reconstruction.nll("mse", out, x)


def test_a_family_refuses_a_likelihood_naming_the_key_and_its_values():
  from vaelab.errors import ConfigError
  reconstruction.validate("gaussian", reconstruction.DENSITIES, "vae")
  with pytest.raises(ConfigError, match=r"model\.likelihood='gaussian'.*'bernoulli', "
                                        r"'sigmoid_sse'.*model\.name='ae'"):
    reconstruction.validate("gaussian", reconstruction.LOGIT_LIKELIHOODS, "ae")


def test_gaussian_kl_closed_form_and_monte_carlo():
  mean = jnp.array([[0.5, -1.0, 0.0]])
  logvar = jnp.array([[0.2, -0.7, 0.0]])
  kl = kl_lib.gaussian_kl_per_dim(mean, logvar)
  assert float(kl[0, 2]) == 0.0  # q = p
  # Monte Carlo: E_q[log q - log p] with 200k samples per dimension.
  std = np.exp(0.5 * np.asarray(logvar[0]))
  z = np.random.default_rng(2).normal(size=(200_000, 3)) * std + np.asarray(mean[0])
  mc = (stats.norm.logpdf(z, np.asarray(mean[0]), std) - stats.norm.logpdf(z)).mean(0)
  np.testing.assert_allclose(kl[0], mc, atol=0.01)


def test_gaussian_kl_gradient_matches_closed_form():
  mean = jnp.array([[0.3, -2.0]])
  logvar = jnp.array([[0.5, -1.0]])
  g_mean, g_logvar = jax.grad(lambda m, lv: kl_lib.gaussian_kl(m, lv).sum(), (0, 1))(mean,
                                                                                      logvar)
  np.testing.assert_allclose(g_mean, mean, rtol=1e-6)
  np.testing.assert_allclose(g_logvar, 0.5 * (jnp.exp(logvar) - 1), rtol=1e-6)


def test_beta_weights_only_the_kl():
  nll, kl = jnp.array([10.0, 20.0]), jnp.array([1.0, 3.0])
  assert float(vae_losses.vae_loss(nll, kl, 1.0)) == pytest.approx(17.0)
  assert float(vae_losses.vae_loss(nll, kl, 4.0)) == pytest.approx(23.0)
  # beta as a traced array: one compiled function serves every beta.
  f = jax.jit(vae_losses.vae_loss)
  assert float(f(nll, kl, jnp.float32(0.0))) == pytest.approx(15.0)


def test_capacity_schedule():
  c = [float(vae_losses.capacity(s, 25.0, 100.0)) for s in (0, 50, 100, 400)]
  assert c == [0.0, 12.5, 25.0, 25.0]


def test_elbo_gradient_matches_finite_differences():
  """d(-ELBO)/d(decoder logits) and d/d(mean) against central differences in float64."""
  jax.config.update("jax_enable_x64", True)
  try:
    rng = np.random.default_rng(3)
    x = (rng.random((2, 6)) > 0.5).astype(np.float64)
    logits, mean, logvar = rng.normal(size=(2, 6)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))

    def f(logits, mean, logvar):
      nll, kl, _ = vae_losses.elbo_terms("bernoulli", logits, x, mean, logvar)
      return vae_losses.vae_loss(nll, kl, 2.0)

    grads = jax.grad(f, (0, 1, 2))(logits, mean, logvar)
    eps = 1e-6
    for i, arg in enumerate((logits, mean, logvar)):
      num = np.zeros_like(arg)
      for idx in np.ndindex(arg.shape):
        args = [logits, mean, logvar]
        hi, lo = arg.copy(), arg.copy()
        hi[idx] += eps
        lo[idx] -= eps
        args[i] = hi
        fh = f(*args)
        args[i] = lo
        num[idx] = (fh - f(*args)) / (2 * eps)
      np.testing.assert_allclose(grads[i], num, rtol=1e-5, atol=1e-8)
  finally:
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("units", [3, 9])  # fewer outputs than inputs: reverse mode; more: forward
def test_exact_jacobian_norm_matches_the_sigmoid_closed_form(units):
  from vaelab.losses import cae as cae_losses
  kernel = jax.random.normal(jax.random.key(0), (6, units))
  encode = lambda x: jax.nn.sigmoid(x.reshape(x.shape[0], -1) @ kernel)
  x = jax.random.uniform(jax.random.key(1), (5, 2, 3, 1))
  np.testing.assert_allclose(cae_losses.jacobian_fro2_exact(encode, x, chunk=2),
                             cae_losses.jacobian_fro2_sigmoid(encode(x), kernel), rtol=1e-5)
