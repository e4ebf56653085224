"""Autoregressive decoding as one compiled program: prefill, then a `lax.while_loop` of
one-token steps over a key/value cache.

Prompts of different lengths share the loop: every row is at the same position `t`;
a row whose prompt is longer than `t + 1` is fed its own next prompt token instead of a
sample (so each row gets exactly what it would get alone). The shared prompt prefix
is written to the cache in one parallel prefill.

Beyond the context: the cache holds `max_len` positions. When it is full, it is rebuilt
from the last `max_len - stride + 1` tokens (positions restart at 0), so every token is
predicted from between `max_len - stride + 1` and `max_len` tokens of context;
`stride=1` reproduces nanoGPT's crop-to-the-last-`max_len` exactly, at one rebuild per
token. Prompts longer than `max_len` are an error.

Sampling: `temperature` 0 is greedy; `top_k` keeps the k most likely tokens (0: all);
`top_p` keeps the smallest set whose probability reaches p (1: all), measured after top-k
on the renormalized top-k set, as transformers orders its warpers. All three are
traced values: changing them does not recompile. Top-k alone finds the k-th largest logit by
bisection over the float32 bit patterns (32 counting passes, exact, ties kept) instead of
sorting the vocabulary at every token: for GPT-2's 50,257 tokens at batch 8 the sort made
decoding 3x slower (`benchmarks/RESULTS.md`). Top-p sorts.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _ordered_keys(x: jax.Array) -> jax.Array:
  """uint32 keys whose order is the order of the float32 values `x` (NaN aside; -0 is 0)."""
  x = jnp.where(x == 0, 0.0, x.astype(jnp.float32))  # -0.0 == 0.0, so one key for both.
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def kth_largest_mask(x: jax.Array, k) -> jax.Array:
  """True where x [B, V] is at least its row's k-th largest value (1 <= k <= V; traced).

  Bisection over the values' ordered bit patterns: the largest key t with at least k keys
  >= t is the k-th largest value's key, found in 32 halvings of [0, 2^32) with one counting
  pass each, so no sort of the row.
  """
  keys = _ordered_keys(x)
  batch = x.shape[0]

  def halve(_, bounds):
    lo, hi = bounds  # Invariant: count(keys >= lo) >= k; the answer is in [lo, hi].
    gap = hi - lo
    mid = lo + (gap >> 1) + (gap & 1)
    enough = jnp.sum(keys >= mid[:, None], axis=-1) >= k
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - (gap > 0))

  lo = jnp.zeros((batch,), jnp.uint32)
  hi = jnp.full((batch,), 0xFFFFFFFF, jnp.uint32)
  lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
  return keys >= lo[:, None]


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
  """Tempered logits with tokens outside top-k / top-p set to -inf. logits: [B, V].

  Only the filters that can remove a token run: top-k alone (0 < top_k < V) by bisection
  (`kth_largest_mask`), top-p (top_p < 1, with or without top-k) on the sorted row;
  otherwise the tempered logits pass through.
  """
  vocab = logits.shape[-1]
  x = logits / jnp.maximum(temperature, 1e-6)

  def top_k_only(x):
    return jnp.where(kth_largest_mask(x, jnp.minimum(top_k, vocab)), x, -jnp.inf)

  def filtered(x):
    ordered = jnp.sort(x, axis=-1)[:, ::-1]  # Descending.
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, (x.shape[0], 1)), axis=-1)
    # Top-p reads the distribution that top-k left, renormalized (as transformers applies
    # its TopK then its TopP warper), not the full row's.
    in_top_k = jnp.arange(vocab) < k
    probs = jax.nn.softmax(jnp.where(in_top_k, ordered, -jnp.inf), axis=-1)
    # Keep sorted token i if the mass before it is < p: the smallest set reaching p.
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < top_p
    pth = jnp.min(jnp.where(keep_sorted, ordered, jnp.inf), axis=-1, keepdims=True)
    threshold = jnp.maximum(kth, pth)
    return jnp.where(x >= threshold, x, -jnp.inf)

  k_active = (top_k > 0) & (top_k < vocab)
  branch = jnp.where(top_p < 1, 2, jnp.where(k_active, 1, 0))
  return jax.lax.switch(branch, [lambda x: x, top_k_only, filtered], x)


def choose(logits: jax.Array, rng, temperature, top_k, top_p) -> jax.Array:
  """One token per row: argmax when temperature <= 0, else a filtered sample."""
  sampled = jax.random.categorical(rng, filter_logits(logits, temperature, top_k, top_p))
  return jnp.where(temperature <= 0, jnp.argmax(logits, axis=-1), sampled).astype(jnp.int32)


def decode(apply: Callable, init_cache: Callable, params, rng, prompt: jax.Array,
           prompt_lens: jax.Array, max_new_tokens: int, max_len: int, *,
           temperature=1.0, top_k=0, top_p=1.0, end_id: int | tuple = -1, stride: int = 0,
           return_logits: bool = False):
  """Continues each prompt by up to `max_new_tokens` tokens.

  apply(params, tokens [B, S], positions [S], cache) -> (logits [B, S, V], cache).
  prompt: int32 [B, P] right-padded; prompt_lens: int32 [B] in 1..P.
  Returns int32 [B, P + max_new_tokens]: each row's prompt, its continuation, then -1
  (after `end_id`, which is kept, or after its `max_new_tokens`; a tuple of ids: any of them). With `return_logits`,
  also the float32 logits [B, P + max_new_tokens - 1, V] that chose each next token
  (zero where no step ran).
  """
  batch, plen = prompt.shape
  if plen > max_len:
    raise ValueError(f"a prompt of {plen} tokens is longer than the model's context "
                     f"({max_len} tokens)")
  stride = stride or max(1, max_len // 4)
  if not 1 <= stride <= max_len:
    raise ValueError(f"stride must be in 1..{max_len}, got {stride}")
  keep = max_len - stride + 1  # Tokens kept when the cache is rebuilt.
  total = plen + max_new_tokens
  lens = prompt_lens.astype(jnp.int32)
  buf = jnp.concatenate([prompt.astype(jnp.int32),
                         jnp.zeros((batch, max_new_tokens), jnp.int32)], axis=1)
  last = lens + max_new_tokens - 1  # Index of each row's last token.

  # Prefill the padded prompt. Slots past a row's prompt hold padding for now; the loop
  # rewrites every slot from min(lens) - 1 on before any later position reads it.
  cache = init_cache(batch)
  prefill_logits, cache = apply(params, buf[:, :plen], jnp.arange(plen), cache)
  t0 = jnp.min(lens) - 1

  def rebuild(buf, t):
    """A fresh cache from the last `keep` tokens up to t; logits of the last one."""
    start = t - keep + 1
    window = jax.lax.dynamic_slice_in_dim(buf, start, keep, axis=1)
    logits, c = apply(params, jnp.maximum(window, 0), jnp.arange(keep), init_cache(batch))
    return logits[:, -1], c, start

  def step(carry):
    t, offset, buf, cache, done, key, logits_out = carry
    key, sub = jax.random.split(key)
    tok = jnp.maximum(buf[:, t], 0)[:, None]

    def one(_):
      logits, c = apply(params, tok, (t - offset)[None], cache)
      return logits[:, -1], c, offset

    if total > max_len:  # The cache can fill up: rebuild it when it does.
      logits, cache, offset = jax.lax.cond(t - offset >= max_len, lambda _: rebuild(buf, t),
                                           one, None)
    else:
      logits, cache, offset = one(None)
    nxt = choose(logits, sub, temperature, top_k, top_p)
    forced = t + 1 < lens
    nxt = jnp.where(forced, buf[:, t + 1], nxt)
    nxt = jnp.where(done, -1, nxt)
    buf = buf.at[:, t + 1].set(nxt)
    ended = (jnp.isin(nxt, jnp.asarray(end_id, jnp.int32)) if isinstance(end_id, tuple)
             else nxt == end_id)
    done = done | (~forced & (ended | (t + 1 >= last)))
    if return_logits:
      logits_out = logits_out.at[:, t].set(logits)
    return t + 1, offset, buf, cache, done, key, logits_out

  def cond(carry):
    t, _, _, _, done, _, _ = carry
    return (t < total - 1) & ~jnp.all(done)

  done = jnp.zeros((batch,), bool)
  vocab = prefill_logits.shape[-1]
  logits_out = (jnp.zeros((batch, total - 1, vocab), jnp.float32) if return_logits
                else jnp.zeros(()))
  carry = (t0, jnp.int32(0), buf, cache, done, rng, logits_out)
  t, _, buf, _, done, _, logits_out = jax.lax.while_loop(cond, step, carry)
  # Rows that stopped early leave zeros in later slots; mark everything after `last`.
  idx = jnp.arange(total)[None, :]
  buf = jnp.where(idx > jnp.minimum(last, t)[:, None], -1, buf)
  return (buf, logits_out) if return_logits else buf

