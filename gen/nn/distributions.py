"""Per-pixel likelihoods for images, summed over pixels by the caller.

Conventions: binarized data is in {0, 1}; 8-bit data is in [-1, 1] with bin centres at
x / 127.5 - 1 (`scale`), or continuous in [-1, 1) after uniform dequantization.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log p(x) for x in {0, 1} (or probabilities in [0, 1]) under Bernoulli(sigmoid(logits))."""
  return x * logits - jax.nn.softplus(logits)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """Continuous density of N(mean, exp(log_scale)^2) at x."""
  z = (x - mean) * jnp.exp(-log_scale)
  return -0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi)


def discretized_logistic_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  num_bins: int = 256) -> jax.Array:
  """log P(x) of a logistic discretized into `num_bins` bins over [-1, 1] (PixelCNN++).

  The two edge bins take the tails, so the probabilities of the `num_bins` bin centres
  sum to one for any mean and scale.
  """
  half = 1.0 / (num_bins - 1)
  centered = x - mean
  inv_s = jnp.exp(-log_scale)
  plus_in = inv_s * (centered + half)
  min_in = inv_s * (centered - half)
  log_cdf_plus = plus_in - jax.nn.softplus(plus_in)  # log sigmoid(plus_in): lowest bin.
  log_one_minus_cdf_min = -jax.nn.softplus(min_in)  # log(1 - sigmoid(min_in)): highest bin.
  cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  mid_in = inv_s * centered
  # When the bin mass underflows, use the density at the centre times the bin width.
  log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in) + math.log(2 * half)
  log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)), log_pdf_mid)
  return jnp.where(x < -1.0 + half, log_cdf_plus,
                   jnp.where(x > 1.0 - half, log_one_minus_cdf_min, log_mid))


def discretized_logistic_mean(mean: jax.Array) -> jax.Array:
  return jnp.clip(mean, -1.0, 1.0)


def gaussian_kl_standard(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per dimension."""
  return 0.5 * (jnp.exp(logvar) + mean * mean - 1.0 - logvar)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  return -0.5 * z * z - 0.5 * math.log(2 * math.pi)


def bits_per_dim(nats: jax.Array, num_dims: int) -> jax.Array:
  return nats / (num_dims * math.log(2.0))


# ------------------------------------------------- discretized logistic mixture (PixelCNN++)


def mixture_num_params(channels: int, num_mix: int) -> int:
  """Head outputs per pixel: mixture logits, and per component C means, C log-scales and
  C(C-1)/2 coefficients that make channel c's mean depend linearly on channels < c."""
  return num_mix * (1 + 2 * channels + channels * (channels - 1) // 2)


def _split_mixture(params: jax.Array, channels: int, num_mix: int):
  """[..., P] -> logits [..., K], means [..., K, C], log_scales [..., K, C],
  coeffs [..., K, C(C-1)/2]."""
  k, c = num_mix, channels
  logits = params[..., :k]
  rest = params[..., k:].reshape(params.shape[:-1] + (k, -1))
  means, log_scales = rest[..., :c], jnp.maximum(rest[..., c:2 * c], -7.0)
  coeffs = jnp.tanh(rest[..., 2 * c:])
  return logits, means, log_scales, coeffs


def _conditional_means(means: jax.Array, coeffs: jax.Array, x: jax.Array) -> jax.Array:
  """mean_c + sum_{c' < c} coeff_{c, c'} x_{c'}: channel c sees only earlier channels of x.

  means [..., K, C], coeffs [..., K, C(C-1)/2], x [..., C] (broadcast over K).
  """
  c = means.shape[-1]
  out, i = [means[..., 0]], 0
  for ch in range(1, c):
    m = means[..., ch]
    for prev in range(ch):
      m = m + coeffs[..., i] * x[..., None, prev]
      i += 1
    out.append(m)
  return jnp.stack(out, -1)


def mixture_log_prob(params: jax.Array, x: jax.Array, num_mix: int,
                     num_bins: int = 256) -> jax.Array:
  """log P(x) per pixel ([..., C] -> [...]) under a discretized logistic mixture."""
  c = x.shape[-1]
  logits, means, log_scales, coeffs = _split_mixture(params, c, num_mix)
  means = _conditional_means(means, coeffs, x)
  lp = discretized_logistic_log_prob(x[..., None, :], means, log_scales, num_bins).sum(-1)
  return jax.nn.logsumexp(lp + jax.nn.log_softmax(logits, -1), -1)


def mixture_sample(rng: jax.Array, params: jax.Array, channels: int, num_mix: int,
                   num_bins: int = 256) -> jax.Array:
  """Samples a pixel ([..., P] -> [..., C] at bin centres), channel by channel."""
  logits, means, log_scales, coeffs = _split_mixture(params, channels, num_mix)
  k_rng, x_rng = jax.random.split(rng)
  comp = jax.random.categorical(k_rng, logits)  # [...]
  pick = lambda a: jnp.take_along_axis(a, comp[..., None, None], axis=-2)[..., 0, :]
  means, log_scales, coeffs = pick(means), pick(log_scales), pick(coeffs)
  u = jax.random.uniform(x_rng, means.shape, minval=1e-5, maxval=1.0 - 1e-5)
  noise = jnp.log(u) - jnp.log1p(-u)  # Standard logistic.
  xs, i = [], 0
  for ch in range(channels):
    m = means[..., ch]
    for prev in range(ch):
      m = m + coeffs[..., i] * xs[prev]
      i += 1
    v = jnp.clip(m + jnp.exp(log_scales[..., ch]) * noise[..., ch], -1.0, 1.0)
    xs.append(jnp.round((v + 1.0) * (num_bins - 1) / 2.0) * 2.0 / (num_bins - 1) - 1.0)
  return jnp.stack(xs, -1)
