"""The two records every diffusion module shares: a noising `Process` and an `Objective`.

x_t = alpha(t) x0 + sigma(t) eps in a natural time t; the objective names what the
network's raw output means. `gen.diffusion.objectives` builds the continuous processes and
every objective, `gen.diffusion.discrete` diffusers' discrete one. This module imports no
other module of the family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Process:
  """x_t = alpha(t) x0 + sigma(t) eps in natural time t (see the module docstring).

  Functions take and return arrays of any shape (elementwise).
  alpha_sigma: t -> (alpha, sigma); differentiable, so samplers can take d/dt.
  t_of_level: the noise level s = sigma / alpha -> t.
  cond: t -> the scalar the network is conditioned on (O(1); embedded times 1000).
  t_of_cond: its inverse (tests use it to build analytic models).
  grid: (i, n) -> t_i, the natural sampling times, i = 0..n, from t_max down to t_n = 0.
  sample_t: (rng, shape) -> training times.
  level_range: the (min, max) noise level the Karras-grid samplers use by default.
  """

  name: str
  alpha_sigma: Callable
  t_of_level: Callable
  cond: Callable
  t_of_cond: Callable
  grid: Callable
  sample_t: Callable
  level_range: tuple[float, float]

  def level(self, t):
    """s = sigma / alpha (inf where alpha = 0)."""
    a, s = self.alpha_sigma(t)
    return s / a


def karras_grid(i, n, lo: float, hi: float, rho: float = 7.0):
  """EDM's noise levels: i = 0..n-1 spaced evenly in s^(1/rho) from hi to lo; s_n = 0."""
  frac = jnp.where(n > 1, i / jnp.maximum(n - 1, 1), 0.0)
  s = (hi ** (1 / rho) + frac * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
  return jnp.where(i >= n, 0.0, s)


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the raw network output means, for one process.

  c_in: (alpha, sigma) -> the network's input scale (x_in = c_in * x_t).
  to_x0: (x, raw, alpha, sigma) -> x0_hat.
  target: (x0, eps, alpha, sigma) -> the raw output a perfect network would give.
  to_eps: (x, raw, alpha, sigma) -> eps_hat, directly from the raw output. The discrete
    samplers step with it as diffusers' schedulers do, operation for operation (and with a
    clipped x0_hat, eps_hat stays the network's).
  """

  name: str
  c_in: Callable
  to_x0: Callable
  target: Callable
  to_eps: Callable


def bcast(v, x):
  """[B] -> [B, 1, ..., 1], to broadcast against x."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))
