"""Diffusion models: DDPM eps / v / x0, EDM and flow matching; UNet and DiT; whole-loop samplers.

See `gen.diffusion.objectives` for the processes and what the network predicts,
`gen.diffusion.samplers` for the samplers, `gen.diffusion.pipeline` for training (denoisers,
and noise-conditional classifiers with `model.kind = "classifier"`), and
`gen.diffusion.guidance` for classifier-free and classifier guidance.
"""

from gen.diffusion.pipeline import make

# What runs saved before a key existed had (a restart compares configs with these filled in).
KEYS_ADDED = {"model.dtype": "float32"}

__all__ = ["KEYS_ADDED", "make"]
