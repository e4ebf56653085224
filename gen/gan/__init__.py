"""Generative adversarial networks: DCGAN-style networks trained with a modern recipe.

Non-saturating or hinge loss, lazy R1, spectral normalization, two-timescale Adam, an EMA
generator for sampling, DiffAugment, and class conditioning (conditional batch norm in G,
a projection discriminator).
"""

from gen.gan.config import default_config
from gen.gan.steps import GANState, make

__all__ = ["default_config", "GANState", "make"]
