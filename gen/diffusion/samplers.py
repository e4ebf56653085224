"""Samplers: each one compiled loop over the whole trajectory, the step count traced.

Every sampler is `fn(denoise, process, noise, rng, steps, **options) -> x0`, where
`denoise(x, t) -> x0_hat` is the (guided) denoiser in the process's coordinates
(x = alpha(t) x0 + sigma(t) eps, see `gen.diffusion.objectives`), `noise` is standard
normal with the output's shape, and `steps` may be a traced integer: the loops are
`lax.fori_loop`s over it, so a new step count reuses the compiled program. Each loop ends at
noise level 0 and returns the clean sample.

On the process's natural time grid (uniform in t, EDM's Karras grid for `edm`):
- `ddpm`: ancestral sampling from the posterior q(x_t | x_s, x0 = x0_hat) (Ho et al. 2020).
- `ddim`: x_t = alpha_t x0_hat + sqrt(sigma_t^2 - c^2) eps_hat + c z with
  c = eta sigma_t sqrt(1 - SNR_s / SNR_t) (Song et al. 2021); eta = 1 is `ddpm` again.
- `flow_euler`, `flow_heun`: Euler / Heun on the probability-flow ODE in t,
  dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat; for the `flow` process that is the
  rectified-flow ODE dx/dt = v and `flow_euler` coincides with DDIM.
On EDM's Karras grid of noise levels s = sigma / alpha (rho = 7, `level_min`..`level_max`):
- `euler`, `heun`: Karras et al. 2022, Algorithm 2, on dx/ds = (x - D(x, s)) / s in the
  variance-exploding coordinates x / alpha, with optional churn (S_churn; 0 is the ODE).
- `dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022), multistep second order in log-SNR.

Function evaluations (NFE): `steps` for all but `heun` / `flow_heun` (2 steps - 1).

These are the samplers of the continuous processes (linear, cosine, edm, flow). A `discrete`
process (a diffusers table of betas) has its own table, diffusers' schedulers step for step
(`gen.diffusion.schedulers`); `gen.diffusion.sampling` picks the table for the process.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gen.diffusion.process import Process, karras_grid


def _loop(n, body, init):
  return jax.lax.fori_loop(0, n, body, init)


# ------------------------------------------------------------------ natural time grid


def ddpm(denoise, process: Process, noise, rng, steps):
  """Ancestral sampling with the posterior mean and variance of q(x_t | x_s, x0 = x0_hat)."""

  def body(i, x):
    ts, tt = process.grid(i, steps), process.grid(i + 1, steps)
    a_s, s_s = process.alpha_sigma(ts)
    a_t, s_t = process.alpha_sigma(tt)
    x0 = denoise(x, ts)
    a_ts = a_s / a_t
    var_ts = s_s ** 2 - a_ts ** 2 * s_t ** 2  # q(x_s | x_t) = N(a_ts x_t, var_ts).
    mean = (a_ts * s_t ** 2 / s_s ** 2) * x + (a_t * var_ts / s_s ** 2) * x0
    std = jnp.sqrt(jnp.maximum(var_ts * s_t ** 2 / s_s ** 2, 0.0))
    return mean + std * jax.random.normal(jax.random.fold_in(rng, i), x.shape)

  return _loop(steps, body, process.alpha_sigma(process.grid(0, steps))[1] * noise)


def ddim(denoise, process: Process, noise, rng, steps, eta=0.0):
  """DDIM; eta = 0 is deterministic, eta = 1 is DDPM's ancestral sampler."""

  def body(i, x):
    ts, tt = process.grid(i, steps), process.grid(i + 1, steps)
    a_s, s_s = process.alpha_sigma(ts)
    a_t, s_t = process.alpha_sigma(tt)
    x0 = denoise(x, ts)
    eps = (x - a_s * x0) / s_s
    snr_ratio = jnp.square(a_s * s_t / (s_s * a_t))  # SNR_s / SNR_t <= 1.
    c = eta * s_t * jnp.sqrt(jnp.maximum(1.0 - snr_ratio, 0.0))
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape)
    return a_t * x0 + jnp.sqrt(jnp.maximum(s_t ** 2 - c ** 2, 0.0)) * eps + c * z

  return _loop(steps, body, process.alpha_sigma(process.grid(0, steps))[1] * noise)


def _velocity(denoise, process: Process, x, t):
  """dx/dt of the probability-flow ODE: alpha'(t) x0_hat + sigma'(t) eps_hat."""
  (a, s), (da, ds) = jax.jvp(process.alpha_sigma, (t,), (jnp.ones_like(t),))
  x0 = denoise(x, t)
  return da * x0 + ds * (x - a * x0) / s


def _flow(denoise, process: Process, noise, steps, heun: bool):
  def body(i, x):
    t, t_next = process.grid(i, steps), process.grid(i + 1, steps)
    d = _velocity(denoise, process, x, t)
    x_next = x + (t_next - t) * d
    if heun:
      d_next = _velocity(denoise, process, x_next, t_next)
      x_next = x + (t_next - t) * 0.5 * (d + d_next)
    return x_next

  x = process.alpha_sigma(process.grid(0, steps))[1] * noise
  x = _loop(steps - 1, body, x)
  t = process.grid(steps - 1, steps)  # Last step, to t = 0: Euler (no evaluation at 0).
  return x + (process.grid(steps, steps) - t) * _velocity(denoise, process, x, t)


def flow_euler(denoise, process: Process, noise, rng, steps):
  del rng
  return _flow(denoise, process, noise, steps, heun=False)


def flow_heun(denoise, process: Process, noise, rng, steps):
  del rng
  return _flow(denoise, process, noise, steps, heun=True)


# ------------------------------------------------------------ Karras grid of levels


def _levels(process: Process, level_min, level_max):
  lo, hi = process.level_range
  return (lo if level_min is None else level_min), (hi if level_max is None else level_max)


def _ve_denoiser(denoise, process: Process):
  """D(x / alpha, s) in variance-exploding coordinates, from the process's denoiser."""
  def d(x_ve, s):
    t = process.t_of_level(s)
    return denoise(process.alpha_sigma(t)[0] * x_ve, t)
  return d


def _edm(denoise, process, noise, rng, steps, heun, churn, level_min, level_max, s_noise):
  lo, hi = _levels(process, level_min, level_max)
  d_fn = _ve_denoiser(denoise, process)
  gamma = jnp.minimum(churn / steps, math.sqrt(2.0) - 1.0)

  def body(i, x):
    s, s_next = karras_grid(i, steps, lo, hi), karras_grid(i + 1, steps, lo, hi)
    s_hat = s * (1.0 + gamma)  # Churn: add noise to go up to s_hat first.
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape)
    # sqrt(s_hat^2 - s^2) written through gamma, so gamma = 0 gives exactly 0 (the
    # difference of squares does not round to 0 in float32) and the ODE ignores the key.
    x_hat = x + s * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * z
    d = (x_hat - d_fn(x_hat, s_hat)) / s_hat
    x_next = x_hat + (s_next - s_hat) * d
    if heun:
      d_next = (x_next - d_fn(x_next, s_next)) / s_next
      x_next = x_hat + (s_next - s_hat) * 0.5 * (d + d_next)
    return x_next

  x = _loop(steps - 1, body, hi * noise)
  return d_fn(x, karras_grid(steps - 1, steps, lo, hi))  # The last step, to s = 0.


def euler(denoise, process: Process, noise, rng, steps, churn=0.0, level_min=None,
          level_max=None, s_noise=1.0):
  return _edm(denoise, process, noise, rng, steps, False, churn, level_min, level_max, s_noise)


def heun(denoise, process: Process, noise, rng, steps, churn=0.0, level_min=None,
         level_max=None, s_noise=1.0):
  return _edm(denoise, process, noise, rng, steps, True, churn, level_min, level_max, s_noise)


def dpmpp_2m(denoise, process: Process, noise, rng, steps, level_min=None, level_max=None):
  """DPM-Solver++(2M) in variance-exploding coordinates (as in k-diffusion).

  With lambda = -log s and h = lambda_next - lambda, a first-order step is
  x_next = (s_next / s) x + (1 - e^-h) D; the second order replaces D by
  (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1} / h_i. The first step is first order,
  and so is the last (to s = 0, where it returns D).
  """
  del rng
  lo, hi = _levels(process, level_min, level_max)
  d_fn = _ve_denoiser(denoise, process)

  def body(i, carry):
    x, d_prev = carry
    s, s_next = karras_grid(i, steps, lo, hi), karras_grid(i + 1, steps, lo, hi)
    s_prev = karras_grid(jnp.maximum(i - 1, 0), steps, lo, hi)
    d = d_fn(x, s)
    h = jnp.log(s / s_next)
    r = jnp.log(s_prev / s) / h
    d2 = jnp.where(i > 0, (1.0 + 0.5 / jnp.where(i > 0, r, 1.0)) * d
                   - (0.5 / jnp.where(i > 0, r, 1.0)) * d_prev, d)
    return (s_next / s) * x - jnp.expm1(-h) * d2, d

  x, _ = _loop(steps - 1, body, (hi * noise, jnp.zeros_like(noise)))
  return d_fn(x, karras_grid(steps - 1, steps, lo, hi))


SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m,
            "flow_euler": flow_euler, "flow_heun": flow_heun}
# The options each sampler takes besides (denoise, process, noise, rng, steps).
OPTIONS = {"ddpm": (), "ddim": ("eta",), "euler": ("churn", "level_min", "level_max"),
           "heun": ("churn", "level_min", "level_max"), "dpmpp_2m": ("level_min", "level_max"),
           "flow_euler": (), "flow_heun": ()}
# The denoiser these samplers want: x0_hat alone.
WITH_EPS = False


def start_level(name: str, process: Process, steps, level_max=None):
  """(alpha, sigma) of the point the sampler starts from: x_start = alpha x_ve = sigma noise.

  The Karras-grid samplers start at x / alpha = level_max * noise; the others at
  x = sigma(t_0) * noise. Tests use it to solve the probability-flow ODE exactly.
  """
  if name in ("euler", "heun", "dpmpp_2m"):
    hi = _levels(process, None, level_max)[1]
    a = process.alpha_sigma(process.t_of_level(jnp.asarray(hi)))[0]
    return a, a * hi
  return process.alpha_sigma(process.grid(0, steps))
