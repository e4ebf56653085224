"""Closed forms of the likelihoods and latent-space helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen.nn import distributions as dist
from gen.nn.interpolate import slerp, slerp_grid


@pytest.mark.parametrize("mean, log_scale", [(0.0, -2.0), (0.7, -4.0), (-1.3, 0.5), (0.99, -8.0)])
def test_discretized_logistic_sums_to_one_over_256_values(mean, log_scale):
  x = jnp.arange(256) / 127.5 - 1.0
  lp = dist.discretized_logistic_log_prob(x, jnp.full_like(x, mean), jnp.full_like(x, log_scale))
  assert np.isclose(float(jnp.exp(jax.scipy.special.logsumexp(lp))), 1.0, atol=2e-4)


def test_discretized_logistic_small_bins_sum_to_one():
  x = jnp.arange(17) / 8.0 - 1.0
  lp = dist.discretized_logistic_log_prob(x, jnp.full_like(x, 0.2), jnp.full_like(x, -1.0),
                                          num_bins=17)
  assert np.isclose(float(jnp.exp(lp).sum()), 1.0, atol=1e-5)


def test_bernoulli_log_prob_matches_definition():
  logits = jnp.array([-3.0, 0.0, 2.5])
  p = jax.nn.sigmoid(logits)
  for x in (0.0, 1.0):
    expected = jnp.log(jnp.where(x == 1.0, p, 1 - p))
    assert np.allclose(dist.bernoulli_log_prob(logits, x), expected, atol=1e-6)


def test_gaussian_kl_matches_monte_carlo():
  mean, logvar = jnp.array([0.5, -1.0]), jnp.array([-0.5, 0.3])
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.key(0), (200_000, 2))
  log_q = dist.gaussian_log_prob(z, mean, 0.5 * logvar)
  mc = jnp.mean(log_q - dist.standard_normal_log_prob(z), 0)
  assert np.allclose(dist.gaussian_kl_standard(mean, logvar), mc, atol=0.01)


def test_slerp_endpoints_and_norm():
  a = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
  b = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
  path = slerp_grid(a, b, 5)
  assert path.shape == (2, 5, 3)
  assert np.allclose(path[:, 0], a, atol=1e-6) and np.allclose(path[:, -1], b, atol=1e-6)
  # Between vectors of equal norm, slerp stays on the sphere (lerp would cut inside it).
  assert np.allclose(jnp.linalg.norm(path, axis=-1), jnp.array([[1.0], [2.0]]), atol=1e-5)
  # Parallel vectors fall back to a straight line instead of dividing by zero.
  mid = slerp(jnp.ones((1, 3)), 3 * jnp.ones((1, 3)), jnp.array(0.5))
  assert np.allclose(mid, 2.0)
