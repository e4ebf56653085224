"""Image classifiers whose penultimate features define gen's Fréchet distance per dataset."""

from gen.classifier.pipeline import make

__all__ = ["make"]
