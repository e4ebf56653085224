"""Tokenizers for token sources, kept in the run's data spec so sampling needs only the workdir.

- `char`: one token per character, vocabulary = the sorted distinct characters of the
  text (nanoGPT's shakespeare_char convention: for Tiny Shakespeare '\\n' = 0, ' ' = 1, ...).
- `byte`: the 256 byte values of the UTF-8 encoding; any text encodes.
- `sentencepiece`: BPE trained locally on the training split with the `sentencepiece`
  package (no downloads); the model file is stored in the workdir.
  The model travels inside `to_json()`, base64-encoded.
- `chorale` (in `gen.lm.data.music`): note-by-note four-part music.
- `byte_bpe` (in `gen.lm.data.bpe`): GPT-2's byte-level BPE from a vocab.json / merges.txt pair.

Every tokenizer has `encode(str) -> list[int]`, `decode(ids) -> str`, `vocab_size`,
`start_ids` (what an empty prompt starts from; empty when there is no such token),
`end_id` (-1: none), `to_json()`, `write_samples(rows, path)` and `preview(rows)`. A
tokenizer class registers itself under its `name` with `@register`, so `from_json` finds it.
"""

from __future__ import annotations

import abc
import base64
import os
import tempfile

import numpy as np

TOKENIZERS: dict[str, type] = {}


def register(cls):
  """Class decorator: `from_json` builds tokenizers of type `cls.name` with `cls.from_json`."""
  TOKENIZERS[cls.name] = cls
  return cls


class TokenizerError(ValueError):
  """Text cannot be encoded (e.g. characters outside a char vocabulary)."""


class Tokenizer(abc.ABC):
  name = ""
  end_id = -1

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int: ...

  @property
  def start_ids(self) -> list[int]:
    return []

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]: ...

  @abc.abstractmethod
  def decode(self, ids) -> str: ...

  @abc.abstractmethod
  def to_json(self) -> dict: ...

  @classmethod
  def from_json(cls, d: dict) -> Tokenizer:
    return cls()

  def encode_array(self, text: str) -> np.ndarray:
    """`encode` as int32 [N] (tokenizers override it with a vectorized version)."""
    return np.asarray(self.encode(text), np.int32)

  def write_samples(self, rows: list[list[int]], path: str) -> list[str]:
    """Writes decoded samples to `path` (.txt), separated by rules; returns the paths."""
    path = os.path.splitext(path)[0] + ".txt"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
      for i, row in enumerate(rows):
        f.write(f"---------- sample {i} ----------\n{self.decode(row)}\n")
    return [path]

  def preview(self, rows: list[list[int]]) -> str:
    """The decoded samples, separated by rules (what `gen sample` prints)."""
    return "\n".join(f"---------- sample {i} ----------\n{self.decode(r)}"
                     for i, r in enumerate(rows))


@register
class CharTokenizer(Tokenizer):
  name = "char"

  def __init__(self, vocab: list[str]):
    self.vocab = list(vocab)
    self.index = {c: i for i, c in enumerate(self.vocab)}

  @classmethod
  def build(cls, text: str) -> CharTokenizer:
    return cls(sorted(set(text)))

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def start_ids(self) -> list[int]:
    # Unconditional samples start after a newline, as nanoGPT's sample.py does.
    return [self.index["\n"]] if "\n" in self.index else []

  def encode(self, text: str) -> list[int]:
    missing = sorted({c for c in text if c not in self.index})
    if missing:
      raise TokenizerError(
          f"characters not in the {self.vocab_size}-character vocabulary: "
          f"{', '.join(repr(c) for c in missing[:20])}")
    return [self.index[c] for c in text]

  def encode_array(self, text: str) -> np.ndarray:
    """Vectorized `encode` through a code point -> id table (a megabyte in well under 1 s)."""
    lut = np.full(max(map(ord, self.vocab)) + 1, -1, np.int32)
    lut[[ord(c) for c in self.vocab]] = np.arange(self.vocab_size)
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    if codes.size and (codes.max() >= len(lut) or (lut[np.minimum(codes, len(lut) - 1)] < 0).any()):
      self.encode(text)  # Raises, naming the unknown characters.
    return lut[codes]

  def decode(self, ids) -> str:
    return "".join(self.vocab[i] for i in ids if 0 <= i < self.vocab_size)

  def to_json(self) -> dict:
    return {"type": self.name, "vocab": self.vocab}

  @classmethod
  def from_json(cls, d: dict) -> CharTokenizer:
    return cls(d["vocab"])


@register
class ByteTokenizer(Tokenizer):
  name = "byte"

  @property
  def vocab_size(self) -> int:
    return 256

  @property
  def start_ids(self) -> list[int]:
    return [ord("\n")]

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def encode_array(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

  def to_json(self) -> dict:
    return {"type": self.name}


@register
class SentencePieceTokenizer(Tokenizer):
  """BPE from the `sentencepiece` package; `model` is the serialized model proto."""

  name = "sentencepiece"

  def __init__(self, model: bytes):
    import sentencepiece as spm

    self.model = model
    self.sp = spm.SentencePieceProcessor(model_proto=model)
    self.end_id = -1  # Text is a stream: generation stops at max_new_tokens.

  @classmethod
  def train(cls, text: str, vocab_size: int) -> SentencePieceTokenizer:
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "train.txt")
      with open(path, "w") as f:
        f.write(text)
      prefix = os.path.join(tmp, "sp")
      spm.SentencePieceTrainer.train(
          input=path, model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
          character_coverage=1.0, byte_fallback=True, split_digits=True,
          max_sentence_length=1 << 16, num_threads=1, minloglevel=2, hard_vocab_limit=False,
          input_sentence_size=2_000_000, shuffle_input_sentence=True,  # Bounded for big corpora.
          # Keep the text byte-exact: no normalization, whitespace as is, and a piece
          # for the newline (training reads lines, so it would never see one).
          normalization_rule_name="identity", remove_extra_whitespaces=False,
          user_defined_symbols=["\n"])
      with open(prefix + ".model", "rb") as f:
        return cls(f.read())

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  @property
  def start_ids(self) -> list[int]:
    return [self.sp.bos_id()] if self.sp.bos_id() >= 0 else []

  def encode(self, text: str) -> list[int]:
    return list(self.sp.encode(text))

  def decode(self, ids) -> str:
    n = self.vocab_size
    return self.sp.decode([int(i) for i in ids if 0 <= i < n])

  def to_json(self) -> dict:
    return {"type": self.name, "model": base64.b64encode(self.model).decode("ascii")}

  @classmethod
  def from_json(cls, d: dict) -> SentencePieceTokenizer:
    return cls(base64.b64decode(d["model"]))


def build(kind: str, text: str, vocab_size: int = 0) -> Tokenizer:
  """A text tokenizer of `kind` for `text` (the char vocabulary / BPE merges come from it)."""
  if kind == "char":
    return CharTokenizer.build(text)
  if kind == "byte":
    return ByteTokenizer()
  if kind == "sentencepiece":
    if vocab_size <= 0:
      raise ValueError("data.tokenizer='sentencepiece' needs data.vocab_size > 0")
    return SentencePieceTokenizer.train(text, vocab_size)
  raise ValueError(f"data.tokenizer must be char, byte or sentencepiece, got '{kind}'")


def from_json(d: dict) -> Tokenizer:
  """The tokenizer `to_json` described."""
  kind = d.get("type")
  if kind not in TOKENIZERS:
    raise ValueError(f"unknown tokenizer type {kind!r} (registered: {', '.join(sorted(TOKENIZERS))})")
  return TOKENIZERS[kind].from_json(d)


def pad_prompts(prompts: list[list[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token lists into `[B, max_len]` int32 and their lengths `[B]`."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise TokenizerError("every prompt needs at least one token")
  lens = np.array([len(p) for p in prompts], np.int32)
  out = np.full((len(prompts), int(lens.max())), pad, np.int32)
  for i, p in enumerate(prompts):
    out[i, :len(p)] = p
  return out, lens
