"""diffusers' UNet2DConditionModel in the Stable Diffusion 1.x / 2.x layouts, as a Flax module.

The layout (diffusers' names), for the configurations `read_config` accepts:
- time: `Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)` (as
  `gen.diffusion.diffusers.unet2d.timestep_embedding`), then `time_embedding` linear_1, SiLU, linear_2 to
  4 * block_out_channels[0];
- `conv_in` 3x3; per level a `CrossAttnDownBlock2D` (layers_per_block resnets, each followed
  by a `Transformer2DModel`) or a `DownBlock2D` (resnets only), then a stride-2 3x3
  `downsamplers_0` except at the last level; every block output is a skip;
- `mid_block` (`UNetMidBlock2DCrossAttn`): resnet, then per transformer a transformer and a
  resnet (the resnets divided by mid_block_scale_factor);
- per level upward a `CrossAttnUpBlock2D` or `UpBlock2D` of layers_per_block + 1 resnets fed
  concat(h, skip), then nearest 2x upsampling and a 3x3 conv except at the last level;
- `conv_norm_out` GroupNorm, SiLU, `conv_out` 3x3.
The resnets are `gen.diffusion.diffusers.unet2d.ResnetBlock2D` (GroupNorm norm_num_groups / norm_eps).
`Transformer2DModel`: GroupNorm (norm_num_groups, epsilon 1e-6), proj_in (a 1x1 conv, or
with use_linear_projection a linear layer after flattening), transformer_layers_per_block
`BasicTransformerBlock`s, proj_out the same way, plus the input. `BasicTransformerBlock`:
LayerNorm (1e-5) and self-attention `attn1`, LayerNorm and cross-attention `attn2` (keys and
values from the encoder states, of width cross_attention_dim), LayerNorm and a GEGLU
feed-forward (`ff.net.0.proj` to 2 x 4 x width, the first half times gelu(the second),
`ff.net.2` back), each added to its input. Attention projections have no bias but to_out.0;
softmax(q k^T / sqrt(head dim)) through `gen.nn.attention.dot_product_attention`.

Heads: diffusers reads the config's `attention_head_dim` as the number of heads of each block
(its "naming issue": `num_attention_heads = num_attention_heads or attention_head_dim`), an
integer for every block (Stable Diffusion 1.x: 8) or one per down block (2.x: [5, 10, 20, 20],
64-wide heads at 320 / 640 / 1280 channels); the up blocks take the list reversed and the mid
block its last entry. Each head is channels // heads wide. `upcast_attention` (2.x) computes
the attention in float32, which a float32 model does anyway.

Parameters are named after diffusers' tensors (`gen.diffusion.diffusers.tensors`):
`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight` is
`params["down_blocks_0_attentions_1"]["transformer_blocks_0"]["attn2"]["to_k"]["kernel"]`.
`load_unet(folder)` reads a diffusers unet/ folder; any config field outside the Stable
Diffusion 1.x / 2.x layouts is refused by name.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen.core.interop import InputError, read_json
from gen.diffusion.diffusers import tensors as tensors_lib
from gen.diffusion.diffusers.unet2d import ResnetBlock2D, timestep_embedding
from gen.nn import attention
from gen.nn.conv import UpsampleConv
from gen.nn.embeddings import sincos_2d
from gen.nn.norm import GroupNorm

CONFIG = "config.json"
SAFETENSORS = "diffusion_pytorch_model.safetensors"
TORCH_BIN = "diffusion_pytorch_model.bin"
MODEL_CLASS = "UNet2DConditionModel"
DOWN_BLOCKS = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}  # Type -> has attention.
UP_BLOCKS = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
TRANSFORMER_NORM_EPS = 1e-6  # Transformer2DModel's GroupNorm.
BLOCK_NORM_EPS = 1e-5  # BasicTransformerBlock's LayerNorms.

# config.json fields that must hold the value gen's module has (diffusers' defaults).
FIXED = {
    "center_input_sample": False, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": (False, [False]), "mid_block_only_cross_attention": (None, False),
    "dual_cross_attention": False, "class_embed_type": None, "num_class_embeds": None,
    "addition_embed_type": None, "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None, "class_embeddings_concat": False,
    "encoder_hid_dim": None, "encoder_hid_dim_type": None, "num_attention_heads": None,
    "resnet_time_scale_shift": "default", "resnet_skip_time_act": False,
    "resnet_out_scale_factor": (1, 1.0), "time_embedding_type": "positional",
    "time_embedding_dim": None, "time_embedding_act_fn": None, "timestep_post_act": None,
    "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "attention_type": "default", "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None, "act_fn": ("silu", "swish"),
}
READ = ("sample_size", "in_channels", "out_channels", "flip_sin_to_cos", "freq_shift",
        "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
        "downsample_padding", "mid_block_scale_factor", "dropout", "norm_num_groups",
        "norm_eps", "cross_attention_dim", "transformer_layers_per_block",
        "attention_head_dim", "use_linear_projection", "upcast_attention")
# Read by diffusers only together with fields refused above.
IGNORED = ("addition_embed_type_num_heads",)


class CrossAttention(nn.Module):
  """diffusers' Attention as BasicTransformerBlock builds it: to_q / to_k / to_v without
  bias, to_out.0 with; keys and values from `context` (self-attention when None)."""

  heads: int
  head_dim: int
  upcast: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None):
    context = x if context is None else context
    inner = self.heads * self.head_dim

    def proj(name, y):
      out = nn.Dense(inner, use_bias=False, dtype=self.dtype, name=name)(y)
      out = out.reshape(*y.shape[:2], self.heads, self.head_dim)
      return out.astype(jnp.float32) if self.upcast else out

    out = attention.dot_product_attention(proj("to_q", x), proj("to_k", context),
                                       proj("to_v", context))
    out = out.astype(self.dtype).reshape(*x.shape[:2], inner)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="to_out_0")(out)


class GEGLU(nn.Module):
  dim_out: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(2 * self.dim_out, dtype=self.dtype, name="proj")(x)
    h, gate = jnp.split(h, 2, axis=-1)
    return h * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  mult: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = GEGLU(self.mult * x.shape[-1], self.dtype, name="net_0")(x)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="net_2")(h)


class BasicTransformerBlock(nn.Module):
  heads: int
  head_dim: int
  upcast: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    def norm(name):
      return nn.LayerNorm(epsilon=BLOCK_NORM_EPS, use_fast_variance=False, dtype=self.dtype,
                          name=name)

    def attn(name):
      return CrossAttention(self.heads, self.head_dim, self.upcast, self.dtype, name=name)

    x = x + attn("attn1")(norm("norm1")(x))
    x = x + attn("attn2")(norm("norm2")(x), context)
    return x + FeedForward(dtype=self.dtype, name="ff")(norm("norm3")(x))


class Transformer2D(nn.Module):
  """diffusers' Transformer2DModel on continuous input (see the module docstring)."""

  heads: int
  groups: int
  num_layers: int = 1
  linear: bool = False
  upcast: bool = False
  positions: bool = False  # gen's addition: sine-cosine 2-D codes join the tokens.
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    b, h, w, c = x.shape
    dt = self.dtype
    y = GroupNorm(self.groups, TRANSFORMER_NORM_EPS, name="norm")(x)
    if self.linear:
      y = nn.Dense(c, dtype=dt, name="proj_in")(y.reshape(b, h * w, c))
    else:
      y = nn.Conv(c, (1, 1), dtype=dt, name="proj_in")(y).reshape(b, h * w, c)
    if self.positions:
      y = y + sincos_2d(h, w, c).astype(y.dtype)
    for i in range(self.num_layers):
      y = BasicTransformerBlock(self.heads, c // self.heads, self.upcast, dt,
                                name=f"transformer_blocks_{i}")(y, context)
    if self.linear:
      y = nn.Dense(c, dtype=dt, name="proj_out")(y).reshape(b, h, w, c)
    else:
      y = nn.Conv(c, (1, 1), dtype=dt, name="proj_out")(y.reshape(b, h, w, c))
    return y + x


class TimestepEmbedding(nn.Module):
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, emb):
    emb = nn.Dense(self.features, dtype=self.dtype, name="linear_1")(emb)
    return nn.Dense(self.features, dtype=self.dtype, name="linear_2")(nn.silu(emb))


def _conv(features, dtype, name, strides=1, padding=((1, 1), (1, 1))):
  return nn.Conv(features, (3, 3), strides=(strides, strides), padding=padding, dtype=dtype,
                 name=name)


class UNet2DCondition(nn.Module):
  """diffusers' UNet2DConditionModel (see the module docstring). Per down block (in
  down-block order): `down_attention` (CrossAttn kind or not), `heads` (the config's
  attention_head_dim entries), `layers` (layers_per_block), `transformer_layers`.
  `up_attention`: per up block. Call with x [B, H, W, in_channels], diffusers' timesteps t
  (a scalar or [B]; float, not scaled) and the encoder states [B, S, cross_attention_dim];
  returns [B, H, W, out_channels], float32."""

  out_channels: int
  block_out_channels: tuple[int, ...]
  down_attention: tuple[bool, ...]
  up_attention: tuple[bool, ...]
  heads: tuple[int, ...]
  layers: tuple[int, ...]
  transformer_layers: tuple[int, ...]
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  use_linear_projection: bool = False
  upcast_attention: bool = False
  dropout: float = 0.0
  positions: bool = False  # Not diffusers': 2-D position codes in every Transformer2D.
  dtype: jnp.dtype = jnp.float32

  def _res(self, c, name, scale=1.0):
    return ResnetBlock2D(c, self.norm_num_groups, self.norm_eps, self.dropout, scale,
                         self.dtype, name=name)

  def _attn(self, heads, layers, name):
    return Transformer2D(heads, self.norm_num_groups, layers, self.use_linear_projection,
                         self.upcast_attention, self.positions, self.dtype, name=name)

  @nn.compact
  def __call__(self, x, t, context, train: bool = False):
    dt = self.dtype
    boc = tuple(self.block_out_channels)
    levels = len(boc)
    context = jnp.asarray(context).astype(dt)
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    emb = timestep_embedding(t, boc[0], self.flip_sin_to_cos, self.freq_shift)
    emb = TimestepEmbedding(4 * boc[0], dt, name="time_embedding")(emb.astype(dt))

    h = _conv(boc[0], dt, "conv_in")(x.astype(dt))
    skips = [h]
    pad = ((1, 1), (1, 1)) if self.downsample_padding else ((0, 1), (0, 1))
    for i, c in enumerate(boc):
      block = f"down_blocks_{i}"
      for j in range(self.layers[i]):
        h = self._res(c, f"{block}_resnets_{j}")(h, emb, train)
        if self.down_attention[i]:
          h = self._attn(self.heads[i], self.transformer_layers[i],
                         f"{block}_attentions_{j}")(h, context)
        skips.append(h)
      if i < levels - 1:
        h = _conv(c, dt, f"{block}_downsamplers_0_conv", 2, pad)(h)
        skips.append(h)

    s = self.mid_block_scale_factor
    h = self._res(boc[-1], "mid_block_resnets_0", s)(h, emb, train)
    h = self._attn(self.heads[-1], self.transformer_layers[-1], "mid_block_attentions_0")(
        h, context)
    h = self._res(boc[-1], "mid_block_resnets_1", s)(h, emb, train)

    heads_up = tuple(reversed(self.heads))
    layers_up = tuple(reversed(self.layers))
    transformer_up = tuple(reversed(self.transformer_layers))
    for i, c in enumerate(reversed(boc)):
      block = f"up_blocks_{i}"
      for j in range(layers_up[i] + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = self._res(c, f"{block}_resnets_{j}")(h, emb, train)
        if self.up_attention[i]:
          h = self._attn(heads_up[i], transformer_up[i], f"{block}_attentions_{j}")(h, context)
      if i < levels - 1:
        h = UpsampleConv(c, name=f"{block}_upsamplers_0_conv")(h)

    h = nn.silu(GroupNorm(self.norm_num_groups, self.norm_eps, name="conv_norm_out")(h))
    return _conv(self.out_channels, dt, "conv_out")(h).astype(jnp.float32)


def from_config(u, out_channels: int | None = None, dropout: float = 0.0,
                dtype=jnp.float32, positions: bool = False) -> UNet2DCondition:
  """The module of a config section `u` holding the config.json fields (`model.text_to_image.
  unet`); `out_channels` overrides the section's. `positions` (not a diffusers field) adds
  fixed sine-cosine 2-D position codes to the tokens of every Transformer2D after proj_in."""
  return UNet2DCondition(
      u.out_channels if out_channels is None else out_channels, tuple(u.block_out_channels),
      tuple(DOWN_BLOCKS[b] for b in u.down_block_types),
      tuple(UP_BLOCKS[b] for b in u.up_block_types), tuple(u.attention_head_dim),
      tuple(u.layers_per_block), tuple(u.transformer_layers_per_block), u.norm_num_groups,
      u.norm_eps, u.flip_sin_to_cos, u.freq_shift, u.downsample_padding,
      u.mid_block_scale_factor, u.use_linear_projection, u.upcast_attention, dropout,
      positions, dtype=dtype)


# ----------------------------------------------------------------------------- loading


def read_config(folder: str) -> dict:
  """The module fields (`module`), latent shape (`shape`: sample_size x sample_size x
  in_channels) and `cross_attention_dim` of `folder/config.json`, each field checked; a
  one-line InputError names any field outside the Stable Diffusion 1.x / 2.x layouts."""
  path = os.path.join(folder, CONFIG)
  d = read_json(path)
  f = tensors_lib.Fields(path, d)
  if d.get("_class_name") != MODEL_CLASS:
    f.refuse("_class_name", f"this reads {MODEL_CLASS}")
  f.known(FIXED, READ, IGNORED, "gen's UNet2DCondition")
  boc = f.int_list("block_out_channels", default=[320, 640, 1280, 1280])
  n = len(boc)
  kinds = {}
  for field, known, default in (
      ("down_block_types", DOWN_BLOCKS, ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]),
      ("up_block_types", UP_BLOCKS, ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)):
    types = d.get(field, default)
    if not isinstance(types, list) or len(types) != n:
      f.refuse(field, f"expected a list of {n} block types, one per block_out_channels")
    for t in types:
      if t not in known:
        raise InputError(f"{path}: {field} has {t!r}, not supported (gen's UNet2DCondition "
                         f"has {' and '.join(known)})")
    kinds[field] = tuple(known[t] for t in types)
  heads = f.per_block("attention_head_dim", n, 8)
  for c, k in zip(boc, heads):
    if c % k:
      f.refuse("attention_head_dim", f"diffusers reads it as heads per block; {k} heads do "
               f"not divide {c} channels")
  layers = f.per_block("layers_per_block", n, 2)
  transformer_layers = f.per_block("transformer_layers_per_block", n, 1)
  cross = f.per_block("cross_attention_dim", n, 1280)
  if len(set(cross)) != 1:
    f.refuse("cross_attention_dim", "gen's UNet2DCondition takes one encoder width")
  groups = f.positive_int("norm_num_groups", 32)
  if any(c % groups for c in boc):
    f.refuse("norm_num_groups", f"it must divide every block_out_channels {list(boc)}")
  size = d.get("sample_size", 64)
  size = [size, size] if type(size) is int else size
  if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int and s > 0
                                                              for s in size)):
    f.refuse("sample_size", "expected a positive integer or [height, width]")
  down = 2 ** (n - 1)
  if size[0] % down or size[1] % down:
    f.refuse("sample_size", f"it must be divisible by 2^(len(block_out_channels) - 1) = {down}")
  padding = d.get("downsample_padding", 1)
  if padding not in (0, 1) or isinstance(padding, bool):
    f.refuse("downsample_padding", "gen's UNet2DCondition pads by 0 or 1")
  shift = f.number("freq_shift", 0)
  if shift >= boc[0] // 2:
    f.refuse("freq_shift", "expected a number below block_out_channels[0] // 2")
  dropout = f.number("dropout", 0.0)
  if not 0 <= dropout < 1:
    f.refuse("dropout", "expected a number in [0, 1)")
  module = {"out_channels": f.positive_int("out_channels", 4), "block_out_channels": boc,
            "down_attention": kinds["down_block_types"],
            "up_attention": kinds["up_block_types"], "heads": heads, "layers": layers,
            "transformer_layers": transformer_layers, "norm_num_groups": groups,
            "norm_eps": f.positive("norm_eps", 1e-5),
            "flip_sin_to_cos": f.boolean("flip_sin_to_cos", True), "freq_shift": shift,
            "downsample_padding": int(padding),
            "mid_block_scale_factor": f.positive("mid_block_scale_factor", 1),
            "use_linear_projection": f.boolean("use_linear_projection", False),
            "upcast_attention": f.boolean("upcast_attention", False), "dropout": dropout}
  return {"module": module, "shape": (size[0], size[1], f.positive_int("in_channels", 4)),
          "cross_attention_dim": cross[0]}


def load_unet(folder: str, dtype=jnp.float32) -> tuple[UNet2DCondition, dict, dict]:
  """(module, params, info) of a diffusers UNet2DConditionModel folder (Stable Diffusion's
  unet/): config.json and diffusion_pytorch_model.safetensors (.bin with torch). `info`:
  `shape` (the latent's height, width, channels) and `cross_attention_dim`. Bad input is a
  one-line InputError naming the file and the field or tensor."""
  a = read_config(folder)
  model = UNet2DCondition(**a["module"], dtype=dtype)
  tensors, path = tensors_lib.read_weights(folder, SAFETENSORS, TORCH_BIN)
  down = 2 ** (len(model.block_out_channels) - 1)
  x = jnp.zeros((1, down, down, a["shape"][2]), jnp.float32)
  context = jnp.zeros((1, 1, a["cross_attention_dim"]), jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), x, 0.0, context)["params"]
  params = tensors_lib.to_params(tensors, path, abstract,
                                 "a UNet2DConditionModel of this config.json")
  return model, params, {"shape": a["shape"], "cross_attention_dim": a["cross_attention_dim"]}
