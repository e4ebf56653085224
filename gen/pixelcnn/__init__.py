"""Gated PixelCNN (van den Oord et al. 2016) with a PixelCNN++ head (Salimans et al. 2017)."""

from gen.pixelcnn.pipeline import make

__all__ = ["make"]
