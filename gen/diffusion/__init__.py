"""Diffusion models: DDPM eps / v / x0, EDM and flow matching; UNet and DiT; whole-loop samplers.

Three kinds of model train here, one module each, picked by `model.kind`:

| kind          | module              | what it learns                                         |
|---------------|---------------------|--------------------------------------------------------|
| `denoiser`    | `denoiser`          | the diffusion model (on images, or an autoencoder's latents) |
| `classifier`  | `noisy_classifier`  | p_t(y | x), to guide a denoiser                        |
| `autoencoder` | `autoencoder`       | the KL autoencoder whose latents a latent run diffuses  |
| `text_to_image` | `text_to_image`   | Stable Diffusion 1.x / 2.x (imported; fine-tuned with LoRA or the UNet in full): prompts to images |
| `text_denoiser` | `text_denoiser`   | text to image from scratch: captions to images (`text`) |

The math they share: `process` (the records), `objectives` (continuous processes, what the
network predicts), `discrete` (diffusers' tables and spacings); backbones in `models` and
`networks`; sampling in `sampling` (flags, guidance, the process's sampler table), `samplers`
(continuous processes) and `schedulers` (diffusers' schedulers on a discrete process);
`guidance`, `latent`. `diffusers/` holds diffusers' layouts and the `gen import` of their
folders. `default_config()` (`gen.diffusion.config`) holds every key with its default.
"""

from gen.core.config import ConfigError
from gen.diffusion import (autoencoder, denoiser, latent, noisy_classifier, text,
                           text_denoiser, text_to_image)
from gen.diffusion.config import default_config
from gen.diffusion.diffusers import importer, sd_importer, sd_lora

KINDS = {"denoiser": denoiser.make, "classifier": noisy_classifier.make,
         "autoencoder": autoencoder.make, "text_to_image": text_to_image.make,
         "text_denoiser": text_denoiser.make}
LATENT_KINDS = ("denoiser", "text_denoiser")  # The kinds that may train on latents.
# `gen import`: diffusers' UNet2DModel and its scheduler; a Stable Diffusion pipeline folder.
IMPORTERS = (importer.IMPORTER, sd_importer.IMPORTER)
# `gen import --lora` on a text_to_image run: diffusers' and kohya's Stable Diffusion LoRA files.
LORA_FORMATS = (sd_lora.FORMAT,)

# What runs saved before a key existed had (a restart compares configs with these filled in).
KEYS_ADDED = {"model.dtype": "float32"}


def make(config, spec):
  """The pipeline of `config`'s `model.kind` (a denoiser unless it says otherwise)."""
  kind = config.model.kind
  if kind not in KINDS:
    raise ConfigError(f"model.kind must be one of {', '.join(KINDS)}, got '{kind}'")
  if kind not in LATENT_KINDS and latent.enabled(config):
    raise ConfigError(f"latent.autoencoder trains a denoiser on latents; model.kind='{kind}' "
                      "works on images: leave latent.autoencoder empty")
  return KINDS[kind](config, spec)


def make_data(config, process_index=None, process_count=None, reuse=()):
  """The family's data: captioned images for a text_denoiser (word tokens) or a text_to_image
  run (its CLIP tokenizer's), else (latent) images."""
  kind = config.model.kind
  if kind != "text_to_image" and config.data.get("resolution", 0):
    raise ConfigError(f"data.resolution resizes the images of model.kind='text_to_image' runs; "
                      f"this one is '{kind}': set it to 0")
  build = {"text_denoiser": text.make_data, "text_to_image": text_to_image.make_data}.get(
      kind, latent.make_data)
  return build(config, process_index=process_index, process_count=process_count, reuse=reuse)


__all__ = ["IMPORTERS", "KEYS_ADDED", "KINDS", "LORA_FORMATS", "default_config", "make",
           "make_data"]
