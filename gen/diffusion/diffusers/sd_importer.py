"""A Stable Diffusion 1.x / 2.x pipeline folder as a gen workdir (`gen import`).

`gen import --from=DIR --workdir=W` reads what `StableDiffusionPipeline.save_pretrained`
writes (or a hub snapshot of one): model_index.json, tokenizer/, text_encoder/, vae/, unet/
and scheduler/ (`gen.diffusion.diffusers.stable_diffusion` reads the networks, `importer`'s
`read_scheduler` the scheduler). The safety_checker/ and feature_extractor/ folders are not
read. It writes a `model.kind = "text_to_image"` run (`gen.diffusion.text_to_image`):
`config.json` with the networks' fields in `model.text_to_image`, the scheduler's table in
`diffusion.discrete`, its prediction type as `diffusion.objective` (eps or v) and its class as
`diffusion.sampler` (pndm, ddim, euler, euler_a, dpmpp_2m, ddpm), 50 steps and guidance 7.5 as
the pipeline's defaults; `data_spec.json` with the default image size (the UNet's sample_size
times the VAE's downscale) and the tokenizer; a checkpoint of the three networks' params at
step 0. Then `gen sample --workdir=W --prompt="..."` draws images as the pipeline does.

Everything is checked before anything is written (a missing component, a component of
another class, an unsupported block or scheduler setting, a text width that is not the UNet's
cross_attention_dim, a tokenizer that does not fit the text encoder, a tensor missing, extra
or ill-shaped): a one-line InputError naming the file and the field or tensor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gen.core.interop import (Importer, InputError, finish_config, frozen_run, read_json,
                              save_workdir)
from gen.core.family import DataSpec
from gen.diffusion.config import default_config
from gen.diffusion.diffusers import importer, stable_diffusion

SCHEDULER = os.path.join("scheduler", "scheduler_config.json")
GUIDANCE = 7.5  # StableDiffusionPipeline's defaults.
STEPS = 50


def read_scheduler(folder: str) -> dict:
  path = os.path.join(folder, stable_diffusion.MODEL_INDEX)
  entry = read_json(path).get("scheduler")
  if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in importer.SCHEDULERS):
    raise InputError(f"{path}: scheduler={entry!r} is not supported (gen's discrete samplers "
                     f"are {', '.join(importer.SCHEDULERS)})")
  return importer.read_scheduler(folder, os.path.join(folder, SCHEDULER))


def workdir_config(cfgs: dict, s: dict):
  c = default_config()
  c.model.kind = "text_to_image"
  fields = stable_diffusion.config_fields(cfgs)
  for part in ("text_encoder", "vae", "unet"):
    c.model.text_to_image[part].update(fields[part])
  c.diffusion.objective = s["objective"]
  c.diffusion.schedule = "discrete"
  c.diffusion.discrete.update(s["discrete"])
  c.diffusion.sampler = s["sampler"]
  c.diffusion.sample_steps = STEPS
  c.diffusion.guidance = GUIDANCE
  frozen_run(c)
  c.train.num_samples = 4
  return c


def data_spec(cfgs: dict) -> DataSpec:
  h, w, _ = cfgs["unet"]["shape"]
  f = cfgs["vae"]["downscale"]
  shape = (h * f, w * f, cfgs["vae"]["module"]["out_channels"])
  tokenizer = cfgs["tokenizer"]
  return DataSpec(shape, 0, "scale", "image",
                  {"image": (shape, "float32"), "ids": ((tokenizer.model_max_length,), "int32")},
                  {"tokenizer": tokenizer.to_json()})


def write(folder: str, workdir: str, overrides: Sequence[str] = ()) -> str:
  """Reads and checks everything in `folder`, then writes the workdir into `workdir`."""
  import jax

  from gen.diffusion import text_to_image

  cfgs = stable_diffusion.read_configs(folder)
  s = read_scheduler(folder)
  config = finish_config(workdir_config(cfgs, s), overrides)
  spec = data_spec(cfgs)
  sd = stable_diffusion.load(folder)  # Every tensor, checked against its config.json.
  pipeline = text_to_image.make(config, spec)
  abstract = jax.eval_shape(pipeline.init, jax.random.key(config.seed), spec.example_batch(1))
  want = jax.tree.map(lambda x: x.shape, abstract.params)
  got = jax.tree.map(lambda x: x.shape, sd.params)
  if want != got:  # (The loaders build the same modules: a guard, not a user error.)
    raise InputError(f"{folder}: the networks' params do not match model.text_to_image")
  n = save_workdir(workdir, config, spec, pipeline, sd.params)
  h, w, _ = spec.shape
  return (f"StableDiffusionPipeline from {folder}: {h}x{w} images, text width "
          f"{cfgs['text_encoder']['hidden_size']}, UNet block_out_channels "
          f"{list(cfgs['unet']['module']['block_out_channels'])} ({n:,} params); {s['class']} "
          f"as sampler {s['sampler']}, objective {s['objective']}; safety_checker and "
          "feature_extractor not loaded")


IMPORTER = Importer("a diffusers StableDiffusionPipeline folder (model_index.json, tokenizer/, "
                    "text_encoder/, vae/, unet/, scheduler/)", stable_diffusion.recognizes,
                    write)
