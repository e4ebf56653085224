"""Decoder-only transformer language models (text and note-by-note music) with cached decoding."""

from gen.lm.config import default_config
from gen.lm import hf
from gen.lm.data import TokenData as make_data
from gen.lm.models import OLD_NORM_EPS
from gen.lm.steps import make

IMPORTERS = (hf.IMPORTER,)  # `gen import`: GPT-2 from a transformers folder.
# What runs saved before a key existed had (a restart compares configs with these filled in).
KEYS_ADDED = {"model.norm_eps": OLD_NORM_EPS}

__all__ = ["default_config", "IMPORTERS", "KEYS_ADDED", "make", "make_data"]
