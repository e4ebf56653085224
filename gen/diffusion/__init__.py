"""Diffusion models: DDPM eps / v / x0, EDM and flow matching; UNet and DiT; whole-loop samplers.

See `gen.diffusion.objectives` for the processes and what the network predicts,
`gen.diffusion.samplers` for the samplers, `gen.diffusion.pipeline` for training (denoisers,
and noise-conditional classifiers with `model.kind = "classifier"`), and
`gen.diffusion.guidance` for classifier-free and classifier guidance.
"""

from gen.diffusion.pipeline import make

__all__ = ["make"]
