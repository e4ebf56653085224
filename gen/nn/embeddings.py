"""Embeddings of scalars (diffusion time, noise level) for conditioning networks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sinusoidal(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """[B] -> [B, dim]: cos and sin of `t` at `dim // 2` geometric frequencies.

  The Transformer's position encoding applied to a real-valued `t` (Vaswani et al. 2017;
  Ho et al. 2020 use it for the diffusion step): frequencies run from 1 down to
  1 / max_period, so `t` should vary over a range of order 1..max_period (e.g. 1000 * t
  for t in [0, 1]). An odd `dim` gets one zero column.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb
