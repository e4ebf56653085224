"""diffusers' UNet2DModel (the DDPM / google/ddpm-* layout) from a model folder, as a gen workdir.

`gen import --from=DIR --workdir=W` reads a folder that diffusers' `save_pretrained` wrote:
either a UNet2DModel folder (`config.json`, `diffusion_pytorch_model.safetensors`, or
`diffusion_pytorch_model.bin` when torch is installed) with the scheduler's
`scheduler_config.json` beside it, or a pipeline folder (DDPMPipeline / DDIMPipeline) with
them in `unet/` and `scheduler/`. It writes `W/config.json`, `W/data_spec.json` (images of
sample_size x sample_size x in_channels in [-1, 1], preprocess "scale") and a checkpoint at
step 0, so `gen sample --workdir=W --sampler=ddim --steps=50` samples as diffusers'
DDIMPipeline does. Nothing downloads.

The network is `gen.diffusion.diffusers.unet2d.UNet2D` (`model.arch = "unet2d"`, the config fields in
`model.unet2d`), its parameters named after diffusers' tensors (`unet2d.torch_name`);
convolutions and linear layers are transposed, nothing else changes. Old checkpoints'
attention names (query, key, value, proj_attn) are read as to_q, to_k, to_v, to_out.0.

What loads (config.json): UNet2DModel with down_block_types of DownBlock2D / AttnDownBlock2D
and up_block_types of UpBlock2D / AttnUpBlock2D, mid_block_type UNetMidBlock2D with its
attention (add_attention true), any block_out_channels, layers_per_block, attention_head_dim
(dividing the channels, or null: one head), norm_num_groups (dividing every block's
channels), attn_norm_num_groups, norm_eps, flip_sin_to_cos, freq_shift, downsample_padding 0
or 1, mid_block_scale_factor, dropout; time_embedding_type "positional",
resnet_time_scale_shift "default", act_fn silu, conv down- and upsampling, in_channels =
out_channels, no class embedding, no center_input_sample, no time_embedding_dim. Anything
else is refused with a one-line error naming the field.

The scheduler (scheduler_config.json: DDPMScheduler, DDIMScheduler, PNDMScheduler with
skip_prk_steps, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler or
DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint), with the settings gen's sampler of
that name implements; `read_scheduler`, which the Stable Diffusion importer shares) becomes
`diffusion.schedule = "discrete"` with its `diffusion.discrete` keys (beta_schedule linear /
scaled_linear / squaredcos_cap_v2, num_train_timesteps, beta_start, beta_end,
timestep_spacing, steps_offset, set_alpha_to_one, clip_sample, clip_sample_range) and
prediction_type epsilon / v_prediction / sample as `diffusion.objective` eps / v / x0;
(early configs' predict_epsilon likewise; their tensor_format and timestep_values do nothing);
trained_betas, thresholding, rescale_betas_zero_snr, a DDPM variance_type other than
fixed_small, Karras / exponential / beta sigmas, another DPM-Solver order or algorithm, and any
field no scheduler has are refused by name. The default sampler is ddim with 50 steps, as
DDIMPipeline's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

from gen.core.config import ConfigDict
from gen.core.interop import (Importer, InputError, finish_config, frozen_run, load_safetensors,
                              load_torch, read_json, save_workdir)
from gen.core.family import DataSpec
from gen.diffusion.diffusers import unet2d
from gen.diffusion.config import default_config
from gen.diffusion.discrete import BETA_SCHEDULES, SPACINGS

CONFIG = "config.json"
SCHEDULER = "scheduler_config.json"
SAFETENSORS = "diffusion_pytorch_model.safetensors"
TORCH_BIN = "diffusion_pytorch_model.bin"
MODEL_CLASS = "UNet2DModel"
# The scheduler classes read, and the sampler of gen's discrete process each one is.
SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "PNDMScheduler": "pndm",
              "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler_a",
              "DPMSolverMultistepScheduler": "dpmpp_2m"}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
# Old checkpoints' attention tensor names, as diffusers renames them on loading.
DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# config.json fields: the value gen requires (the rest are read below).
FIXED = {"center_input_sample": False, "time_embedding_type": "positional",
         "time_embedding_dim": None, "mid_block_type": "UNetMidBlock2D",
         "downsample_type": "conv", "upsample_type": "conv", "resnet_time_scale_shift": "default",
         "add_attention": True, "class_embed_type": None, "num_class_embeds": None}
READ = ("sample_size", "in_channels", "out_channels", "freq_shift", "flip_sin_to_cos",
        "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
        "mid_block_scale_factor", "downsample_padding", "dropout", "act_fn",
        "attention_head_dim", "norm_num_groups", "attn_norm_num_groups", "norm_eps",
        "num_train_timesteps")  # (num_train_timesteps: for learned time embeddings only.)
SCHEDULER_READ = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                  "trained_betas", "prediction_type", "timestep_spacing", "steps_offset",
                  "rescale_betas_zero_snr", "predict_epsilon")
# Each class's own fields beyond SCHEDULER_READ: the value gen's sampler implements (a tuple:
# any of these), or READ_VALUE for the ones read (clip_sample, set_alpha_to_one...), or
# UNUSED for settings that do nothing with the others' values (thresholding's ratio, ...).
READ_VALUE, UNUSED = object(), object()
_THRESHOLDING = {"thresholding": (False,), "dynamic_thresholding_ratio": UNUSED,
                 "sample_max_value": UNUSED}
_SIGMAS = {"use_karras_sigmas": (False,), "use_exponential_sigmas": (False,),
           "use_beta_sigmas": (False,), "final_sigmas_type": ("zero",)}
SCHEDULER_FIELDS = {
    "DDPMScheduler": {"variance_type": ("fixed_small",), "clip_sample": READ_VALUE,
                      "clip_sample_range": READ_VALUE, **_THRESHOLDING},
    "DDIMScheduler": {"clip_sample": READ_VALUE, "clip_sample_range": READ_VALUE,
                      "set_alpha_to_one": READ_VALUE, **_THRESHOLDING},
    "PNDMScheduler": {"skip_prk_steps": (True,), "set_alpha_to_one": READ_VALUE},
    "EulerDiscreteScheduler": {"interpolation_type": ("linear",), "sigma_min": (None,),
                               "sigma_max": (None,), "timestep_type": ("discrete",), **_SIGMAS},
    "EulerAncestralDiscreteScheduler": {},
    "DPMSolverMultistepScheduler": {
        "solver_order": (2,), "algorithm_type": ("dpmsolver++",), "solver_type": ("midpoint",),
        "lower_order_final": (True,), "euler_at_final": (False,), "use_lu_lambdas": (False,),
        "use_flow_sigmas": (False,), "flow_shift": UNUSED, "lambda_min_clipped": (-math.inf,),
        "variance_type": (None,), "use_dynamic_shifting": (False,), "time_shift_type": UNUSED,
        **_THRESHOLDING, **_SIGMAS},
}
# Defaults that differ between the classes (diffusers' __init__ arguments).
SCHEDULER_DEFAULTS = {
    "DDPMScheduler": {"timestep_spacing": "leading", "clip_sample": True},
    "DDIMScheduler": {"timestep_spacing": "leading", "clip_sample": True,
                      "set_alpha_to_one": True},
    "PNDMScheduler": {"timestep_spacing": "leading", "set_alpha_to_one": False,
                      "skip_prk_steps": False},
    "EulerDiscreteScheduler": {"timestep_spacing": "linspace"},
    "EulerAncestralDiscreteScheduler": {"timestep_spacing": "linspace"},
    "DPMSolverMultistepScheduler": {"timestep_spacing": "linspace"},
}
# Fields of early diffusers scheduler configs that no longer do anything.
SCHEDULER_OBSOLETE = ("tensor_format", "timestep_values")


def model_folder(folder: str) -> str:
  """Where the UNet's config.json is: `folder`, or a pipeline folder's `unet/`."""
  if not os.path.isfile(os.path.join(folder, CONFIG)) and os.path.isdir(
      os.path.join(folder, "unet")):
    return os.path.join(folder, "unet")
  return folder


def scheduler_path(folder: str) -> str:
  inside = os.path.join(folder, "scheduler", SCHEDULER)
  return inside if os.path.isfile(inside) else os.path.join(folder, SCHEDULER)


def recognizes(folder: str) -> bool:
  try:
    return read_json(os.path.join(model_folder(folder), CONFIG)).get("_class_name") == \
        MODEL_CLASS
  except InputError:
    return False


# ------------------------------------------------------------------------- config.json


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(v) -> bool:
  return type(v) is int and v > 0


def read_config(folder: str) -> dict:
  """The `model.unet2d` fields and image shape of `folder/config.json`, each field checked."""
  path = os.path.join(model_folder(folder), CONFIG)
  d = read_json(path)

  def refuse(field, why):
    raise InputError(f"{path}: {field}={d.get(field)!r} is not supported ({why})")

  if d.get("_class_name") != MODEL_CLASS:
    refuse("_class_name", f"this importer reads {MODEL_CLASS}")
  for field in d:
    if not field.startswith("_") and field not in FIXED and field not in READ:
      refuse(field, "a field gen's UNet2D does not know")
  for field, want in FIXED.items():
    if field in d and d[field] != want:
      refuse(field, f"gen's UNet2D has {field}={json.dumps(want)}")
  boc = d.get("block_out_channels")
  if not isinstance(boc, list) or not boc or not all(_positive_int(c) for c in boc):
    refuse("block_out_channels", "expected a list of positive integers")
  for field, known in (("down_block_types", unet2d.DOWN_BLOCKS),
                       ("up_block_types", unet2d.UP_BLOCKS)):
    types = d.get(field)
    if not isinstance(types, list) or len(types) != len(boc):
      refuse(field, f"expected a list of {len(boc)} block types, one per block_out_channels")
    for t in types:
      if t not in known:
        raise InputError(f"{path}: {field} has {t!r}, not supported (gen's UNet2D has "
                         f"{' and '.join(known)})")
  size = d.get("sample_size")
  size = [size, size] if _positive_int(size) else size
  if not (isinstance(size, list) and len(size) == 2 and all(_positive_int(s) for s in size)):
    refuse("sample_size", "expected a positive integer or [height, width]")
  f = 2 ** (len(boc) - 1)
  if size[0] % f or size[1] % f:
    refuse("sample_size", f"it must be divisible by 2^(len(block_out_channels) - 1) = {f}")
  c = d.get("in_channels", 3)
  if not _positive_int(c):
    refuse("in_channels", "expected a positive integer")
  if d.get("out_channels", 3) != c:
    refuse("out_channels", f"gen's denoisers output the input's channels, in_channels={c}")
  layers = d.get("layers_per_block", 2)
  if not _positive_int(layers):
    refuse("layers_per_block", "expected a positive integer")
  groups = d.get("norm_num_groups", 32)
  if not _positive_int(groups) or any(ch % groups for ch in boc):
    refuse("norm_num_groups", f"it must divide every block_out_channels {boc}")
  attn_groups = d.get("attn_norm_num_groups")
  if attn_groups is not None and (not _positive_int(attn_groups) or boc[-1] % attn_groups):
    refuse("attn_norm_num_groups", f"it must divide block_out_channels[-1] = {boc[-1]}")
  head = d.get("attention_head_dim", 8)
  if head is not None and (not _positive_int(head) or any(ch % head for ch in boc)):
    refuse("attention_head_dim", f"it must divide every block_out_channels {boc}, or be null")
  if d.get("downsample_padding", 1) not in (0, 1) or isinstance(d.get("downsample_padding"),
                                                                bool):
    refuse("downsample_padding", "gen's UNet2D pads by 0 or 1")
  if d.get("act_fn", "silu") not in ("silu", "swish"):
    refuse("act_fn", "gen's UNet2D uses SiLU")
  eps = d.get("norm_eps", 1e-5)
  if not _number(eps) or not eps > 0:
    refuse("norm_eps", "expected a positive number")
  scale = d.get("mid_block_scale_factor", 1)
  if not _number(scale) or not scale > 0:
    refuse("mid_block_scale_factor", "expected a positive number")
  shift = d.get("freq_shift", 0)
  if not _number(shift) or shift >= boc[0] // 2:
    refuse("freq_shift", f"expected a number below block_out_channels[0] // 2 = {boc[0] // 2}")
  flip = d.get("flip_sin_to_cos", True)
  if not isinstance(flip, bool):
    refuse("flip_sin_to_cos", "expected true or false")
  dropout = d.get("dropout", 0.0)
  if not _number(dropout) or not 0 <= dropout < 1:
    refuse("dropout", "expected a number in [0, 1)")
  return {"shape": (size[0], size[1], c),
          "unet2d": {"block_out_channels": tuple(boc),
                     "down_block_types": tuple(d["down_block_types"]),
                     "up_block_types": tuple(d["up_block_types"]), "layers_per_block": layers,
                     "attention_head_dim": head or 0, "norm_num_groups": groups,
                     "attn_norm_num_groups": attn_groups or 0, "norm_eps": float(eps),
                     "flip_sin_to_cos": flip, "freq_shift": float(shift),
                     "downsample_padding": int(d.get("downsample_padding", 1)),
                     "mid_block_scale_factor": float(scale)},
          "dropout": float(dropout)}


def read_scheduler(folder: str, path: str | None = None) -> dict:
  """`diffusion.objective`, the `diffusion.discrete` keys and the sampler (`sampler`: the
  class's, for `diffusion.sampler`) of the scheduler's config; `path` (default: found in
  `folder`) names the file. A field no scheduler class here has, or a value of one that
  gen's sampler does not implement, is a one-line InputError naming it; the fields of the
  other classes, which diffusers ignores for this one (SD 2.x's DDIM config holds PNDM's
  skip_prk_steps), are ignored."""
  path = path or scheduler_path(folder)
  d = read_json(path)

  def refuse(field, why):
    raise InputError(f"{path}: {field}={d.get(field)!r} is not supported ({why})")

  kind = d.get("_class_name")
  if kind not in SCHEDULERS:
    refuse("_class_name", f"gen's discrete samplers are {', '.join(SCHEDULERS)}")
  own = SCHEDULER_FIELDS[kind]
  others = set().union(*SCHEDULER_FIELDS.values())
  defaults = SCHEDULER_DEFAULTS[kind]
  for field in d:
    if (not field.startswith("_") and field not in SCHEDULER_READ + SCHEDULER_OBSOLETE
        and field not in own and field not in others):
      refuse(field, "a scheduler field gen does not know")
  for field, allowed in own.items():
    if isinstance(allowed, tuple) and field in d and d[field] not in allowed:
      refuse(field, f"gen's {SCHEDULERS[kind]} sampler has {field}="
             f"{json.dumps(allowed[0])}")
  if kind == "PNDMScheduler" and d.get("skip_prk_steps", False) is not True:
    refuse("skip_prk_steps", "gen's pndm sampler is PLMS with skip_prk_steps=true, as Stable "
           "Diffusion's configs have it")
  if d.get("trained_betas") is not None:
    refuse("trained_betas", "gen builds the table from beta_schedule")
  if d.get("rescale_betas_zero_snr", False) is not False:
    refuse("rescale_betas_zero_snr", "not in gen's discrete schedules")
  old = d.get("predict_epsilon")  # Early configs: true / false for epsilon / sample.
  if old is not None and not isinstance(old, bool):
    refuse("predict_epsilon", "expected true or false")
  prediction = d.get("prediction_type", "epsilon" if old in (None, True) else "sample")
  supported = PREDICTIONS if kind in ("DDPMScheduler", "DDIMScheduler",
                                      "DPMSolverMultistepScheduler") else ("epsilon",
                                                                           "v_prediction")
  if prediction not in supported:
    refuse("prediction_type", f"{kind} takes {', '.join(supported)}")
  schedule = d.get("beta_schedule", "linear")
  if schedule not in BETA_SCHEDULES:
    refuse("beta_schedule", f"supported: {', '.join(BETA_SCHEDULES)}")
  spacing = d.get("timestep_spacing", defaults["timestep_spacing"])
  if spacing not in SPACINGS:
    refuse("timestep_spacing", f"supported: {', '.join(SPACINGS)}")
  n = d.get("num_train_timesteps", 1000)
  if not _positive_int(n) or n < 2:
    refuse("num_train_timesteps", "expected an integer >= 2")
  offset = d.get("steps_offset", 0)
  if type(offset) is not int or offset < 0:
    refuse("steps_offset", "expected an integer >= 0")
  out = {}
  for field, default in (("beta_start", 1e-4), ("beta_end", 0.02), ("clip_sample_range", 1.0)):
    v = d.get(field, default)
    if not _number(v) or not v > 0:
      refuse(field, "expected a positive number")
    out[field] = float(v)
  # Read when present whatever the class (as diffusers' from_config passes them on to another
  # scheduler): what DDIM / DDPM / PNDM do if the workdir samples with them.
  flags = {}
  for field in ("clip_sample", "set_alpha_to_one"):
    v = d.get(field, defaults.get(field, field == "set_alpha_to_one"))
    if not isinstance(v, bool):
      refuse(field, "expected true or false")
    flags[field] = v
  discrete = {"beta_schedule": schedule, "num_train_timesteps": n,
              "beta_start": out["beta_start"], "beta_end": out["beta_end"],
              "timestep_spacing": spacing, "steps_offset": offset,
              "set_alpha_to_one": flags["set_alpha_to_one"], "clip_sample": flags["clip_sample"],
              "clip_sample_range": out["clip_sample_range"]}
  return {"objective": PREDICTIONS[prediction], "discrete": discrete, "class": kind,
          "sampler": SCHEDULERS[kind]}


# ----------------------------------------------------------------------------- weights


def read_tensors(folder: str) -> tuple[dict[str, np.ndarray], str]:
  """The UNet's tensors and the file they came from."""
  where = model_folder(folder)
  path = os.path.join(where, SAFETENSORS)
  if os.path.isfile(path):
    return load_safetensors(path), path
  path = os.path.join(where, TORCH_BIN)
  if os.path.isfile(path):
    return load_torch(path, SAFETENSORS), path
  raise InputError(f"{where}: no weights ({SAFETENSORS} or {TORCH_BIN})")


def _current_name(name: str) -> str:
  """diffusers' current name of an old checkpoint's attention tensor."""
  parts = name.split(".")
  if len(parts) >= 2 and parts[-2] in DEPRECATED_ATTENTION and ".attentions." in name:
    return ".".join(parts[:-2] + [DEPRECATED_ATTENTION[parts[-2]], parts[-1]])
  return name


def to_params(tensors: dict[str, np.ndarray], path: str, abstract) -> dict:
  """The params tree shaped like `abstract` (UNet2D's, from jax.eval_shape) from diffusers'
  tensors; an InputError naming the file and tensor for one missing, extra, ill-shaped or
  not floating point."""
  import jax

  named = {}
  for name, x in tensors.items():
    current = _current_name(name)
    if current in named:
      raise InputError(f"{path}: tensor {name} appears twice (also as {current})")
    named[current] = (name, x)
  leaves = jax.tree_util.tree_leaves_with_path(abstract)
  want = {}
  for keys, leaf in leaves:
    keys = tuple(k.key for k in keys)
    want[unet2d.torch_name(keys)] = (keys, unet2d.torch_shape(leaf.shape))
  for name, (_, shape) in want.items():
    if name not in named:
      raise InputError(f"{path}: tensor {name} is missing (shape {shape} expected)")
  params = {}
  for current, (name, x) in named.items():
    if current not in want:
      raise InputError(f"{path}: tensor {name} {tuple(x.shape)} is not a weight of this "
                       "config.json's UNet2DModel")
    keys, shape = want[current]
    if tuple(x.shape) != shape:
      raise InputError(f"{path}: tensor {name} has shape {tuple(x.shape)}, config.json implies "
                       f"{shape}")
    if not np.issubdtype(x.dtype, np.floating):
      raise InputError(f"{path}: tensor {name} is {x.dtype}, not floating point")
    node = params
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = unet2d.from_torch(np.asarray(x, np.float32))
  return params


# --------------------------------------------------------------------------- workdir


def workdir_config(a: dict, s: dict) -> ConfigDict:
  """The config of an imported UNet2DModel and its scheduler; sampling as DDIMPipeline's
  defaults (ddim, 50 steps, eta 0)."""
  c = default_config()
  c.model.arch = "unet2d"
  c.model.dropout = a["dropout"]
  c.model.unet2d.update(a["unet2d"])
  c.diffusion.objective = s["objective"]
  c.diffusion.schedule = "discrete"
  c.diffusion.discrete.update(s["discrete"])
  c.diffusion.sampler = "ddim"
  c.diffusion.sample_steps = 50
  # The scheduler's clip_sample is diffusion.discrete's; clip_denoised stays False.
  frozen_run(c)  # Weights to sample, evaluate and start from; not trained in place.
  c.train.num_samples = 16
  return c


def write(folder: str, workdir: str, overrides: Sequence[str] = ()) -> str:
  """Reads and checks everything in `folder`, then writes the gen workdir into `workdir`."""
  import jax

  from gen.diffusion.denoiser import make

  a = read_config(folder)
  s = read_scheduler(folder)
  tensors, path = read_tensors(folder)
  config = finish_config(workdir_config(a, s), overrides)
  spec = DataSpec.images(a["shape"], 0, "scale")
  pipeline = make(config, spec)
  example = spec.example_batch(1)
  abstract = jax.eval_shape(pipeline.init, jax.random.key(config.seed), example)
  params = to_params(tensors, path, abstract.params)
  n = save_workdir(workdir, config, spec, pipeline, params)
  h, w, ch = a["shape"]
  u = a["unet2d"]
  return (f"UNet2DModel from {folder}: {h}x{w}x{ch} images, block_out_channels "
          f"{list(u['block_out_channels'])}, {u['layers_per_block']} layers per block "
          f"({n:,} params); {s['class']} table as diffusion.schedule='discrete', objective "
          f"{s['objective']}")


IMPORTER = Importer("a diffusers UNet2DModel folder (config.json with _class_name UNet2DModel,"
                    " scheduler_config.json)", recognizes, write)
