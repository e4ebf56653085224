"""Attention: unmasked `dot_product_attention` for the diffusion networks, causal
self-attention with an explicit key/value cache, and rotary position embeddings.

Attention goes through `jax.nn.dot_product_attention`, so GPUs get the fused cuDNN kernel
where shapes and dtypes allow and other backends the XLA reference; on CPU the unmasked one
is computed here, the same math, faster there: two einsums, in query blocks with
recomputation for long sequences (`dot_product_attention`). The cache is plain
state passed in and returned (no mutable Flax collections): `{"k", "v"}` arrays of shape
`[B * kv_heads, max_len, head_dim]` (row `b * kv_heads + j` holds head j of sequence b),
written at the absolute positions of the new tokens.

That layout is the one the attention matmuls take as it is: one batch dimension, keys
contracted over their last axis, values over their positions. Decoding then updates the
cache in place and reads it where it lies. Two other layouts cost a copy of every layer's
cache at every token: `[B, max_len, heads, head_dim]` (XLA transposes it for the matmul),
and `[B, heads, max_len, head_dim]` (XLA merges the two batch dimensions with a reshape,
which split the in-place update into two updates of separate copies inside the decoding
loop; 13% of SmolLM-135M's decoding time on the 2-core CPU of `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn


# Query blocks of the CPU attention: sequences of at least BLOCKED_MIN_TOKENS queries and keys
# run in blocks of QUERY_BLOCK queries (`dot_product_attention`).
QUERY_BLOCK = 128
BLOCKED_MIN_TOKENS = 512


def _attention_core(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
  logits = logits * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), logits.dtype)
  probs = jax.nn.softmax(logits, axis=-1).astype(k.dtype)
  return jnp.einsum("bnts,bsnh->btnh", probs, v)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          block: int | None = None) -> jax.Array:
  """`jax.nn.dot_product_attention(q, k, v)` without mask or bias, q [B, T, N, H] and k, v
  [B, S, N, H] with as many heads. Elsewhere than on CPU it is jax's own, so GPUs get their
  fused kernels. On CPU it is computed here, the same math as jax's XLA reference (float32
  logits scaled by 1/sqrt(H), softmax, probabilities cast to the keys' dtype):

  - as two einsums over [B, N, T, S] logits, without the grouped-query reshape jax's
    reference lowers to: 1.1-1.7x faster forward and 1.0-1.6x forward + backward on XLA:CPU;
  - for long sequences (T and S at least `BLOCKED_MIN_TOKENS`, T a multiple of `block`), in
    blocks of `block` queries (default `QUERY_BLOCK`), one after another in a `lax.map`,
    each block's logits recomputed in the backward pass rather than stored: the
    [B, N, block, S] logits stay in cache, where the whole [B, N, T, S] ones (32 MiB at
    SD-UNet's 32 x 32 level) go through memory several times. Rows of a softmax are
    independent, so the blocks give the same numbers.

  Timings in `benchmarks/RESULTS.md`. `block` forces the blocked form at any length (tests)."""
  if jax.default_backend() != "cpu":
    return jax.nn.dot_product_attention(q, k, v)
  b, t, n, h = q.shape
  if block is None:
    long = min(t, k.shape[1]) >= BLOCKED_MIN_TOKENS and t % QUERY_BLOCK == 0
    block = QUERY_BLOCK if long else t
  if t % block:
    raise ValueError(f"{t} queries are not a multiple of the query block {block}")
  if block == t:
    return _attention_core(q, k, v)
  blocks = q.reshape(b, t // block, block, n, h).swapaxes(0, 1)
  y = jax.lax.map(jax.checkpoint(lambda qb: _attention_core(qb, k, v)), blocks)
  return y.swapaxes(0, 1).reshape(b, t, n, h)


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
  """An empty cache for `num_layers` attention layers with `num_heads` key/value heads."""
  z = jnp.zeros((batch * num_heads, max_len, head_dim), dtype)
  return [{"k": z, "v": z} for _ in range(num_layers)]


def write_cache(cache: jax.Array, new: jax.Array, start) -> jax.Array:
  """`cache` [B * heads, max_len, hd] with `new` [B, S, heads, hd] written at start..start+S-1."""
  b, s, h, d = new.shape
  rows = new.transpose(0, 2, 1, 3).reshape(b * h, s, d).astype(cache.dtype)
  return jax.lax.dynamic_update_slice(cache, rows, (0, start, 0))


def cached_attention(q: jax.Array, keys: jax.Array, values: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """Attention of new queries to a cache, with grouped queries where it has fewer heads.

  q: [B, S, heads, head_dim]; keys, values: [B * kv_heads, max_len, head_dim] (see the
  module docstring), where query head i reads key/value head i // (heads / kv_heads);
  mask: [S, max_len] (True where a query may look). Returns [B, S, heads, head_dim]. The
  same math as `jax.nn.dot_product_attention` (scaled by 1/sqrt(head_dim), softmax in
  float32), written as two batched matmuls that take the cache in its own layout.
  """
  b, s, h, d = q.shape
  kv = keys.shape[0] // b
  g = h // kv
  # [B * kv, g * S, hd]: each key/value head's queries, as the rows of one matmul.
  qg = q.reshape(b, s, kv, g, d).transpose(0, 2, 3, 1, 4).reshape(b * kv, g * s, d)
  logits = jnp.einsum("nqd,ntd->nqt", qg, keys).astype(jnp.float32) * d ** -0.5
  logits = logits.reshape(b * kv, g, s, -1)
  logits = jnp.where(mask[None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype).reshape(b * kv, g * s, -1)
  y = jnp.einsum("nqt,ntd->nqd", probs, values)
  return y.reshape(b, kv, g, s, d).transpose(0, 3, 1, 2, 4).reshape(b, s, h, d)


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
      keys = write_cache(cache["k"], k, positions[0])  # [B * heads, max_len, hd]
      values = write_cache(cache["v"], v, positions[0])
      # Query i (at positions[i]) sees cached slots 0..positions[i]; later slots are stale.
      mask = jnp.arange(keys.shape[1])[None, :] <= positions[:, None]  # [S, max_len]
      y = cached_attention(q, keys.astype(q.dtype), values.astype(q.dtype), mask)
      new_cache = {"k": keys, "v": values}
    y = nn.DenseGeneral(width, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                        kernel_init=self.out_init, name="out")(y)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    return y, new_cache
