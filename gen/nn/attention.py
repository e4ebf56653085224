"""Causal self-attention with an explicit key/value cache, and rotary position embeddings.

Attention goes through `jax.nn.dot_product_attention`, so GPUs get the fused cuDNN kernel
where shapes and dtypes allow and other backends the XLA reference. The cache is plain
state passed in and returned (no mutable Flax collections): `{"k", "v"}` arrays of shape
`[B, heads, max_len, head_dim]`, written at the absolute positions of the new tokens. That
head-major layout is the one the attention matmuls contract over, so decoding reads the
cache in place; a `[B, max_len, heads, head_dim]` cache made XLA copy it into this order in
every layer at every token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


def rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), rotating the two halves of each head.

  x: [B, S, heads, head_dim]; positions: [S] absolute positions of the S tokens.
  """
  half = x.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions.astype(jnp.float32)[:, None] * freq[None, :]  # [S, half]
  cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x.dtype)


def init_cache(batch: int, max_len: int, num_layers: int, num_heads: int, head_dim: int,
               dtype=jnp.float32) -> list[dict[str, jax.Array]]:
  """An empty cache for `num_layers` attention layers."""
  z = jnp.zeros((batch, num_heads, max_len, head_dim), dtype)
  return [{"k": z, "v": z} for _ in range(num_layers)]


def cached_attention(q: jax.Array, keys: jax.Array, values: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """Attention of new queries to a head-major cache.

  q: [B, S, heads, head_dim]; keys, values: [B, heads, max_len, head_dim]; mask: [S, max_len]
  (True where a query may look). Returns [B, S, heads, head_dim]. The same math as
  `jax.nn.dot_product_attention` (scaled by 1/sqrt(head_dim), softmax in float32), written
  as two einsums so the cache is contracted in its own layout.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bshd,bhtd->bhst", q, keys).astype(jnp.float32) * scale
  logits = jnp.where(mask[None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
  return jnp.einsum("bhst,bhtd->bshd", probs, values)


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention.

  Without a cache, the S tokens attend causally among themselves (training, scoring).
  With a cache, they are written at `positions` (contiguous, starting at `positions[0]`)
  and each attends to every cached position up to its own: prefill (S > 1) and
  one-token decoding (S = 1) are the same code.
  """

  num_heads: int
  use_rotary: bool = False
  use_bias: bool = True
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  out_init: nn.initializers.Initializer = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x, positions, cache=None, deterministic: bool = True):
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads={self.num_heads}")
    head_dim = width // self.num_heads
    qkv = nn.DenseGeneral((3, self.num_heads, head_dim), use_bias=self.use_bias,
                          dtype=self.dtype, kernel_init=nn.initializers.normal(0.02),
                          name="qkv")(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, S, heads, head_dim]
    if self.use_rotary:
      q, k = rotary(q, positions), rotary(k, positions)
    if cache is None:
      y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
      new_cache = None
    else:
      start = positions[0]
      write = lambda c, new: jax.lax.dynamic_update_slice(  # noqa: E731
          c, new.transpose(0, 2, 1, 3).astype(c.dtype), (0, 0, start, 0))
      keys, values = write(cache["k"], k), write(cache["v"], v)  # [B, heads, max_len, hd]
      # Query i (at positions[i]) sees cached slots 0..positions[i]; later slots are stale.
      mask = jnp.arange(keys.shape[2])[None, :] <= positions[:, None]  # [S, max_len]
      y = cached_attention(q, keys.astype(q.dtype), values.astype(q.dtype), mask)
      new_cache = {"k": keys, "v": values}
    y = nn.DenseGeneral(width, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                        kernel_init=self.out_init, name="out")(y)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    return y, new_cache
