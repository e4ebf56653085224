"""Gated PixelCNN (van den Oord et al. 2016) with a PixelCNN++ head (Salimans et al. 2017)."""

from gen.pixelcnn.config import default_config
from gen.pixelcnn.steps import make

__all__ = ["default_config", "make"]
