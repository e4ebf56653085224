"""diffusers' UNet2DModel (the DDPM / google/ddpm-* layout) as a Flax module, layer for layer.

`UNet2D` computes what diffusers' `UNet2DModel` computes for the configurations
`gen.diffusion.diffusers.importer` imports, with parameters named as diffusers names its tensors, so the
mapping reads one to one: `down_blocks.1.resnets.0.conv1.weight` is
`params["down_blocks_1_resnets_0"]["conv1"]["kernel"]` and `time_embedding.linear_1.bias` is
`params["time_embedding_linear_1"]["bias"]` (the dots of a module's path become `_`;
`torch_name` maps back; convolutions [O, I, kh, kw] become [kh, kw, I, O], linear layers
[O, I] become [I, O], GroupNorm weights are `scale`). It is `model.arch = "unet2d"`, with the diffusers config
fields in `model.unet2d`.

The layout (diffusers' names):
- time: `Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)`, the sinusoidal code
  of the timestep at frequencies exp(-ln(10000) k / (half - freq_shift)), [sin | cos]
  ([cos | sin] with flip_sin_to_cos), then `time_embedding` linear_1, SiLU, linear_2 to
  4 * block_out_channels[0];
- `conv_in` 3x3; per level a `DownBlock2D` or `AttnDownBlock2D`: layers_per_block
  `ResnetBlock2D`s (each followed by attention in the Attn kind), then a stride-2 3x3
  `downsamplers_0` (padding 1 on each side, or with downsample_padding 0 one zero row and
  column after the input) except at the last level; every block output is a skip;
- `mid_block`: resnet, attention, resnet, each divided by mid_block_scale_factor;
- per level upward an `UpBlock2D` or `AttnUpBlock2D` of layers_per_block + 1 resnets, each
  fed concat(h, skip), then nearest 2x upsampling and a 3x3 conv except at the last level;
- `conv_norm_out` GroupNorm, SiLU, `conv_out` 3x3.
`ResnetBlock2D` ("default" time conditioning): GroupNorm, SiLU, conv1, + time_emb_proj(SiLU(
temb)), GroupNorm, SiLU, dropout, conv2, plus the input (through a 1x1 conv_shortcut when the
channels change). Attention: GroupNorm, to_q / to_k / to_v, channels // attention_head_dim
heads (one head when attention_head_dim is 0, diffusers' None), softmax(q k^T / sqrt(head
dim)), to_out_0, plus the input. Every GroupNorm has norm_num_groups groups and epsilon
norm_eps (1e-5 in diffusers; flax's default is 1e-6).

The network is conditioned on the timestep t = 1000 * cond (the discrete process's cond is
t / 1000); a value within float32 rounding of an integer is taken as that integer, so
diffusers' integer timesteps are embedded exactly.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gen.nn import attention
from gen.nn.conv import UpsampleConv
from gen.nn.norm import GroupNorm

TIME_SCALE = 1000.0  # As gen.diffusion.models.TIME_SCALE.
DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # Type -> has attention.
UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
PAD = 1  # The 3x3 convolutions' padding on each side.


def timestep_embedding(t, dim: int, flip_sin_to_cos: bool, freq_shift: float):
  """diffusers' get_timestep_embedding: [B] -> [B, dim], float32."""
  half = dim // 2
  exponent = np.float32(-math.log(10000.0)) * np.arange(half, dtype=np.float32)
  exponent = exponent / np.float32(half - freq_shift)
  args = jnp.asarray(t, jnp.float32)[:, None] * jnp.exp(jnp.asarray(exponent))[None]
  sin, cos = jnp.sin(args), jnp.cos(args)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def timestep_of(cond):
  """1000 * cond, snapped to the nearest integer when within float32 rounding of it."""
  t = TIME_SCALE * jnp.asarray(cond, jnp.float32)
  r = jnp.round(t)
  close = jnp.abs(t - r) <= 4 * np.finfo(np.float32).eps * jnp.maximum(jnp.abs(r), 1.0)
  return jnp.where(close, r, t)


_OUTER = ((re.compile(r"^(down_blocks|up_blocks)_(\d+)_(resnets|attentions)_(\d+)$"), r"\1.\2.\3.\4"),
          (re.compile(r"^(down_blocks|up_blocks)_(\d+)_(downsamplers|upsamplers)_(\d+)_conv$"),
           r"\1.\2.\3.\4.conv"),
          (re.compile(r"^mid_block_(resnets|attentions)_(\d+)$"), r"mid_block.\1.\2"),
          (re.compile(r"^time_embedding_(linear_\d)$"), r"time_embedding.\1"))
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def torch_name(path: tuple[str, ...]) -> str:
  """diffusers' name of the tensor at a params path, e.g. ("mid_block_attentions_0", "to_out_0",
  "kernel") -> "mid_block.attentions.0.to_out.0.weight"."""
  *modules, leaf = path
  outer = modules[0]
  for pattern, repl in _OUTER:
    outer = pattern.sub(repl, outer)
  inner = [m.replace("to_out_0", "to_out.0") for m in modules[1:]]
  return ".".join([outer, *inner, _LEAVES[leaf]])


def torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """A params leaf's shape as torch stores it: HWIO -> OIHW, [in, out] -> [out, in]."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape))


def from_torch(x: np.ndarray) -> np.ndarray:
  """A torch tensor as the params leaf: OIHW -> HWIO, [out, in] -> [in, out]."""
  if x.ndim == 4:
    return np.ascontiguousarray(x.transpose(2, 3, 1, 0))
  return np.ascontiguousarray(x.T) if x.ndim == 2 else x


def _conv(features, kernel, dtype, name, strides=1, padding=PAD):
  pad = ((padding, padding),) * 2 if isinstance(padding, int) else padding
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=pad if kernel > 1 else "VALID", dtype=dtype, name=name)


class ResnetBlock2D(nn.Module):
  """diffusers' ResnetBlock2D with time_embedding_norm "default"."""

  features: int
  groups: int
  eps: float
  dropout: float
  output_scale_factor: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb, train: bool):
    dt = self.dtype
    h = nn.silu(GroupNorm(self.groups, self.eps, name="norm1")(x))
    h = _conv(self.features, 3, dt, "conv1")(h)
    h = h + nn.Dense(self.features, dtype=dt, name="time_emb_proj")(nn.silu(temb))[:, None, None]
    h = nn.silu(GroupNorm(self.groups, self.eps, name="norm2")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = _conv(self.features, 3, dt, "conv2")(h)
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, dt, "conv_shortcut")(x)
    return (x + h) / self.output_scale_factor


class Attention(nn.Module):
  """diffusers' Attention as UNet2DModel's blocks build it (residual, biases, GroupNorm
  unless groups is 0)."""

  heads: int
  groups: int
  eps: float
  rescale_output_factor: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    dt = self.dtype
    y = GroupNorm(self.groups, self.eps, name="group_norm")(x) if self.groups else x
    y = y.reshape(b, h * w, c)
    hd = c // self.heads

    def proj(name):
      return nn.Dense(c, dtype=dt, name=name)(y).reshape(b, h * w, self.heads, hd)

    out = attention.dot_product_attention(proj("to_q"), proj("to_k"), proj("to_v"))
    out = nn.Dense(c, dtype=dt, name="to_out_0")(out.reshape(b, h * w, c))
    return (x + out.reshape(b, h, w, c)) / self.rescale_output_factor


class UNet2D(nn.Module):
  """diffusers' UNet2DModel, unconditional, "positional" time embedding (see the module
  docstring). `down_attention` / `up_attention`: per block, whether it is the Attn kind."""

  out_channels: int
  block_out_channels: tuple[int, ...]
  down_attention: tuple[bool, ...]
  up_attention: tuple[bool, ...]
  layers_per_block: int = 2
  attention_head_dim: int = 8  # 0: one head (diffusers' None).
  norm_num_groups: int = 32
  attn_norm_num_groups: int = 0  # The mid block's attention GroupNorm; 0: norm_num_groups.
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def _heads(self, c: int) -> int:
    return c // self.attention_head_dim if self.attention_head_dim else 1

  def _res(self, c, name, scale=1.0):
    return ResnetBlock2D(c, self.norm_num_groups, self.norm_eps, self.dropout, scale,
                         self.dtype, name=name)

  def _attn(self, c, name, groups=None, scale=1.0):
    groups = self.norm_num_groups if groups is None else groups
    return Attention(self._heads(c), groups, self.norm_eps, scale, self.dtype, name=name)

  @nn.compact
  def __call__(self, x, cond, labels=None, train: bool = False):
    del labels  # Unconditional.
    dt = self.dtype
    boc = tuple(self.block_out_channels)
    levels = len(boc)
    t = jnp.broadcast_to(timestep_of(cond), x.shape[:1])
    emb = timestep_embedding(t, boc[0], self.flip_sin_to_cos, self.freq_shift)
    emb = nn.Dense(4 * boc[0], dtype=dt, name="time_embedding_linear_1")(emb.astype(dt))
    emb = nn.Dense(4 * boc[0], dtype=dt, name="time_embedding_linear_2")(nn.silu(emb))

    h = _conv(boc[0], 3, dt, "conv_in")(x.astype(dt))
    skips = [h]
    down_pad = PAD if self.downsample_padding else ((0, 1), (0, 1))
    for i, c in enumerate(boc):
      block = f"down_blocks_{i}"
      for j in range(self.layers_per_block):
        h = self._res(c, f"{block}_resnets_{j}")(h, emb, train)
        if self.down_attention[i]:
          h = self._attn(c, f"{block}_attentions_{j}")(h)
        skips.append(h)
      if i < levels - 1:
        h = _conv(c, 3, dt, f"{block}_downsamplers_0_conv", strides=2, padding=down_pad)(h)
        skips.append(h)

    s = self.mid_block_scale_factor
    mid_groups = self.attn_norm_num_groups or self.norm_num_groups
    h = self._res(boc[-1], "mid_block_resnets_0", s)(h, emb, train)
    h = self._attn(boc[-1], "mid_block_attentions_0", mid_groups, s)(h)
    h = self._res(boc[-1], "mid_block_resnets_1", s)(h, emb, train)

    for i, c in enumerate(reversed(boc)):
      block = f"up_blocks_{i}"
      for j in range(self.layers_per_block + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = self._res(c, f"{block}_resnets_{j}")(h, emb, train)
        if self.up_attention[i]:
          h = self._attn(c, f"{block}_attentions_{j}")(h)
      if i < levels - 1:
        h = UpsampleConv(c, name=f"{block}_upsamplers_0_conv")(h)

    h = nn.silu(GroupNorm(self.norm_num_groups, self.norm_eps, name="conv_norm_out")(h))
    return _conv(self.out_channels, 3, dt, "conv_out")(h).astype(jnp.float32)
