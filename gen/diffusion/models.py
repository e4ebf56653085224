"""Denoising networks, an ADM-style UNet and a DiT, `(x, cond, labels) -> raw output`, and
noise-conditional classifiers on their encoders (the UNet's way down, the DiT's blocks),
`(x, cond) -> logits`.

`cond` [B] is the process's conditioning scalar (O(1); see `objectives.Process.cond`),
embedded sinusoidally at 1000 * cond. `labels` [B] are class ids in [0, num_classes], the
last id meaning "no class" (the null label of classifier-free guidance); unconditional
networks (num_classes = 0) ignore them. A denoiser's output has the input's shape.

`dtype` is the compute dtype (float32 or bfloat16): convolutions, dense layers and attention
run in it, parameters stay float32 (Flax's `param_dtype`), GroupNorm and LayerNorm take
their statistics in float32, the time embedding's sines are computed in float32 before the
first dense layer, and every network returns float32, so losses and sampler states are
float32 whatever the compute dtype.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from gen.nn import attention
from gen.nn.conv import UpsampleConv
from gen.nn.embeddings import sincos_2d, sinusoidal
from gen.nn.norm import GroupNorm

TIME_SCALE = 1000.0
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.dtype: compute dtype.


def num_groups(channels: int, most: int) -> int:
  """The largest group count <= `most` that divides `channels`."""
  return max(g for g in range(1, min(most, channels) + 1) if channels % g == 0)


class Conditioning(nn.Module):
  """Time (and class) embedding: [B] cond, [B] labels -> [B, dim]."""

  dim: int
  num_classes: int
  freq_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, cond, labels):
    e = sinusoidal(TIME_SCALE * jnp.asarray(cond, jnp.float32), self.freq_dim)  # float32
    e = nn.Dense(self.dim, dtype=self.dtype)(nn.silu(nn.Dense(self.dim, dtype=self.dtype)(e)))
    if self.num_classes:  # One more row: the null label.
      e = e + nn.Embed(self.num_classes + 1, self.dim, dtype=self.dtype)(labels)
    return e


class ResBlock(nn.Module):
  """GroupNorm, SiLU, conv; scale-shift by the embedding; dropout, zero-init conv (ADM)."""

  features: int
  groups: int
  dropout: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    dt = self.dtype
    h = nn.silu(GroupNorm(num_groups(x.shape[-1], self.groups))(x))
    h = nn.Conv(self.features, (3, 3), dtype=dt)(h)
    scale, shift = jnp.split(nn.Dense(2 * self.features, dtype=dt)(nn.silu(emb)), 2, axis=-1)
    h = GroupNorm(num_groups(self.features, self.groups))(h)
    h = h * (1.0 + scale[:, None, None]) + shift[:, None, None]
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros, dtype=dt)(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=dt)(x)
    return x + h


class SelfAttention(nn.Module):
  """Multi-head self-attention over the H x W positions, with a residual connection."""

  heads: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    heads = math.gcd(self.heads, c)
    y = GroupNorm(num_groups(c, self.groups))(x).reshape(b, h * w, c)
    qkv = nn.DenseGeneral((3, heads, c // heads), dtype=self.dtype)(y)  # [B, L, 3, heads, hd]
    out = attention.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    out = nn.DenseGeneral(c, axis=(-2, -1), kernel_init=nn.initializers.zeros,
                          dtype=self.dtype)(out)
    return x + out.reshape(b, h, w, c)


class UNet(nn.Module):
  """ADM-style UNet (Ho et al. 2020; Dhariwal & Nichol 2021).

  One level per entry of `channel_mult` (channels = `channels` * mult), each with
  `num_res_blocks` residual blocks (+ self-attention at the resolutions listed in
  `attn_resolutions`), halving the resolution between levels; a middle of res-attn-res;
  the way up mirrors it with one more block per level, each fed the matching skip.
  """

  out_channels: int
  channels: int = 64
  channel_mult: tuple[int, ...] = (1, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: tuple[int, ...] = (16,)
  heads: int = 4
  dropout: float = 0.0
  groups: int = 32
  num_classes: int = 0
  dtype: jnp.dtype = jnp.float32  # Compute dtype; parameters and the output are float32.

  def res(self, features: int):
    return ResBlock(features, self.groups, self.dropout, self.dtype)

  def attn(self):
    return SelfAttention(self.heads, self.groups, self.dtype)

  def encode(self, x, emb, train: bool):
    """The way down and the middle: (features at the lowest resolution, skips)."""
    res, attn = self.res, self.attn
    h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(x)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        h = res(self.channels * mult)(h, emb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
        skips.append(h)
      if level < len(self.channel_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
        skips.append(h)
    h = res(h.shape[-1])(h, emb, train)
    h = attn()(h)
    return res(h.shape[-1])(h, emb, train), skips

  @nn.compact
  def __call__(self, x, cond, labels, train: bool = False):
    emb = Conditioning(4 * self.channels, self.num_classes, self.channels, self.dtype)(
        cond, labels)
    res, attn = self.res, self.attn
    h, skips = self.encode(x, emb, train)
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = res(self.channels * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
      if level > 0:
        h = UpsampleConv(h.shape[-1])(h)  # nearest 2x, then a 3x3 conv
    h = nn.silu(GroupNorm(num_groups(h.shape[-1], self.groups))(h))
    out = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros,
                  dtype=self.dtype)(h)
    return out.astype(jnp.float32)


class UNetClassifier(UNet):
  """A noise-conditional classifier `(x, cond) -> logits [B, out_channels]`.

  The UNet's way down and middle, then GroupNorm, SiLU, the mean over positions and a
  zero-initialized linear layer: ADM's classifier (Dhariwal & Nichol 2021) with mean
  pooling in place of attention pooling.
  """

  @nn.compact
  def __call__(self, x, cond, train: bool = False):
    emb = Conditioning(4 * self.channels, 0, self.channels, self.dtype)(cond, None)
    h, _ = self.encode(x, emb, train)
    h = nn.silu(GroupNorm(num_groups(h.shape[-1], self.groups))(h))
    pooled = h.astype(jnp.float32).mean(axis=(1, 2))
    return nn.Dense(self.out_channels, kernel_init=nn.initializers.zeros)(pooled)


class DiTBlock(nn.Module):
  """Pre-LN transformer block modulated by adaLN-Zero (Peebles & Xie 2023).

  The conditioning regresses a shift, scale and gate for each of the two sub-layers; the
  gates start at zero, so every block starts as the identity.
  """

  dim: int
  heads: int
  mlp_ratio: float
  dropout: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, c, train: bool, context=None):
    dt = self.dtype
    hd = self.dim // self.heads
    mod = nn.Dense(6 * self.dim, kernel_init=nn.initializers.zeros, dtype=dt)(nn.silu(c))
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod[:, None], 6, axis=-1)
    norm = lambda: nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6,  # noqa: E731
                                dtype=dt)
    y = norm()(x) * (1 + scale1) + shift1
    qkv = nn.DenseGeneral((3, self.heads, hd), dtype=dt)(y)
    y = attention.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    x = x + gate1 * nn.DenseGeneral(self.dim, axis=(-2, -1), dtype=dt)(y)
    if context is not None:  # PixArt-alpha's cross-attention: unmodulated, output zeroed.
      q = nn.DenseGeneral((self.heads, hd), dtype=dt, name="cross_q")(x)
      kv = nn.DenseGeneral((2, self.heads, hd), dtype=dt, name="cross_kv")(context.astype(dt))
      y = attention.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1])
      x = x + nn.DenseGeneral(self.dim, axis=(-2, -1), kernel_init=nn.initializers.zeros,
                              dtype=dt, name="cross_out")(y)
    y = norm()(x) * (1 + scale2) + shift2
    y = nn.gelu(nn.Dense(int(self.dim * self.mlp_ratio), dtype=dt)(y), approximate=True)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return x + gate2 * nn.Dense(self.dim, dtype=dt)(y)


class DiT(nn.Module):
  """Diffusion transformer: patchify, add positions, adaLN-Zero blocks, unpatchify.

  Given `context` (a text encoder's states [B, L, D]), every block also attends to it after
  its self-attention, as PixArt-alpha's blocks do (Chen et al. 2023): queries from the image
  tokens, keys and values from the text, no adaLN modulation, the output projection zeroed
  at init. Cross-attention rather than joint attention over text and image tokens keeps the
  image sequence's length and the block's cost independent of the prompt, and reuses the
  adaLN path for the time alone.

  Given `pooled` ([B, D], e.g. the mean of the text states), its projection joins the time
  embedding that every block's adaLN reads, as SD3, SDXL and Imagen add a pooled text
  embedding; the projection is zeroed at init.

  `positions`: "sincos", fixed 2-D sine-cosine codes as in DiT, or "learned", a parameter
  per token initialized near zero (configs/diffusion/dit_mnist.py compares the two).
  """

  out_channels: int
  patch: int = 2
  dim: int = 256
  depth: int = 6
  heads: int = 4
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  num_classes: int = 0
  positions: str = "sincos"
  dtype: jnp.dtype = jnp.float32  # Compute dtype; parameters and the output are float32.

  def tokens(self, x, c, train: bool, context=None):
    """Patchify, add positions, run the blocks (with cross-attention to `context` [B, L, D]
    when given): [B, patches, dim]."""
    b, h, w, _ = x.shape
    p = self.patch
    tokens = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype)(x)
    tokens = tokens.reshape(b, (h // p) * (w // p), self.dim)
    if self.positions == "learned":
      pos = self.param("pos", nn.initializers.normal(0.02), tokens.shape[1:], jnp.float32)
      tokens = tokens + pos.astype(tokens.dtype)
    elif self.positions == "sincos":
      tokens = tokens + sincos_2d(h // p, w // p, self.dim).astype(tokens.dtype)
    else:
      raise ValueError(f"DiT positions must be 'sincos' or 'learned', got '{self.positions}'")
    for _ in range(self.depth):
      tokens = DiTBlock(self.dim, self.heads, self.mlp_ratio, self.dropout, self.dtype)(
          tokens, c, train, context)
    return tokens

  @nn.compact
  def __call__(self, x, cond, labels, train: bool = False, context=None, pooled=None):
    b, h, w, _ = x.shape
    p = self.patch
    dt = self.dtype
    c = Conditioning(self.dim, self.num_classes, 256, dt)(cond, labels)
    if pooled is not None:  # A pooled text embedding [B, D] joins the time's (zeroed at init).
      c = c + nn.Dense(self.dim, kernel_init=nn.initializers.zeros, dtype=dt,
                       name="pooled")(pooled.astype(dt))
    tokens = self.tokens(x, c, train, context)
    shift, scale = jnp.split(nn.Dense(2 * self.dim, kernel_init=nn.initializers.zeros,
                                      dtype=dt)(nn.silu(c))[:, None], 2, -1)
    tokens = nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, dtype=dt)(tokens)
    tokens = tokens * (1 + scale) + shift
    out = nn.Dense(p * p * self.out_channels, kernel_init=nn.initializers.zeros,
                   dtype=dt)(tokens).astype(jnp.float32)
    out = out.reshape(b, h // p, w // p, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, h, w, self.out_channels)


class DiTClassifier(DiT):
  """A noise-conditional classifier `(x, cond) -> logits [B, out_channels]`: the DiT's
  blocks, LayerNorm, the mean over patches and a zero-initialized linear layer."""

  @nn.compact
  def __call__(self, x, cond, train: bool = False):
    c = Conditioning(self.dim, 0, 256, self.dtype)(cond, None)
    tokens = nn.LayerNorm()(self.tokens(x, c, train).astype(jnp.float32))
    return nn.Dense(self.out_channels, kernel_init=nn.initializers.zeros)(tokens.mean(axis=1))
