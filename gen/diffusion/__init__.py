"""Diffusion models: DDPM eps / v / x0, EDM and flow matching; UNet and DiT; whole-loop samplers.

See `gen.diffusion.objectives` for the processes and what the network predicts,
`gen.diffusion.samplers` for the samplers, `gen.diffusion.pipeline` for training and
classifier-free guidance.
"""

from gen.diffusion.pipeline import make

__all__ = ["make"]
