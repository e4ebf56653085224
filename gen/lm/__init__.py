"""Decoder-only transformer language models (text and note-by-note music) with cached decoding."""

from gen.lm.pipeline import make

__all__ = ["make"]
