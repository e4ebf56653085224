"""Diffusion models: DDPM eps / v / x0, EDM and flow matching; UNet and DiT; whole-loop samplers.

See `gen.diffusion.objectives` for the processes and what the network predicts,
`gen.diffusion.samplers` for the samplers, `gen.diffusion.pipeline` for training (denoisers,
and noise-conditional classifiers with `model.kind = "classifier"`),
`gen.diffusion.guidance` for classifier-free and classifier guidance, `gen.diffusion.autoencoder`
and `gen.diffusion.latent` for latent diffusion (an autoencoder's latents as the canvas), and
`gen.diffusion.hf` for diffusers' UNet2DModel as a workdir (`gen import`).
"""

from gen.diffusion import hf
from gen.diffusion.latent import make_data
from gen.diffusion.pipeline import make

IMPORTERS = (hf.IMPORTER,)  # `gen import`: diffusers' UNet2DModel (DDPM layout) and scheduler.

# What runs saved before a key existed had (a restart compares configs with these filled in).
KEYS_ADDED = {"model.dtype": "float32"}

__all__ = ["IMPORTERS", "KEYS_ADDED", "make", "make_data"]
