"""The language models' data: token sources, tokenizers, music and preference pairs."""

from gen.lm.data import (bpe, music, pairs, text, tokenizer_json,  # noqa: F401  (registers sources)
                         tokenizers)
from gen.lm.data.input_pipeline import KIND, TokenData, saved_tokenizer, token_spec, tokenizer_of

__all__ = ["KIND", "TokenData", "bpe", "music", "pairs", "saved_tokenizer", "text",
           "token_spec", "tokenizer_json", "tokenizer_of", "tokenizers"]
