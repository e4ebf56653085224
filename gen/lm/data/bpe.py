"""GPT-2's byte-level BPE from a `vocab.json` / `merges.txt` pair, through the `tokenizers` library.

Text is split with GPT-2's pre-tokenizer pattern into words (a leading space stays with its
word), each word's UTF-8 bytes are mapped to printable characters (GPT-2's byte-to-unicode
table, so a space is `Ġ`), and the merges are applied in their order. Special tokens (GPT-2's
`<|endoftext|>`) in the text are recognized whole. Decoding maps the characters back to bytes;
invalid UTF-8 becomes U+FFFD, as in transformers' `errors="replace"`.

The vocabulary and merges travel in `to_json()`, so a run's spec alone rebuilds the tokenizer.
`vocab_size` may be larger than the vocabulary (a model whose embedding table is padded);
ids beyond the vocabulary decode to nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from gen.lm.data.tokenizers import Tokenizer, register


class BPEFileError(ValueError):
  """A vocab.json / merges.txt that does not make a byte-level BPE; names the file."""


def read_files(vocab_path: str, merges_path: str) -> tuple[dict[str, int], list[str]]:
  """The vocabulary (`{token: id}`) and merges (`"a b"` lines) of a GPT-2 tokenizer folder,
  checked: ids unique, every merge's parts and result in the vocabulary."""
  for path in (vocab_path, merges_path):
    if not os.path.isfile(path):
      raise BPEFileError(f"{path}: missing (a byte-level BPE needs vocab.json and merges.txt)")
  try:
    with open(vocab_path, encoding="utf-8") as f:
      vocab = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise BPEFileError(f"{vocab_path}: not a JSON vocabulary ({e})") from None
  if not isinstance(vocab, dict) or not all(
      isinstance(k, str) and type(v) is int and v >= 0 for k, v in vocab.items()):
    raise BPEFileError(f"{vocab_path}: expected an object of token -> non-negative id")
  if len(set(vocab.values())) != len(vocab):
    raise BPEFileError(f"{vocab_path}: two tokens share an id")
  merges = []
  with open(merges_path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      line = line.rstrip("\n")
      if (n == 1 and line.startswith("#version")) or not line:
        continue
      parts = line.split(" ")
      if len(parts) != 2:
        raise BPEFileError(f"{merges_path} line {n}: expected two tokens, got {line!r}")
      for token in (*parts, parts[0] + parts[1]):
        if token not in vocab:
          raise BPEFileError(f"{merges_path} line {n}: {token!r} is not in {vocab_path}")
      merges.append(line)
  return vocab, merges


def read_tokenizer_json(path: str) -> tuple[dict[str, int], list[str], list[str]]:
  """Vocabulary, merges and special tokens of a `tokenizers` file (`tokenizer.json`, what
  transformers 5 saves instead of vocab.json / merges.txt) holding a byte-level BPE."""
  try:
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
  except (OSError, ValueError, UnicodeDecodeError) as e:
    raise BPEFileError(f"{path}: not a readable tokenizer file ({e})") from None
  model = d.get("model") or {}

  def refuse(field, value, want):
    raise BPEFileError(f"{path}: {field}={value!r} is not supported (a byte-level BPE has {want})")

  if model.get("type") != "BPE":
    refuse("model.type", model.get("type"), "'BPE'")
  for key, want in (("continuing_subword_prefix", ""), ("end_of_word_suffix", ""),
                    ("byte_fallback", False), ("dropout", None)):
    if model.get(key) not in (want, None):
      refuse(f"model.{key}", model.get(key), repr(want))
  if d.get("normalizer") is not None:
    refuse("normalizer", d["normalizer"].get("type"), "none")
  pre = d.get("pre_tokenizer") or {}
  if (pre.get("type") != "ByteLevel" or pre.get("add_prefix_space")
      or not pre.get("use_regex", True)):
    refuse("pre_tokenizer", pre, "ByteLevel without add_prefix_space")
  if (d.get("decoder") or {}).get("type") != "ByteLevel":
    refuse("decoder.type", (d.get("decoder") or {}).get("type"), "'ByteLevel'")
  vocab = dict(model.get("vocab") or {})
  merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
  special = []
  for tok in d.get("added_tokens") or []:
    content, i = tok["content"], int(tok["id"])
    if vocab.get(content, i) != i or (content not in vocab and i in vocab.values()):
      raise BPEFileError(f"{path}: added token {content!r} has id {i}, which the "
                         "vocabulary gives to another token")
    vocab[content] = i
    special.append(content)
  for n, m in enumerate(merges):
    a, _, b = m.partition(" ")
    for token in (a, b, a + b):
      if token not in vocab:
        raise BPEFileError(f"{path}: merge {n} ({m!r}): {token!r} is not in the vocabulary")
  return vocab, merges, special


@register
class ByteBPETokenizer(Tokenizer):
  """GPT-2's tokenizer: `vocab` maps tokens to ids, `merges` are `"a b"` in priority order,
  `special` the tokens matched whole (they must be in `vocab`)."""

  name = "byte_bpe"

  def __init__(self, vocab: Mapping[str, int], merges: Sequence[str],
               special: Sequence[str] = (), vocab_size: int = 0,
               start_ids: Sequence[int] = (), end_id: int = -1):
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    self.vocab = dict(vocab)
    self.merges = list(merges)
    self.special = list(special)
    missing = [s for s in self.special if s not in self.vocab]
    if missing:
      raise ValueError(f"special tokens not in the vocabulary: {missing}")
    self._size = max(int(vocab_size), max(self.vocab.values(), default=-1) + 1)
    self._start = [int(i) for i in start_ids]
    self.end_id = int(end_id)
    bpe = models.BPE(vocab=self.vocab, merges=[tuple(m.split(" ")) for m in self.merges],
                     dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                     fuse_unk=False)
    self.backend = Backend(bpe)
    self.backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    self.backend.decoder = decoders.ByteLevel()
    if self.special:
      self.backend.add_special_tokens(self.special)

  @classmethod
  def from_files(cls, vocab_path: str, merges_path: str, **kw) -> ByteBPETokenizer:
    vocab, merges = read_files(vocab_path, merges_path)
    return cls(vocab, merges, **kw)

  @property
  def vocab_size(self) -> int:
    return self._size

  @property
  def start_ids(self) -> list[int]:
    return list(self._start)

  def encode(self, text: str) -> list[int]:
    return list(self.backend.encode(text, add_special_tokens=False).ids)

  def encode_array(self, text: str) -> np.ndarray:
    return np.asarray(self.encode(text), np.int32)

  def decode(self, ids) -> str:
    known = [int(i) for i in ids if 0 <= int(i) < self._size]
    return self.backend.decode(known, skip_special_tokens=False)

  def to_json(self) -> dict:
    return {"type": self.name, "vocab": self.vocab, "merges": self.merges,
            "special": self.special, "vocab_size": self._size, "start_ids": self._start,
            "end_id": self.end_id}

  @classmethod
  def from_json(cls, d: dict) -> ByteBPETokenizer:
    return cls(d["vocab"], d["merges"], d.get("special", ()), d.get("vocab_size", 0),
               d.get("start_ids", ()), d.get("end_id", -1))
