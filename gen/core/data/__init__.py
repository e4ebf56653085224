"""Data sources and the grain input pipeline."""

from gen.core.data.pipeline import PREPROCESS, Data, postprocess, preprocess
from gen.core.data.sources import DataError, load

__all__ = ["PREPROCESS", "Data", "DataError", "load", "postprocess", "preprocess"]
