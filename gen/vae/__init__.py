"""Variational autoencoders (Kingma & Welling 2014) with IWAE evaluation (Burda et al. 2016)."""

from gen.vae.config import default_config
from gen.vae.steps import make

__all__ = ["default_config", "make"]
