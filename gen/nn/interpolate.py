"""Interpolation in latent space."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def slerp(a: jax.Array, b: jax.Array, t: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Spherical interpolation between the rows of `a` and `b` ([..., D]) at fractions `t`.

  Falls back to linear interpolation where the two vectors are (anti)parallel.
  """
  t = jnp.asarray(t)[..., None]
  an = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)
  bn = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + eps)
  omega = jnp.arccos(jnp.clip(jnp.sum(an * bn, -1, keepdims=True), -1.0, 1.0))
  so = jnp.sin(omega)
  safe = so > 1e-4
  so = jnp.where(safe, so, 1.0)
  spherical = (jnp.sin((1.0 - t) * omega) / so) * a + (jnp.sin(t * omega) / so) * b
  return jnp.where(safe, spherical, (1.0 - t) * a + t * b)


def slerp_grid(a: jax.Array, b: jax.Array, num: int) -> jax.Array:
  """[N, D] x [N, D] -> [N, num, D]: `num` evenly spaced points from a to b, ends included."""
  t = jnp.linspace(0.0, 1.0, num)
  return jax.vmap(lambda x, y: slerp(x[None], y[None], t))(a, b)
