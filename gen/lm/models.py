"""A decoder-only transformer (GPT) with an explicit key/value cache.

Options (all from `config.model`): pre-LayerNorm or RMSNorm (epsilon `norm_eps`: GPT-2's
1e-5, or flax's 1e-6 that the configs measured before it existed keep), learned or rotary
positions, GELU (tanh approximation, GPT-2's `gelu_new`) or SwiGLU MLP, tied input/output embeddings, dropout, bf16 compute with fp32
parameters, and rematerialized blocks. Initialization follows GPT-2 / nanoGPT: N(0, 0.02)
weights, residual output projections scaled by 1/sqrt(2 * num_layers).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from gen.nn.attention import CausalSelfAttention, init_cache

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# The epsilon of a config (or a saved run's config.json) that has no `model.norm_eps`: flax's
# default, what every model used before the key existed.
OLD_NORM_EPS = 1e-6


def _norm(kind: str, eps: float, dtype, name: str):
  if kind == "layernorm":
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name)
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=eps, dtype=dtype, name=name)
  raise ValueError(f"model.norm must be layernorm or rmsnorm, got '{kind}'")


class MLP(nn.Module):
  kind: str  # gelu | swiglu
  use_bias: bool
  dropout: float
  dtype: jnp.dtype
  out_init: nn.initializers.Initializer

  @nn.compact
  def __call__(self, x, deterministic: bool):
    width = x.shape[-1]
    init = nn.initializers.normal(0.02)
    if self.kind == "gelu":  # The tanh approximation (GPT-2's gelu_new).
      h = nn.gelu(nn.Dense(4 * width, use_bias=self.use_bias, dtype=self.dtype,
                           kernel_init=init, name="fc")(x))
    elif self.kind == "swiglu":  # Hidden width 8/3 * width (LLaMA), rounded up to 64.
      hidden = 64 * math.ceil(8 * width / 3 / 64)
      gate_up = nn.Dense(2 * hidden, use_bias=self.use_bias, dtype=self.dtype,
                         kernel_init=init, name="fc")(x)
      gate, up = jnp.split(gate_up, 2, axis=-1)
      h = nn.silu(gate) * up
    else:
      raise ValueError(f"model.mlp must be gelu or swiglu, got '{self.kind}'")
    y = nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.out_init,
                 name="proj")(h)
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

  @nn.compact
  def __call__(self, x, positions, cache, deterministic: bool):
    h, cache = CausalSelfAttention(
        self.num_heads, self.use_rotary, self.use_bias, self.dropout, self.dtype,
        self.out_init, name="attn")(_norm(self.norm, self.norm_eps, self.dtype, "norm1")(x),
                                     positions, cache, deterministic)
    x = x + h
    x = x + MLP(self.mlp, self.use_bias, self.dropout, self.dtype, self.out_init, name="mlp")(
        _norm(self.norm, self.norm_eps, self.dtype, "norm2")(x), deterministic)
    return x, cache


class GPT(nn.Module):
  vocab_size: int
  max_len: int  # Context length: learned position table size and cache length.
  num_layers: int = 4
  num_heads: int = 4
  width: int = 128
  norm: str = "layernorm"  # layernorm | rmsnorm
  norm_eps: float = 1e-5  # GPT-2's LayerNorm epsilon.
  mlp: str = "gelu"  # gelu | swiglu
  positions: str = "learned"  # learned | rotary
  tie_embeddings: bool = True
  use_bias: bool = True
  dropout: float = 0.0
  dtype: str = "float32"  # Compute dtype; parameters stay float32.
  remat: bool = False  # Recompute each block's activations in the backward pass.

  def setup(self):
    if self.positions not in ("learned", "rotary"):
      raise ValueError(f"model.positions must be learned or rotary, got '{self.positions}'")
    if self.dtype not in DTYPES:
      raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got '{self.dtype}'")
    dtype = DTYPES[self.dtype]
    init = nn.initializers.normal(0.02)
    self.embed = nn.Embed(self.vocab_size, self.width, embedding_init=init, dtype=dtype)
    if self.positions == "learned":
      self.pos_embed = nn.Embed(self.max_len, self.width, embedding_init=init, dtype=dtype)
    out_init = nn.initializers.normal(0.02 / math.sqrt(2 * self.num_layers))
    block = nn.remat(Block, static_argnums=(4,)) if self.remat else Block
    self.blocks = [block(self.num_heads, self.norm, self.norm_eps, self.mlp,
                         self.positions == "rotary", self.use_bias, self.dropout, dtype,
                         out_init, name=f"block{i}")
                   for i in range(self.num_layers)]
    self.drop = nn.Dropout(self.dropout)
    self.final_norm = _norm(self.norm, self.norm_eps, dtype, "final_norm")
    if not self.tie_embeddings:
      self.head = nn.Dense(self.vocab_size, use_bias=False, kernel_init=init, dtype=dtype)

  def __call__(self, tokens, positions=None, cache=None, deterministic: bool = True):
    """tokens [B, S] -> (float32 logits [B, S, vocab], new cache or None).

    `positions` ([S], default 0..S-1) are the tokens' absolute positions; with a cache
    they must be contiguous and name the cache slots to write.
    """
    if positions is None:
      positions = jnp.arange(tokens.shape[1])
    x = self.embed(tokens)
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
    dtype = DTYPES[self.dtype]
    return init_cache(batch, self.max_len, self.num_layers, self.num_heads,
                      self.width // self.num_heads, dtype)


def make_model(config, vocab_size: int, max_len: int) -> GPT:
  m = config.model
  return GPT(vocab_size=vocab_size, max_len=max_len, num_layers=m.num_layers,
             num_heads=m.num_heads, width=m.width, norm=m.norm,
             norm_eps=float(m.get("norm_eps", OLD_NORM_EPS)), mlp=m.mlp,
             positions=m.positions, tie_embeddings=m.tie_embeddings, use_bias=m.use_bias,
             dropout=m.dropout, dtype=m.dtype, remat=m.remat)


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
