"""Decoder-only transformer language models (text and note-by-note music) with cached decoding."""

from gen.lm import hf
from gen.lm.data import TokenData as make_data
from gen.lm.pipeline import make

IMPORTERS = (hf.IMPORTER,)  # `gen import`: GPT-2 from a transformers folder.

__all__ = ["IMPORTERS", "make", "make_data"]
