"""Noising processes and what the network predicts: the math every sampler shares.

Every process noises data the same way, x_t = alpha(t) x0 + sigma(t) eps with eps ~ N(0, I)
and a "natural" time t; they differ in alpha, sigma and in the network's conditioning:

| process      | alpha(t), sigma(t)                          | t during training            |
|--------------|---------------------------------------------|------------------------------|
| `linear`     | alpha^2 = exp(-(b0 t + (b1 - b0) t^2 / 2)), | U(1e-3, 1)                   |
|              | alpha^2 + sigma^2 = 1 (b0 = 0.1, b1 = 20)   |                              |
| `cosine`     | cos(a t), sin(a t), a = atan(e^10)          | U(1e-3, 1)                   |
| `edm`        | 1, t (t is the noise level sigma)           | ln t ~ N(p_mean, p_std^2)    |
| `flow`       | 1 - t, t (rectified flow)                   | U(0, 1)                      |
| `discrete`   | diffusers' table: sqrt(alphas_cumprod[t]),  | integers U{0, ..., N - 1}    |
|              | sqrt(1 - alphas_cumprod[t]), t a timestep   |                              |

`linear` is the continuous-time limit of DDPM's 1000 linear betas from 1e-4 to 0.02 (Song
et al. 2021's VP SDE); `cosine` is the continuous cosine schedule alpha = cos(pi t / 2)
(Nichol & Dhariwal 2021), with the end stretched so that log-SNR stays >= -20 and x0 is
recoverable from an eps-prediction at t = 1. `discrete` is a diffusers table of betas
(linear, scaled_linear, squaredcos_cap_v2; `gen.diffusion.discrete`), whose samplers
reproduce diffusers' schedulers.

Any process is also a "variance exploding" one: x / alpha = x0 + (sigma / alpha) eps, with
noise level s = sigma / alpha (EDM's sigma; Karras et al. 2022). Samplers that work on that
scale (`euler`, `heun`, `dpmpp_2m`) go through `t_of_level`.

An `Objective` names what the network's raw output means and how to turn it into the
denoised estimate x0_hat:

| objective | raw output (reference)                        | x0_hat                         |
|-----------|----------------------------------------------|--------------------------------|
| `eps`     | eps (Ho et al. 2020)                         | (x - sigma eps) / alpha        |
| `v`       | alpha eps - sigma x0 (Salimans & Ho 2022)    | (alpha x - sigma v) / (a2 + s2) |
| `x0`      | x0                                           | x0                             |
| `edm`     | F (Karras et al. 2022)                       | c_skip x + c_out F(c_in x)     |
| `flow`    | eps - x0 (Liu et al. 2022; Lipman et al. 2022) | x - t v                      |

(a2 + s2 = alpha^2 + sigma^2.)
The training loss is the mean squared error between the raw output and its target. For
`edm` that *is* EDM's weighted loss: lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2
equals ||F - F_target||^2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gen.diffusion import discrete as discrete_lib
from gen.diffusion.process import Objective, Process, karras_grid

PROCESSES = ("linear", "cosine", "edm", "flow", "discrete")
OBJECTIVES = ("eps", "v", "x0", "edm", "flow")
# The objectives that pick their own process; eps, v and x0 take diffusion.schedule.
OWN_PROCESS = {"edm": "edm", "flow": "flow"}

LINEAR_B0, LINEAR_B1 = 0.1, 20.0
COSINE_A = math.atan(math.exp(10.0))  # alpha(1) = cos(a): log-SNR(1) = -20.
VP_T_MIN = 1e-3  # DDPM's first step: sigma(1e-3) ~ 0.01 for the linear schedule.
KARRAS_RANGE = (0.002, 80.0)  # EDM's sampling range of the noise level s = sigma / alpha.


def _uniform_grid(i, n):
  return 1.0 - i / n


def _linear_b(t):
  return LINEAR_B0 * t + 0.5 * (LINEAR_B1 - LINEAR_B0) * t * t


def _linear_alpha_sigma(t):
  b = _linear_b(t)
  return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))


def _linear_t_of_level(s):
  b = jnp.log1p(jnp.square(s))  # 1 + s^2 = exp(b(t)); solve the quadratic b(t) = b.
  d = LINEAR_B1 - LINEAR_B0
  return (jnp.sqrt(LINEAR_B0 ** 2 + 2 * d * b) - LINEAR_B0) / d


def _vp_sample_t(rng, shape):
  return jax.random.uniform(rng, shape, minval=VP_T_MIN, maxval=1.0)


def _identity(t):
  return t


def make_process(name: str, p_mean: float = -1.2, p_std: float = 1.2,
                 discrete=None) -> Process:
  """The process called `name` (one of PROCESSES); p_mean, p_std: EDM's training levels;
  discrete: the keyword arguments of `discrete.make_discrete_process` (a mapping)."""
  if name == "discrete":
    kwargs = discrete.to_dict() if hasattr(discrete, "to_dict") else dict(discrete or {})
    return discrete_lib.make_discrete_process(**kwargs)
  if name == "linear":
    hi = float(_linear_alpha_sigma(1.0)[1] / _linear_alpha_sigma(1.0)[0])
    lo = float(jnp.sqrt(jnp.expm1(_linear_b(VP_T_MIN))))
    return Process(name, _linear_alpha_sigma, _linear_t_of_level, _identity, _identity,
                   _uniform_grid, _vp_sample_t, (lo, min(hi, KARRAS_RANGE[1])))
  if name == "cosine":
    return Process(
        name, lambda t: (jnp.cos(COSINE_A * t), jnp.sin(COSINE_A * t)),
        lambda s: jnp.arctan(s) / COSINE_A, _identity, _identity, _uniform_grid,
        _vp_sample_t, (math.tan(COSINE_A * VP_T_MIN), KARRAS_RANGE[1]))
  if name == "edm":
    lo, hi = KARRAS_RANGE

    def sample_t(rng, shape):
      return jnp.exp(p_mean + p_std * jax.random.normal(rng, shape))

    return Process(
        name, lambda t: (jnp.ones_like(t), t), _identity, lambda t: 0.25 * jnp.log(t),
        lambda c: jnp.exp(4.0 * c), lambda i, n: karras_grid(i, n, lo, hi), sample_t,
        KARRAS_RANGE)
  if name == "flow":
    return Process(
        name, lambda t: (1.0 - t, t), lambda s: s / (1.0 + s), _identity, _identity,
        _uniform_grid, lambda rng, shape: jax.random.uniform(rng, shape), KARRAS_RANGE)
  raise ValueError(f"unknown process '{name}'; valid: {', '.join(PROCESSES)}")


def _unit(a, s):
  return jnp.ones_like(a)


def make_objective(name: str, sigma_data: float = 0.5) -> Objective:
  if name == "eps":
    return Objective(name, _unit, lambda x, r, a, s: (x - s * r) / a, lambda x0, e, a, s: e,
                     lambda x, r, a, s: r)
  if name == "v":
    return Objective(name, _unit, lambda x, r, a, s: (a * x - s * r) / (a * a + s * s),
                     lambda x0, e, a, s: a * e - s * x0,
                     lambda x, r, a, s: (s * x + a * r) / (a * a + s * s))
  if name == "x0":
    return Objective(name, _unit, lambda x, r, a, s: r, lambda x0, e, a, s: x0,
                     lambda x, r, a, s: (x - a * r) / s)
  if name == "edm":
    sd2 = sigma_data ** 2

    def coefs(s):  # alpha = 1 in the EDM process: x = x0 + s eps.
      c_skip = sd2 / (s * s + sd2)
      c_out = s * sigma_data / jnp.sqrt(s * s + sd2)
      return c_skip, c_out

    def to_x0(x, r, a, s):
      c_skip, c_out = coefs(s)
      return c_skip * x + c_out * r

    def target(x0, e, a, s):
      c_skip, c_out = coefs(s)
      return (x0 - c_skip * (x0 + s * e)) / c_out

    def to_eps(x, r, a, s):
      return (x - to_x0(x, r, a, s)) / s

    return Objective(name, lambda a, s: 1.0 / jnp.sqrt(s * s + sd2), to_x0, target, to_eps)
  if name == "flow":  # alpha + sigma = 1: x = x0 + t (eps - x0).
    return Objective(name, _unit, lambda x, r, a, s: x - s * r, lambda x0, e, a, s: e - x0,
                     lambda x, r, a, s: x + a * r)
  raise ValueError(f"unknown objective '{name}'; valid: {', '.join(OBJECTIVES)}")
