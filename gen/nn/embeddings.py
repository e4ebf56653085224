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


def sincos_2d(height: int, width: int, dim: int, max_period: float = 10000.0) -> jax.Array:
  """[height * width, dim]: fixed 2-D position codes for a raster-ordered grid of tokens.

  The first half of the channels is `sinusoidal` of the row index, the second half of the
  column index (the ViT/MAE/DiT sine-cosine version). Unlike learned positions, tokens
  start out distinguishable, and nearby tokens start out with similar codes.
  """
  rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  half = dim // 2
  return jnp.concatenate([sinusoidal(rows.reshape(-1), half, max_period),
                          sinusoidal(cols.reshape(-1), dim - half, max_period)], axis=-1)
