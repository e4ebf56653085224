"""Data sources and the grain input pipeline."""

from gen.core.data import captions  # Registers `captions:NAME`.
from gen.core.data.input_pipeline import PREPROCESS, Data, ImageData, postprocess, preprocess
from gen.core.data.sources import DataError, load, register

__all__ = ["PREPROCESS", "Data", "DataError", "ImageData", "captions", "load", "postprocess",
           "preprocess", "register"]
