"""Group normalization for NHWC feature maps, reduced in two stages.

`GroupNorm` computes what `flax.linen.GroupNorm` computes, with the same parameters
(`scale` and `bias`, one per channel) and the same E[x^2] - E[x]^2 variance, but reduces
over positions first (a per-channel sum) and over the channels of a group second, then
applies one per-channel affine map. XLA's CPU backend fuses this into cheaper loops than
the single reduction over a reshaped [B, H, W, G, C/G] view: 1.5-3x faster forward and
faster backward on the diffusion UNets' shapes (see `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def group_norm(x: jax.Array, groups: int, scale: jax.Array, bias: jax.Array,
               eps: float = 1e-6) -> jax.Array:
  """Normalize `x` [B, ..., C] over its positions and the C/groups channels of each group."""
  c = x.shape[-1]
  if c % groups:
    raise ValueError(f"GroupNorm: {c} channels do not split into {groups} groups.")
  axes = tuple(range(1, x.ndim - 1))
  count = c // groups
  for axis in axes:
    count *= x.shape[axis]
  xf = x.astype(jnp.float32)
  def per_group(v):  # [B, C] -> [B, G]
    return v.reshape(v.shape[0], groups, c // groups).sum(-1)
  mean = per_group(xf.sum(axes)) / count
  var = jnp.maximum(per_group((xf * xf).sum(axes)) / count - mean * mean, 0.0)
  inv = jnp.repeat(jax.lax.rsqrt(var + eps), c // groups, axis=1) * scale  # [B, C]
  shift = bias - jnp.repeat(mean, c // groups, axis=1) * inv
  expand = (slice(None),) + (None,) * len(axes)
  return (xf * inv[expand] + shift[expand]).astype(x.dtype)


class GroupNorm(nn.Module):
  """`flax.linen.GroupNorm(num_groups)` for [B, ..., C] inputs, computed by `group_norm`."""

  num_groups: int = 32
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return group_norm(x, self.num_groups, scale, bias, self.epsilon)
