"""The backbones a diffusion model trains, and the checks of the settings they share.

`model.arch` picks the backbone: `unet` (ADM-style, `model.unet`), `dit` (`model.dit`), or
`unet2d`, diffusers' UNet2DModel layer for layer (`model.unet2d`, which `gen import` writes;
`gen.diffusion.diffusers`), or for a text_denoiser `unet2d_condition`, its
UNet2DConditionModel (`model.text_to_image.unet`). `model.dtype` (float32 | bfloat16) is its compute dtype, with
float32 parameters and outputs. `network` builds a denoiser (`out` channels) or a
noise-conditional classifier's encoder (`out` classes); `check` validates the process, the
data and the backbone for a denoiser or a classifier, `process_and_objective` builds the math.
"""

from __future__ import annotations


from gen.core import xla
from gen.core.config import ConfigError
from gen.core.family import DataSpec
from gen.diffusion.discrete import DiscreteProcess, with_prediction
from gen.diffusion.diffusers.unet2d import DOWN_BLOCKS, UP_BLOCKS, UNet2D
from gen.diffusion.diffusers.unet2d_condition import DOWN_BLOCKS as UNET_COND_DOWN
from gen.diffusion.diffusers.unet2d_condition import UP_BLOCKS as UNET_COND_UP
from gen.diffusion.models import DTYPES, DiT, DiTClassifier, UNet, UNetClassifier
from gen.diffusion.objectives import OBJECTIVES, OWN_PROCESS, make_objective, make_process
from gen.diffusion.process import Objective, Process

SCHEDULES = ("linear", "cosine", "discrete")  # discrete: diffusion.discrete (a diffusers table).
# unet2d: diffusers' UNet2DModel; unet2d_condition: its UNet2DConditionModel, for text
# (model.kind='text_denoiser'; gen.diffusion.diffusers).
ARCHS = ("unet", "dit", "unet2d", "unet2d_condition")
DIT_POSITIONS = ("sincos", "learned")
# Every sampler name of any process (`gen.diffusion.sampling` says which a process takes).
SAMPLER_NAMES = ("ddpm", "ddim", "pndm", "euler", "euler_a", "heun", "dpmpp_2m", "flow_euler",
                 "flow_heun")


def process_name(d) -> str:
  return OWN_PROCESS.get(d.objective, d.schedule)



def process_and_objective(d) -> tuple[Process, Objective]:
  """The process and objective of a config's `diffusion` section."""
  process = make_process(process_name(d), d.p_mean, d.p_std, d.discrete)
  if isinstance(process, DiscreteProcess):
    process = with_prediction(process, d.objective)
  return process, make_objective(d.objective, d.sigma_data)


def check(config, spec: DataSpec, shape=None):
  """Checks what denoisers and classifiers share: the process, the data, the backbone
  (for inputs of `shape`: the latent shape of a latent run; default: the images')."""
  d, m = config.diffusion, config.model
  if d.objective not in OBJECTIVES:
    raise ConfigError(f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, "
                      f"got '{d.objective}'")
  if d.objective not in OWN_PROCESS and d.schedule not in SCHEDULES:
    raise ConfigError(f"diffusion.schedule must be one of {', '.join(SCHEDULES)} for "
                      f"objective '{d.objective}', got '{d.schedule}'")
  if d.sampler not in SAMPLER_NAMES:
    raise ConfigError(f"diffusion.sampler must be one of {', '.join(SAMPLER_NAMES)}, "
                      f"got '{d.sampler}'")
  if d.sample_steps < 1:
    raise ConfigError(f"diffusion.sample_steps must be >= 1, got {d.sample_steps}")
  if spec.preprocess not in ("scale", "dequantize"):
    raise ConfigError("diffusion models data in [-1, 1]: data.preprocess must be 'scale' or "
                      f"'dequantize', got '{spec.preprocess}'")
  if m.arch not in ARCHS:
    raise ConfigError(f"model.arch must be one of {', '.join(ARCHS)}, got '{m.arch}'")
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{m.dtype}'")
  h, w, _ = spec.shape if shape is None else shape
  if m.arch == "unet2d":
    _check_unet2d(m, h, w)
  elif m.arch == "unet2d_condition":
    _check_unet2d_condition(m, h, w)
  elif m.arch == "unet":
    f = 2 ** (len(m.unet.channel_mult) - 1)
    if h % f or w % f:
      raise ConfigError(f"image size {h}x{w} must be divisible by {f}: the UNet halves it "
                        f"{len(m.unet.channel_mult) - 1} times (len(model.unet.channel_mult) "
                        "- 1); use fewer levels")
  else:
    if h % m.dit.patch or w % m.dit.patch:
      raise ConfigError(f"image size {h}x{w} must be divisible by model.dit.patch = "
                        f"{m.dit.patch}")
    if m.dit.positions not in DIT_POSITIONS:
      raise ConfigError(f"model.dit.positions must be one of {', '.join(DIT_POSITIONS)}, got "
                        f"'{m.dit.positions}'")
    if m.dit.dim % m.dit.heads:
      raise ConfigError(f"model.dit.dim = {m.dit.dim} must be divisible by model.dit.heads = "
                        f"{m.dit.heads}")


def _check_unet2d(m, h: int, w: int):
  """model.unet2d: the diffusers UNet2DModel fields gen.diffusion.diffusers.unet2d builds."""
  u = m.unet2d
  boc, down, up = tuple(u.block_out_channels), tuple(u.down_block_types), tuple(u.up_block_types)
  if m.kind != "denoiser":
    raise ConfigError("model.arch='unet2d' (diffusers' UNet2DModel) is a denoiser: "
                      "model.kind must be 'denoiser'")
  if m.conditional:
    raise ConfigError("model.arch='unet2d' is unconditional: model.conditional must be False")
  if not boc or len(down) != len(boc) or len(up) != len(boc):
    raise ConfigError("model.unet2d.block_out_channels, down_block_types and up_block_types "
                      f"must have the same (nonzero) length, got {len(boc)}, {len(down)}, "
                      f"{len(up)}")
  for name, types, known in (("down_block_types", down, DOWN_BLOCKS),
                             ("up_block_types", up, UP_BLOCKS)):
    if any(t not in known for t in types):
      raise ConfigError(f"model.unet2d.{name} must be of {', '.join(known)}, got {types}")
  groups = [u.norm_num_groups] + ([u.attn_norm_num_groups] if u.attn_norm_num_groups else [])
  if any(g < 1 or c % g for c in boc for g in groups):
    raise ConfigError(f"model.unet2d.norm_num_groups = {u.norm_num_groups} (and "
                      f"attn_norm_num_groups = {u.attn_norm_num_groups}) must divide every "
                      f"block_out_channels {boc}")
  if u.attention_head_dim < 0 or (u.attention_head_dim and any(
      c % u.attention_head_dim for c in boc)):
    raise ConfigError(f"model.unet2d.attention_head_dim = {u.attention_head_dim} must divide "
                      f"every block_out_channels {boc} (0: one head)")
  if u.layers_per_block < 1 or u.downsample_padding not in (0, 1):
    raise ConfigError("model.unet2d.layers_per_block must be >= 1 and downsample_padding 0 or "
                      f"1, got {u.layers_per_block}, {u.downsample_padding}")
  f = 2 ** (len(boc) - 1)
  if h % f or w % f:
    raise ConfigError(f"image size {h}x{w} must be divisible by {f}: the UNet halves it "
                      f"{len(boc) - 1} times (len(model.unet2d.block_out_channels) - 1)")


def _check_unet2d_condition(m, h: int, w: int):
  """model.text_to_image.unet, a UNet2DConditionModel trained from scratch on text."""
  u = m.text_to_image.unet
  if m.kind != "text_denoiser":
    raise ConfigError("model.arch='unet2d_condition' reads a prompt: model.kind must be "
                      "'text_denoiser'")
  boc = tuple(u.block_out_channels)
  lists = {"down_block_types": u.down_block_types, "up_block_types": u.up_block_types,
           "attention_head_dim": u.attention_head_dim, "layers_per_block": u.layers_per_block,
           "transformer_layers_per_block": u.transformer_layers_per_block}
  wrong = [k for k, v in lists.items() if len(tuple(v)) != len(boc)]
  if not boc or wrong:
    raise ConfigError(f"model.text_to_image.unet: {', '.join(wrong) or 'block_out_channels'} "
                      f"must have one entry per block_out_channels {boc}")
  for name, types, known in (("down_block_types", u.down_block_types, UNET_COND_DOWN),
                             ("up_block_types", u.up_block_types, UNET_COND_UP)):
    if any(t not in known for t in types):
      raise ConfigError(f"model.text_to_image.unet.{name} must be of {', '.join(known)}, got "
                        f"{tuple(types)}")
  if any(c % u.norm_num_groups or c % hd for c, hd in zip(boc, u.attention_head_dim)):
    raise ConfigError(f"model.text_to_image.unet.norm_num_groups = {u.norm_num_groups} and "
                      f"each attention_head_dim (heads) {tuple(u.attention_head_dim)} must "
                      f"divide block_out_channels {boc}")
  f = 2 ** (len(boc) - 1)
  if h % f or w % f:
    raise ConfigError(f"image size {h}x{w} must be divisible by {f}: the UNet halves it "
                      f"{len(boc) - 1} times")


def network(m, out: int, num_classes: int, classifier: bool):
  """The backbone (`model.arch`): a denoiser with `out` channels, or a classifier's encoder
  with `out` classes, computing in `model.dtype` (float32 params and outputs either way)."""
  dtype = DTYPES[m.dtype]
  if m.arch == "unet2d_condition":
    raise ConfigError("model.arch='unet2d_condition' is a text_denoiser's backbone "
                      "(gen.diffusion.text_denoiser builds it)")
  if m.arch == "unet2d":
    u = m.unet2d
    return UNet2D(out, tuple(u.block_out_channels),
                  tuple(DOWN_BLOCKS[b] for b in u.down_block_types),
                  tuple(UP_BLOCKS[b] for b in u.up_block_types), u.layers_per_block,
                  u.attention_head_dim, u.norm_num_groups, u.attn_norm_num_groups, u.norm_eps,
                  u.flip_sin_to_cos, u.freq_shift, u.downsample_padding,
                  u.mid_block_scale_factor, m.dropout, dtype=dtype)
  if m.arch == "unet":
    u = m.unet
    cls = UNetClassifier if classifier else UNet
    return cls(out, u.channels, tuple(u.channel_mult), u.num_res_blocks,
               tuple(u.attn_resolutions), u.heads, m.dropout, u.groups, num_classes,
               dtype=dtype)
  t = m.dit
  cls = DiTClassifier if classifier else DiT
  return cls(out, t.patch, t.dim, t.depth, t.heads, t.mlp_ratio, m.dropout, num_classes,
             t.positions, dtype=dtype)


def compiler_options(m) -> dict:
  """The UNets are convolutional networks (`gen.core.xla.CONVNET_CPU`); the DiT is not."""
  return dict(xla.CONVNET_CPU) if m.arch in ("unet", "unet2d", "unet2d_condition") else {}
