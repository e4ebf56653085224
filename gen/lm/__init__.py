"""Decoder-only transformer language models (text and note-by-note music) with cached decoding."""

from gen.lm import hf, hf_export, hf_llama, hf_lora
from gen.lm.config import default_config
from gen.lm.data import TokenData as make_data
from gen.lm.models import OLD_NORM_EPS
from gen.lm.steps import make

IMPORTERS = (hf.IMPORTER, hf_llama.IMPORTER)  # `gen import`: GPT-2, LLaMA & co. (transformers)
EXPORTERS = (hf_export.EXPORTER,)  # `gen export`: the same kinds, back to transformers.
LORA_FORMATS = (hf_lora.FORMAT,)  # `gen import --lora`, `gen export --lora`: PEFT adapters.
# What runs saved before a key existed had (a restart compares configs with these filled in).
KEYS_ADDED = {"model.norm_eps": OLD_NORM_EPS}

__all__ = ["EXPORTERS", "IMPORTERS", "KEYS_ADDED", "LORA_FORMATS", "default_config", "make", "make_data"]
