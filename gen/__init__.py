"""gen: generative models in JAX on one small core."""

__version__ = "0.1.0"
