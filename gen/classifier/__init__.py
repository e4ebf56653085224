"""Image classifiers whose penultimate features define gen's Fréchet distance per dataset."""

from gen.classifier.config import default_config
from gen.classifier.steps import make

__all__ = ["default_config", "make"]
