"""A decoder-only transformer (GPT) with an explicit key/value cache.

Options (all from `config.model`): pre-LayerNorm or RMSNorm (epsilon `norm_eps`: GPT-2's
1e-5, or flax's 1e-6 that the configs measured before it existed keep; `rmsnorm_1p` is Gemma's
RMSNorm, scaled by 1 + w), learned or rotary positions, GELU (tanh approximation, GPT-2's
`gelu_new`), SwiGLU or GeGLU MLP, tied input/output embeddings, dropout, bf16 compute with fp32
parameters, and rematerialized blocks. Initialization follows GPT-2 / nanoGPT: N(0, 0.02)
weights, residual output projections scaled by 1/sqrt(2 * num_layers).

The keys today's open models need (LLaMA, Mistral, Qwen2/3, Gemma; see `gen.lm.hf_llama`), each
absent from older configs and saved runs, where its default is the old behaviour:

| key | default | meaning |
|---|---|---|
| `num_kv_heads` | 0 (= num_heads) | grouped-query attention: heads of keys and values; the cache holds only these |
| `head_dim` | 0 (= width / num_heads) | width of one head |
| `mlp_hidden` | 0 | MLP width; 0: 4 * width (gelu), LLaMA's 8/3 * width rounded up to 64 (swiglu, geglu) |
| `qkv_bias` | False | biases on q, k, v even when `use_bias` is false (Qwen2) |
| `qk_norm` | False | RMSNorm of each query and key head before the rotation (Qwen3) |
| `rope_theta` | 10000.0 | the rotary base |
| `rope_scaling` | none | `{"rope_type": "linear", "factor"}` or `{"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}` |
| `embed_scale` | False | token embeddings times sqrt(width) (Gemma) |
| `param_dtype` | float32 | parameter dtype (`bfloat16` keeps bf16 weights as they are) |
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gen.nn import attention
from gen.nn.attention import cached_attention, init_cache, write_cache

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# The epsilon of a config (or a saved run's config.json) that has no `model.norm_eps`: flax's
# default, what every model used before the key existed.
OLD_NORM_EPS = 1e-6
NORMS = ("layernorm", "rmsnorm", "rmsnorm_1p")
MLPS = ("gelu", "swiglu", "geglu")
ROPE_TYPES = ("default", "linear", "llama3")
# What each rope_scaling type reads (transformers' names).
ROPE_KEYS = {"default": (), "linear": ("factor",),
             "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                        "original_max_position_embeddings")}


class RMSNorm1p(nn.Module):
  """Gemma's RMSNorm: x / rms(x) * (1 + scale), in float32, scale initialized at 0."""

  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)


def _norm(kind: str, eps: float, dtype, name: str, param_dtype=jnp.float32):
  if kind == "layernorm":
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == "rmsnorm_1p":
    return RMSNorm1p(eps, dtype, param_dtype, name=name)
  raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got '{kind}'")


def rope_frequencies(head_dim: int, theta: float, scaling: tuple = ()) -> jax.Array:
  """The rotary frequencies [head_dim // 2] of base `theta`, rescaled by `scaling` (a sorted
  tuple of transformers' rope_scaling items; empty or type "default": none)."""
  half = head_dim // 2
  s = dict(scaling)
  kind = s.get("rope_type", "default")
  if kind == "default":  # Computed as gen's rotary layers always have.
    return theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  # transformers' float32 arithmetic (modeling_rope_utils), done once here in numpy.
  f32 = np.float32
  inv = f32(1.0) / (f32(theta) ** (np.arange(0, head_dim, 2).astype(f32) / f32(head_dim)))
  factor = f32(s["factor"])
  if kind == "linear":
    return jnp.asarray(inv / factor)
  if kind == "llama3":
    low, high = f32(s["low_freq_factor"]), f32(s["high_freq_factor"])
    old = f32(s["original_max_position_embeddings"])
    wavelen = f32(2 * math.pi) / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return jnp.asarray(np.where(medium, smoothed, scaled).astype(f32))
  raise ValueError(f"model.rope_scaling.rope_type must be one of {', '.join(ROPE_TYPES)}, "
                   f"got '{kind}'")


def rope(x: jax.Array, positions: jax.Array, freq: jax.Array) -> jax.Array:
  """Rotary position embedding rotating the two halves of each head (as gen.nn.attention's
  `rotary` and transformers' `rotate_half`). x: [B, S, heads, head_dim]; positions: [S]."""
  half = x.shape[-1] // 2
  angle = positions.astype(jnp.float32)[:, None] * freq[None, :]  # [S, half]
  cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x.dtype)


class Attention(nn.Module):
  """Causal self-attention with an explicit cache (see gen.nn.attention), grouped-query.

  With as many key/value heads as query heads the projection is one `qkv` kernel
  [width, 3, heads, head_dim] (GPT-2's layout); with fewer, `q` [width, heads, head_dim] and
  `kv` [width, 2, kv_heads, head_dim]. The cache holds kv_heads heads.
  """

  num_heads: int
  num_kv_heads: int
  head_dim: int
  use_rotary: bool
  use_bias: bool
  qkv_bias: bool
  qk_norm: bool
  norm_eps: float
  rope_theta: float
  rope_scaling: tuple
  dropout: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  out_init: nn.initializers.Initializer

  @nn.compact
  def __call__(self, x, positions, cache=None, deterministic: bool = True):
    width = x.shape[-1]
    h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
    dense = lambda shape, name: nn.DenseGeneral(  # noqa: E731
        shape, use_bias=self.use_bias or self.qkv_bias, dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=nn.initializers.normal(0.02), name=name)
    if kv == h:
      qkv = dense((3, h, d), "qkv")(x)
      q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, S, heads, head_dim]
    else:
      q = dense((h, d), "q")(x)
      kvs = dense((2, kv, d), "kv")(x)
      k, v = kvs[:, :, 0], kvs[:, :, 1]  # [B, S, kv_heads, head_dim]
    if self.qk_norm:
      q = nn.RMSNorm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="q_norm")(q)
      k = nn.RMSNorm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="k_norm")(k)
    if self.use_rotary:
      freq = rope_frequencies(d, self.rope_theta, self.rope_scaling)
      q, k = rope(q, positions, freq), rope(k, positions, freq)
    if cache is None:
      y = attention.dot_product_attention(q, k, v, is_causal=True)
      new_cache = None
    else:
      keys = write_cache(cache["k"], k, positions[0])  # [B * kv_heads, max_len, hd]
      values = write_cache(cache["v"], v, positions[0])
      # Query i (at positions[i]) sees cached slots 0..positions[i]; later slots are stale.
      mask = jnp.arange(keys.shape[1])[None, :] <= positions[:, None]  # [S, max_len]
      y = cached_attention(q, keys.astype(q.dtype), values.astype(q.dtype), mask)
      new_cache = {"k": keys, "v": values}
    y = nn.DenseGeneral(width, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                        param_dtype=self.param_dtype, kernel_init=self.out_init, name="out")(y)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    return y, new_cache


def mlp_width(kind: str, width: int, hidden: int = 0) -> int:
  """The MLP's hidden width: `hidden`, or 4 * width (gelu), or LLaMA's 8/3 * width rounded up
  to 64 (the gated ones)."""
  if hidden:
    return hidden
  return 4 * width if kind == "gelu" else 64 * math.ceil(8 * width / 3 / 64)


class MLP(nn.Module):
  kind: str  # gelu | swiglu | geglu
  use_bias: bool
  dropout: float
  dtype: jnp.dtype
  out_init: nn.initializers.Initializer
  hidden: int = 0
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool):
    width = x.shape[-1]
    init = nn.initializers.normal(0.02)
    if self.kind not in MLPS:
      raise ValueError(f"model.mlp must be one of {', '.join(MLPS)}, got '{self.kind}'")
    hidden = mlp_width(self.kind, width, self.hidden)
    dense = lambda n, name, kernel_init: nn.Dense(  # noqa: E731
        n, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=kernel_init, name=name)
    if self.kind == "gelu":  # The tanh approximation (GPT-2's gelu_new).
      h = nn.gelu(dense(hidden, "fc", init)(x))
    else:  # Gated: `fc` holds [gate | up]; SwiGLU (LLaMA) or GeGLU with the tanh GELU (Gemma).
      gate, up = jnp.split(dense(2 * hidden, "fc", init)(x), 2, axis=-1)
      h = (nn.silu(gate) if self.kind == "swiglu" else nn.gelu(gate)) * up
    y = dense(width, "proj", self.out_init)(h)
    return nn.Dropout(self.dropout)(y, deterministic=deterministic)


class Block(nn.Module):
  num_heads: int
  norm: str
  norm_eps: float
  mlp: str
  use_rotary: bool
  use_bias: bool
  dropout: float
  dtype: jnp.dtype
  out_init: nn.initializers.Initializer
  num_kv_heads: int = 0
  head_dim: int = 0
  mlp_hidden: int = 0
  qkv_bias: bool = False
  qk_norm: bool = False
  rope_theta: float = 10000.0
  rope_scaling: tuple = ()
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, positions, cache, deterministic: bool):
    norm = lambda name: _norm(self.norm, self.norm_eps, self.dtype, name,  # noqa: E731
                              self.param_dtype)
    h, cache = Attention(
        self.num_heads, self.num_kv_heads, self.head_dim, self.use_rotary, self.use_bias,
        self.qkv_bias, self.qk_norm, self.norm_eps, self.rope_theta, self.rope_scaling,
        self.dropout, self.dtype, self.param_dtype, self.out_init,
        name="attn")(norm("norm1")(x), positions, cache, deterministic)
    x = x + h
    x = x + MLP(self.mlp, self.use_bias, self.dropout, self.dtype, self.out_init,
                self.mlp_hidden, self.param_dtype, name="mlp")(norm("norm2")(x), deterministic)
    return x, cache


class GPT(nn.Module):
  vocab_size: int
  max_len: int  # Context length: learned position table size and cache length.
  num_layers: int = 4
  num_heads: int = 4
  width: int = 128
  norm: str = "layernorm"  # layernorm | rmsnorm | rmsnorm_1p
  norm_eps: float = 1e-5  # GPT-2's LayerNorm epsilon.
  mlp: str = "gelu"  # gelu | swiglu | geglu
  positions: str = "learned"  # learned | rotary
  tie_embeddings: bool = True
  use_bias: bool = True
  dropout: float = 0.0
  dtype: str = "float32"  # Compute dtype.
  remat: bool = False  # Recompute each block's activations in the backward pass.
  num_kv_heads: int = 0  # 0: num_heads.
  head_dim: int = 0  # 0: width // num_heads.
  mlp_hidden: int = 0  # 0: the MLP kind's default width.
  qkv_bias: bool = False
  qk_norm: bool = False
  rope_theta: float = 10000.0
  rope_scaling: tuple = ()  # Sorted (key, value) items of transformers' rope_scaling.
  embed_scale: bool = False  # Embeddings times sqrt(width) (Gemma).
  param_dtype: str = "float32"

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def head_width(self) -> int:
    return self.head_dim or self.width // self.num_heads

  def setup(self):
    if self.positions not in ("learned", "rotary"):
      raise ValueError(f"model.positions must be learned or rotary, got '{self.positions}'")
    for key in ("dtype", "param_dtype"):
      if getattr(self, key) not in DTYPES:
        raise ValueError(f"model.{key} must be one of {sorted(DTYPES)}, got "
                         f"'{getattr(self, key)}'")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"model.num_heads={self.num_heads} is not a multiple of "
                       f"model.num_kv_heads={self.num_kv_heads}")
    if not self.head_dim and self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads={self.num_heads}")
    if self.positions == "rotary" and self.head_width % 2:
      raise ValueError(f"rotary positions need an even head width, got {self.head_width}")
    dtype, param_dtype = DTYPES[self.dtype], DTYPES[self.param_dtype]
    init = nn.initializers.normal(0.02)
    self.embed = nn.Embed(self.vocab_size, self.width, embedding_init=init, dtype=dtype,
                          param_dtype=param_dtype)
    if self.positions == "learned":
      self.pos_embed = nn.Embed(self.max_len, self.width, embedding_init=init, dtype=dtype,
                                param_dtype=param_dtype)
    out_init = nn.initializers.normal(0.02 / math.sqrt(2 * self.num_layers))
    block = nn.remat(Block, static_argnums=(4,)) if self.remat else Block
    self.blocks = [block(self.num_heads, self.norm, self.norm_eps, self.mlp,
                         self.positions == "rotary", self.use_bias, self.dropout, dtype,
                         out_init, self.kv_heads, self.head_width, self.mlp_hidden,
                         self.qkv_bias, self.qk_norm, float(self.rope_theta),
                         tuple(self.rope_scaling), param_dtype, name=f"block{i}")
                   for i in range(self.num_layers)]
    self.drop = nn.Dropout(self.dropout)
    self.final_norm = _norm(self.norm, self.norm_eps, dtype, "final_norm", param_dtype)
    if not self.tie_embeddings:
      self.head = nn.Dense(self.vocab_size, use_bias=False, kernel_init=init, dtype=dtype,
                           param_dtype=param_dtype)

  def __call__(self, tokens, positions=None, cache=None, deterministic: bool = True):
    """tokens [B, S] -> (float32 logits [B, S, vocab], new cache or None).

    `positions` ([S], default 0..S-1) are the tokens' absolute positions; with a cache
    they must be contiguous and name the cache slots to write.
    """
    if positions is None:
      positions = jnp.arange(tokens.shape[1])
    x = self.embed(tokens)
    if self.embed_scale:  # In the parameters' dtype, as transformers' Gemma.
      x = x * jnp.asarray(self.width ** 0.5, DTYPES[self.param_dtype]).astype(x.dtype)
    if self.positions == "learned":
      x = x + self.pos_embed(positions)[None]
    x = self.drop(x, deterministic=deterministic)
    new_cache = []
    for i, blk in enumerate(self.blocks):
      x, c = blk(x, positions, None if cache is None else cache[i], deterministic)
      new_cache.append(c)
    x = self.final_norm(x)
    logits = self.embed.attend(x) if self.tie_embeddings else self.head(x)
    return logits.astype(jnp.float32), (None if cache is None else new_cache)

  def init_cache(self, batch: int):
    """Keys and values of every layer: [batch * kv_heads, max_len, head_dim] each."""
    return init_cache(batch, self.max_len, self.num_layers, self.kv_heads, self.head_width,
                      DTYPES[self.dtype])

  def cache_bytes(self, batch: int) -> int:
    """The size of `init_cache(batch)` in bytes."""
    return (2 * self.num_layers * batch * self.kv_heads * self.max_len * self.head_width
            * jnp.dtype(DTYPES[self.dtype]).itemsize)


def rope_scaling_of(m) -> tuple:
  """`model.rope_scaling` (a ConfigDict of transformers' names, or absent) as sorted items."""
  rs = m.get("rope_scaling", None)
  if not rs:
    return ()
  d = dict(rs.to_dict() if hasattr(rs, "to_dict") else rs)
  kind = d.get("rope_type", "default")
  if kind not in ROPE_TYPES:
    raise ValueError(f"model.rope_scaling.rope_type must be one of {', '.join(ROPE_TYPES)}, "
                     f"got '{kind}'")
  missing = [k for k in ROPE_KEYS[kind] if k not in d]
  if missing:
    raise ValueError(f"model.rope_scaling of type {kind} needs {', '.join(missing)}")
  if kind == "default":
    return ()
  return tuple(sorted((k, d[k]) for k in ("rope_type", *ROPE_KEYS[kind])))


def make_model(config, vocab_size: int, max_len: int) -> GPT:
  m = config.model
  return GPT(vocab_size=vocab_size, max_len=max_len, num_layers=m.num_layers,
             num_heads=m.num_heads, width=m.width, norm=m.norm,
             norm_eps=float(m.norm_eps), mlp=m.mlp,
             positions=m.positions, tie_embeddings=m.tie_embeddings, use_bias=m.use_bias,
             dropout=m.dropout, dtype=m.dtype, remat=m.remat,
             num_kv_heads=int(m.num_kv_heads), head_dim=int(m.head_dim),
             mlp_hidden=int(m.mlp_hidden), qkv_bias=bool(m.qkv_bias), qk_norm=bool(m.qk_norm),
             rope_theta=float(m.rope_theta), rope_scaling=rope_scaling_of(m),
             embed_scale=bool(m.embed_scale), param_dtype=m.param_dtype)


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
