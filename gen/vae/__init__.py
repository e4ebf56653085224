"""Variational autoencoders (Kingma & Welling 2014) with IWAE evaluation (Burda et al. 2016)."""

from gen.vae.pipeline import make

__all__ = ["make"]
