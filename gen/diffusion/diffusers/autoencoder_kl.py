"""diffusers' AutoencoderKL (Stable Diffusion's VAE) as a Flax module, layer for layer.

The layout (diffusers' names):
- `encoder`: `conv_in` 3x3; per level a `DownEncoderBlock2D` of layers_per_block
  `ResnetBlock2D`s (no time input) and, except at the last level, a stride-2 3x3 conv after one
  zero row and column (`downsamplers_0`, padding 0); `mid_block`: resnet, attention (one head,
  GroupNorm, residual; absent with mid_block_add_attention false), resnet; `conv_norm_out`,
  SiLU, `conv_out` to 2 * latent_channels (mean and log-variance);
- `quant_conv` 1x1 (use_quant_conv) on the moments; `post_quant_conv` 1x1
  (use_post_quant_conv) on a latent;
- `decoder`: `conv_in` 3x3 to block_out_channels[-1]; the same mid block; per level upward an
  `UpDecoderBlock2D` of layers_per_block + 1 resnets and, except at the last level, nearest 2x
  upsampling and a 3x3 conv; `conv_norm_out`, SiLU, `conv_out`.
Every GroupNorm has norm_num_groups groups and epsilon 1e-6. The resnet and attention layers
are `gen.diffusion.diffusers.unet2d`'s where they are the same (the attention; the resnets differ in
having no time input).

`encode(x)` returns the posterior's (mean, logvar), logvar clipped to [-30, 20] as diffusers'
DiagonalGaussianDistribution does; `decode(z)` the image. Stable Diffusion's latents are
(sample - shift_factor) * scaling_factor (`to_latents`), decoded as z / scaling_factor +
shift_factor (`from_latents`). Parameters are named after diffusers' tensors
(`gen.diffusion.diffusers.tensors`); `load_vae(folder)` reads a diffusers vae/ folder.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen.core.interop import InputError, read_json
from gen.diffusion.diffusers import tensors as tensors_lib
from gen.diffusion.diffusers.unet2d import Attention
from gen.nn.conv import UpsampleConv
from gen.nn.norm import GroupNorm

CONFIG = "config.json"
SAFETENSORS = "diffusion_pytorch_model.safetensors"
TORCH_BIN = "diffusion_pytorch_model.bin"
MODEL_CLASS = "AutoencoderKL"
EPS = 1e-6  # diffusers' Encoder / Decoder GroupNorm epsilon.
FIXED = {"act_fn": ("silu", "swish"), "latents_mean": None, "latents_std": None}
READ = ("in_channels", "out_channels", "down_block_types", "up_block_types",
        "block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
        "sample_size", "scaling_factor", "shift_factor", "use_quant_conv",
        "use_post_quant_conv", "mid_block_add_attention")
IGNORED = ("force_upcast",)  # A float16 setting; gen computes in the module's dtype.
LOGVAR_RANGE = (-30.0, 20.0)


def conv(features, kernel, dtype, name, strides=1, padding=None):
  pad = (kernel // 2,) * 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=(pad, pad) if isinstance(pad[0], int) else pad, dtype=dtype, name=name)


class Resnet(nn.Module):
  """diffusers' ResnetBlock2D with temb_channels None: GroupNorm, SiLU, conv1, GroupNorm,
  SiLU, conv2, plus the input (through a 1x1 conv_shortcut when the channels change)."""

  features: int
  groups: int
  eps: float = EPS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.silu(GroupNorm(self.groups, self.eps, name="norm1")(x))
    h = conv(self.features, 3, self.dtype, "conv1")(h)
    h = nn.silu(GroupNorm(self.groups, self.eps, name="norm2")(h))
    h = conv(self.features, 3, self.dtype, "conv2")(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, self.dtype, "conv_shortcut")(x)
    return x + h


def _mid(h, c, groups, attention, dtype):
  h = Resnet(c, groups, dtype=dtype, name="mid_block_resnets_0")(h)
  if attention:
    h = Attention(1, groups, EPS, 1.0, dtype, name="mid_block_attentions_0")(h)
  return Resnet(c, groups, dtype=dtype, name="mid_block_resnets_1")(h)


class Encoder(nn.Module):
  out_channels: int  # 2 * latent_channels.
  block_out_channels: tuple[int, ...]
  layers_per_block: int
  groups: int
  mid_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    boc, dt = self.block_out_channels, self.dtype
    h = conv(boc[0], 3, dt, "conv_in")(x.astype(dt))
    for i, c in enumerate(boc):
      for j in range(self.layers_per_block):
        h = Resnet(c, self.groups, dtype=dt, name=f"down_blocks_{i}_resnets_{j}")(h)
      if i < len(boc) - 1:  # Downsample2D with padding 0: one zero row and column after.
        h = conv(c, 3, dt, f"down_blocks_{i}_downsamplers_0_conv", strides=2,
                 padding=((0, 1), (0, 1)))(h)
    h = _mid(h, boc[-1], self.groups, self.mid_attention, dt)
    h = nn.silu(GroupNorm(self.groups, EPS, name="conv_norm_out")(h))
    return conv(self.out_channels, 3, dt, "conv_out")(h)


class Decoder(nn.Module):
  out_channels: int
  block_out_channels: tuple[int, ...]
  layers_per_block: int
  groups: int
  mid_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    boc, dt = self.block_out_channels, self.dtype
    h = conv(boc[-1], 3, dt, "conv_in")(z.astype(dt))
    h = _mid(h, boc[-1], self.groups, self.mid_attention, dt)
    for i, c in enumerate(reversed(boc)):
      for j in range(self.layers_per_block + 1):
        h = Resnet(c, self.groups, dtype=dt, name=f"up_blocks_{i}_resnets_{j}")(h)
      if i < len(boc) - 1:
        h = UpsampleConv(c, name=f"up_blocks_{i}_upsamplers_0_conv")(h)
    h = nn.silu(GroupNorm(self.groups, EPS, name="conv_norm_out")(h))
    return conv(self.out_channels, 3, dt, "conv_out")(h)


class AutoencoderKL(nn.Module):
  """diffusers' AutoencoderKL (see the module docstring). Images and latents are NHWC.
  Calling it (for `init`) encodes and decodes the posterior mean."""

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 4
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  norm_num_groups: int = 32
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    boc = tuple(self.block_out_channels)
    self.encoder = Encoder(2 * self.latent_channels, boc, self.layers_per_block,
                           self.norm_num_groups, self.mid_block_add_attention, self.dtype)
    self.decoder = Decoder(self.out_channels, boc, self.layers_per_block, self.norm_num_groups,
                           self.mid_block_add_attention, self.dtype)
    if self.use_quant_conv:
      self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1), dtype=self.dtype)
    if self.use_post_quant_conv:
      self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype)

  def encode(self, x):
    """x [B, H, W, in_channels] in [-1, 1] -> (mean, logvar), each [B, H/f, W/f, latent]."""
    moments = self.encoder(x)
    if self.use_quant_conv:
      moments = self.quant_conv(moments)
    moments = moments.astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z):
    """z [B, h, w, latent_channels] (unscaled) -> image [B, h*f, w*f, out_channels]."""
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z.astype(self.dtype))
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x):
    mean, _ = self.encode(x)
    return self.decode(mean)


def sample_posterior(rng, mean, logvar):
  """A draw of the posterior: mean + exp(logvar / 2) * N(0, 1)."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def to_latents(z, scaling_factor: float, shift_factor: float = 0.0):
  """The diffusion model's latents of a VAE sample: (z - shift_factor) * scaling_factor."""
  return (z - shift_factor) * scaling_factor


def from_latents(latents, scaling_factor: float, shift_factor: float = 0.0):
  """What `decode` takes from the diffusion model's latents: latents / scaling_factor +
  shift_factor."""
  return latents / scaling_factor + shift_factor


# ----------------------------------------------------------------------------- loading

# Old checkpoints' attention tensor names, as diffusers renames them on loading.
DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def current_name(name: str) -> str:
  """diffusers' current name of an old checkpoint's mid-block attention tensor."""
  parts = name.split(".")
  if len(parts) >= 2 and parts[-2] in DEPRECATED_ATTENTION and ".attentions." in name:
    return ".".join(parts[:-2] + [DEPRECATED_ATTENTION[parts[-2]], parts[-1]])
  return name


def read_config(folder: str) -> dict:
  """The module fields and latent scaling of `folder/config.json`, each field checked; a
  one-line InputError names the field gen's AutoencoderKL cannot express."""
  path = os.path.join(folder, CONFIG)
  d = read_json(path)
  f = tensors_lib.Fields(path, d)
  if d.get("_class_name") != MODEL_CLASS:
    f.refuse("_class_name", f"this reads {MODEL_CLASS}")
  f.known(FIXED, READ, IGNORED, "gen's AutoencoderKL")
  boc = f.int_list("block_out_channels", default=[64])
  for field, want in (("down_block_types", "DownEncoderBlock2D"),
                      ("up_block_types", "UpDecoderBlock2D")):
    types = d.get(field, [want])
    if not isinstance(types, list) or len(types) != len(boc):
      f.refuse(field, f"expected {len(boc)} block types, one per block_out_channels")
    for t in types:
      if t != want:
        raise InputError(f"{path}: {field} has {t!r}, not supported (gen's AutoencoderKL has "
                         f"{want})")
  groups = f.positive_int("norm_num_groups", 32)
  if any(c % groups for c in boc):
    f.refuse("norm_num_groups", f"it must divide every block_out_channels {list(boc)}")
  shift = d.get("shift_factor")
  return {"module": {"in_channels": f.positive_int("in_channels", 3),
                     "out_channels": f.positive_int("out_channels", 3),
                     "latent_channels": f.positive_int("latent_channels", 4),
                     "block_out_channels": boc,
                     "layers_per_block": f.positive_int("layers_per_block", 1),
                     "norm_num_groups": groups,
                     "use_quant_conv": f.boolean("use_quant_conv", True),
                     "use_post_quant_conv": f.boolean("use_post_quant_conv", True),
                     "mid_block_add_attention": f.boolean("mid_block_add_attention", True)},
          "scaling_factor": f.positive("scaling_factor", 0.18215),
          "shift_factor": 0.0 if shift is None else f.number("shift_factor"),
          "downscale": 2 ** (len(boc) - 1)}


def load_vae(folder: str, dtype=jnp.float32) -> tuple[AutoencoderKL, dict, dict]:
  """(module, params, info) of a diffusers AutoencoderKL folder (Stable Diffusion's vae/):
  config.json and diffusion_pytorch_model.safetensors (.bin with torch). `info`:
  scaling_factor, shift_factor, downscale (image size / latent size). Bad input is a one-line
  InputError naming the file and the field or tensor."""
  a = read_config(folder)
  model = AutoencoderKL(**a["module"], dtype=dtype)
  tensors, path = tensors_lib.read_weights(folder, SAFETENSORS, TORCH_BIN)
  f = a["downscale"]
  x = jnp.zeros((1, 2 * f, 2 * f, model.in_channels), jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  params = tensors_lib.to_params(tensors, path, abstract,
                                 "an AutoencoderKL of this config.json", rename=current_name)
  info = {k: a[k] for k in ("scaling_factor", "shift_factor", "downscale")}
  return model, params, info
