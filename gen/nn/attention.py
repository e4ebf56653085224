"""Attention: unmasked `dot_product_attention` for the diffusion networks, causal
self-attention with an explicit key/value cache, and rotary position embeddings.

Attention goes through `jax.nn.dot_product_attention`, so GPUs get the fused cuDNN kernel
where shapes and dtypes allow and other backends the XLA reference; on CPU the unmasked one
is computed here, the same math, faster there: two einsums, in blocks with recomputation
for large logits (`dot_product_attention`). The cache is plain
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


# The CPU attention's blocks (`dot_product_attention`): ROWS (batch, head) pairs and
# QUERY_BLOCK queries at a time (CAUSAL_QUERY_BLOCK when causal: smaller blocks skip more of
# the masked keys), for logits of at least BLOCKED_MIN_BYTES and at least BLOCKED_MIN_KEYS keys.
ROWS = 2
QUERY_BLOCK = 256
CAUSAL_QUERY_BLOCK = 128
BLOCKED_MIN_BYTES = 1 << 20
BLOCKED_MIN_KEYS = 256
_LARGE_NEGATIVE = -0.7 * float(jnp.finfo(jnp.float32).max)  # jax's masked logit.


def _einsums(q: jax.Array, k: jax.Array, v: jax.Array, logits: str, out: str,
             mask: jax.Array | None = None) -> jax.Array:
  """softmax(q k / sqrt(H)) v, the logits in float32 and the probabilities in k's dtype;
  where `mask` ([T, S], broadcast) is False the scaled logits are jax's large negative."""
  x = jnp.einsum(logits, q, k, preferred_element_type=jnp.float32)
  x = x * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), x.dtype)
  if mask is not None:
    x = jnp.where(mask, x, jnp.asarray(_LARGE_NEGATIVE, x.dtype))
  return jnp.einsum(out, jax.nn.softmax(x, axis=-1).astype(k.dtype), v)


def _causal_mask(t: int, s: int, start=0) -> jax.Array:
  """[t, s]: query start + i sees keys 0..start + i (jax's `is_causal`: `tril` of [T, S])."""
  return jnp.arange(s)[None, :] <= start + jnp.arange(t)[:, None]


def _repeat_heads(n: int, kv: jax.Array) -> jax.Array:
  """Keys or values [B, S, K, H] whose K heads each serve N / K query heads, as N heads
  (query head i reads head i // (N / K), as in jax's grouped-query attention)."""
  heads = kv.shape[2]
  if n % heads:
    raise ValueError(f"{n} query heads cannot share {heads} key/value heads")
  return kv if heads == n else jnp.repeat(kv, n // heads, axis=2)


def whole_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                    is_causal: bool = False) -> jax.Array:
  """`dot_product_attention`'s unblocked form: two einsums over the [B, N, T, S] logits."""
  k, v = _repeat_heads(q.shape[2], k), _repeat_heads(q.shape[2], v)
  mask = _causal_mask(q.shape[1], k.shape[1]) if is_causal else None
  return _einsums(q, k, v, "btnh,bsnh->bnts", "bnts,bsnh->btnh", mask)


def _blocks(b: int, t: int, n: int, s: int, is_causal: bool) -> tuple[int, int] | None:
  """The (rows, queries) blocks for these shapes, or None: all at once."""
  if b * n * t * s * 4 < BLOCKED_MIN_BYTES or s < BLOCKED_MIN_KEYS:
    return None
  queries = CAUSAL_QUERY_BLOCK if is_causal else QUERY_BLOCK
  return ROWS if (b * n) % ROWS == 0 else 1, queries if t % queries == 0 else t


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, is_causal: bool = False,
                          block: tuple[int, int] | None = None) -> jax.Array:
  """`jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)` without mask or bias, q
  [B, T, N, H] and k, v [B, S, K, H] with K dividing N (grouped queries: query head i reads
  key/value head i // (N / K)). Elsewhere than on CPU it is jax's own, so GPUs get their
  fused kernels. On CPU it is computed here, the same math as jax's XLA reference (float32
  logits scaled by 1/sqrt(H), masked with jax's large negative where a query may not look,
  softmax, probabilities cast to the keys' dtype), without the grouped-query reshape that
  reference lowers to (shared key/value heads are repeated instead):

  - small logits (under `BLOCKED_MIN_BYTES`, or fewer than `BLOCKED_MIN_KEYS` keys, as in
    cross-attention to a caption): two einsums over [B, N, T, S] logits;
  - larger ones: in blocks of `ROWS` (batch, head) pairs and `QUERY_BLOCK` queries
    (`CAUSAL_QUERY_BLOCK` when causal; `block` = (rows, queries) forces a choice), one after another in nested `lax.map`s, each block's
    logits recomputed in the backward pass rather than stored. A block's [2, 256, S] logits
    stay in cache, where the whole [B, N, T, S] ones go through memory several times. Rows
    of a softmax are independent, so the blocks give the same numbers. Causal blocks skip
    the keys after their last query: the query blocks are unrolled, block j reading the
    first (j + 1) * CAUSAL_QUERY_BLOCK keys, about half the work of the masked square.

  At DiT-S/2's, SD-UNet's 32 x 32 and 64 x 64 shapes this is 1.4-2.4x faster than jax's
  forward + backward on XLA:CPU (`benchmarks/attention.py`, `benchmarks/RESULTS.md`)."""
  if jax.default_backend() != "cpu":
    return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)
  b, t, n, h = q.shape
  s = k.shape[1]
  block = block or _blocks(b, t, n, s, is_causal)
  if block is None:
    return whole_attention(q, k, v, is_causal=is_causal)
  rows, queries = block
  if (b * n) % rows or t % queries:
    raise ValueError(f"blocks of {rows} (batch, head) rows and {queries} queries do not divide "
                     f"{b} x {n} rows and {t} queries")
  heads_first = lambda x: x.transpose(0, 2, 1, 3).reshape(b * n // rows, rows, -1, h)  # noqa: E731
  qs = heads_first(q).reshape(b * n // rows, rows, t // queries, queries, h)
  ks, vs = heads_first(_repeat_heads(n, k)), heads_first(_repeat_heads(n, v))

  def group(args):  # [rows, t / queries, queries, H] queries, their [rows, S, H] keys, values
    qg, kg, vg = args
    if is_causal:  # Block j reads only the keys up to its last query: the triangle, unrolled.
      out = []
      for j in range(t // queries):
        length = min((j + 1) * queries, s)

        @jax.checkpoint
        def one(qb, kb, vb, start=j * queries):
          mask = _causal_mask(queries, kb.shape[1], start)
          return _einsums(qb, kb, vb, "rth,rsh->rts", "rts,rsh->rth", mask)
        out.append(one(qg[:, j], kg[:, :length], vg[:, :length]))
      return jnp.stack(out, axis=1)

    @jax.checkpoint
    def one(qb):
      return _einsums(qb, kg, vg, "rth,rsh->rts", "rts,rsh->rth")
    return jax.lax.map(one, qg.swapaxes(0, 1)).swapaxes(0, 1)

  y = jax.lax.map(group, (qs, ks, vs))  # [b * n / rows, rows, t / queries, queries, H]
  return y.reshape(b, n, t, h).transpose(0, 2, 1, 3)


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
      y = dot_product_attention(q, k, v, is_causal=True)
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
