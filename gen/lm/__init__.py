"""Decoder-only transformer language models (text and note-by-note music) with cached decoding."""

from gen.lm.data import TokenData as make_data
from gen.lm.pipeline import make

__all__ = ["make", "make_data"]
