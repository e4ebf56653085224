"""Token sources for language and music models: windows over one token stream.

A split is one long stream of token ids (a text file tokenized, or chorales
serialized end to end). Records are windows of `seq_len + 1` tokens (inputs and their
next-token targets), as nanoGPT draws them:

- training: a window starts at every offset, and the grain pipeline shuffles them, so
  each batch holds random contiguous windows;
- evaluation: non-overlapping windows from the start of the split, so every token of
  the split (but the last partial window) is predicted exactly once and the mean is
  the split's per-token loss. Each position sees a context of 0..seq_len-1 tokens, as
  in nanoGPT's random-window estimate of the same quantity.

Sources:
- `text:PATH`: a UTF-8 text file (a relative PATH not found from the working directory
  is looked up in `data.dir` / `$GEN_DATA_DIR`); `train` is its first 90%, `val` the
  last 10% (nanoGPT's contiguous split, so val losses are comparable). A split may be
  cut by percent, TFDS-style: `val[:50%]` is the first half of `val`, `train[10%:20%]`
  a tenth of `train` (e.g. to fine-tune on part of a text and evaluate on the rest).
- `tfds:NAME` with a `text` feature (tiny_shakespeare, lm1b): the split's records
  joined by newlines (read into memory; lm1b is large).
- `jsb_chorales`: see `gen.lm.data.music`.

Each kind of source registers itself (`register`) with a function that reads a split's
token stream and one that builds the tokenizer its config asks for.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable

import numpy as np

from gen.core.data.sources import DataError, resolve_base
from gen.lm.data import tokenizers as tok_lib

TEXT_SPLITS = ("train", "val")
TRAIN_FRACTION = 0.9


class TokenWindows:
  """Random-access windows of `seq_len + 1` tokens: `{"tokens": int32[seq_len + 1]}`."""

  kind = "tokens"
  num_classes = 0

  def __init__(self, stream: np.ndarray, seq_len: int, tokenizer: tok_lib.Tokenizer,
               name: str, overlapping: bool, extra_metrics: dict[str, float] | None = None):
    self.stream = np.asarray(stream, np.int32)
    self.seq_len, self.tokenizer, self.name = seq_len, tokenizer, name
    self.overlapping = overlapping
    self._extra = extra_metrics or {}
    if seq_len <= 0:
      raise ValueError(f"data.seq_len must be positive, got {seq_len}")
    if len(self.stream) < seq_len + 1:
      raise DataError(f"{name}: {len(self.stream)} tokens is fewer than one window of "
                      f"data.seq_len + 1 = {seq_len + 1}")

  @property
  def shape(self) -> tuple[int]:
    return (self.seq_len,)

  def __len__(self) -> int:
    n = len(self.stream)
    return n - self.seq_len if self.overlapping else (n - 1) // self.seq_len

  def __getitem__(self, i):
    start = int(i) if self.overlapping else int(i) * self.seq_len
    return {"tokens": self.stream[start:start + self.seq_len + 1]}

  def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
    """Perplexity, and the loss per character / per time step where the source knows it."""
    if "loss" not in metrics:
      return {}
    out = {"perplexity": math.exp(min(metrics["loss"], 700.0))}
    for name, factor in self._extra.items():
      out[name] = metrics["loss"] * factor
    return out

  def __repr__(self):
    return f"TokenWindows({self.name}, {len(self.stream):,} tokens, seq_len={self.seq_len})"


def read_text(name: str, split: str, data_dir: str = "") -> str:
  """The raw text of split `split` of a `text:PATH` or `tfds:NAME` source."""
  cut = re.fullmatch(r"(\w+)\[(\d*)%?:(\d*)%?\]", split)
  if cut:  # `split[a%:b%]`: a contiguous part of the split.
    whole = read_text(name, cut.group(1), data_dir)
    a, b = int(cut.group(2) or 0), int(cut.group(3) or 100)
    if not 0 <= a < b <= 100:
      raise DataError(f"split '{split}': percentages must satisfy 0 <= start < end <= 100")
    return whole[len(whole) * a // 100:len(whole) * b // 100]
  if name.startswith("text:"):
    path = name[len("text:"):]
    if not os.path.isfile(path) and not os.path.isabs(path):  # Relative to the data folder.
      path = os.path.join(resolve_base(name, data_dir, path), path)
    if not os.path.isfile(path):
      raise DataError(f"missing text file {path}")
    try:
      with open(path, encoding="utf-8") as f:
        text = f.read()
    except UnicodeDecodeError as e:
      raise DataError(f"{path} is not UTF-8 text ({e})") from e
    n = int(TRAIN_FRACTION * len(text))
    if split not in TEXT_SPLITS:
      raise DataError(f"text files have splits 'train' (first 90%) and 'val' (or a part, "
                      f"like 'val[:50%]'), not '{split}'")
    return text[:n] if split == "train" else text[n:]
  if name.startswith("tfds:"):
    import tensorflow_datasets as tfds

    ds_name = name[len("tfds:"):]
    try:
      source = tfds.data_source(ds_name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:
      raise DataError(
          f"could not open TFDS dataset '{ds_name}' split '{split}': {type(e).__name__}: {e}. "
          f"Prepare it first with `tfds build {ds_name}` on a machine with network.") from e
    parts = []
    for i in range(len(source)):
      t = source[i]["text"]
      parts.append(t.decode("utf-8") if isinstance(t, bytes) else str(t))
    return "\n".join(parts)
  raise DataError(f"'{name}' is not a text source (text:PATH or tfds:NAME)")


@dataclasses.dataclass(frozen=True)
class TokenSource:
  """A kind of token source: `stream(name, split, data_dir, tokenizer) -> (int32[N], {metric:
  factor})` reads a split (the factors turn nats per token into derived metrics), and
  `tokenizer(data_config)` builds the tokenizer a config asks for from its data."""

  stream: Callable[..., tuple[np.ndarray, dict[str, float]]]
  tokenizer: Callable[..., tok_lib.Tokenizer]


SOURCES: dict[str, TokenSource] = {}


def register(name: str, source: TokenSource) -> None:
  """Registers a source called `name`, or every `name...` when `name` ends with ':'."""
  SOURCES[name] = source


def lookup(name: str) -> TokenSource:
  prefix = name.split(":", 1)[0] + ":" if ":" in name else None
  if name in SOURCES:
    return SOURCES[name]
  if prefix in SOURCES:
    return SOURCES[prefix]
  known = ", ".join(k + "PATH" if k == "text:" else k + "NAME" if k.endswith(":") else k
                    for k in sorted(SOURCES))
  raise DataError(f"unknown token source '{name}' (known: {known})")


def _text_stream(name, split, data_dir, tokenizer):
  text = read_text(name, split, data_dir)
  stream = tokenizer.encode_array(text)
  return stream, {"nll_per_char": (len(stream) - 1) / max(len(text) - 1, 1)}


def _text_tokenizer(cfg) -> tok_lib.Tokenizer:
  """The tokenizer a text config asks for, built from its data (char vocab, BPE merges)."""
  kind = cfg.get("tokenizer", "char")
  if kind == "byte":
    return tok_lib.ByteTokenizer()
  train = read_text(cfg.name, cfg.train_split, cfg.dir)
  if kind == "char":  # Every character of both splits, so evaluation never meets an unknown.
    return tok_lib.build(kind, train + read_text(cfg.name, cfg.eval_split, cfg.dir))
  return tok_lib.build(kind, train, cfg.get("vocab_size", 0))


register("text:", TokenSource(_text_stream, _text_tokenizer))
register("tfds:", TokenSource(_text_stream, _text_tokenizer))


def build_tokenizer(cfg) -> tok_lib.Tokenizer:
  """The tokenizer the token source of data config `cfg` asks for."""
  return lookup(cfg.name).tokenizer(cfg)


def load(name: str, split: str, data_dir: str, seq_len: int, tokenizer: tok_lib.Tokenizer,
         train: bool) -> TokenWindows:
  """Windows over split `split` of a token source, encoded with `tokenizer`."""
  stream, extra = lookup(name).stream(name, split, data_dir, tokenizer)
  return TokenWindows(stream, seq_len, tokenizer, f"{name}/{split}", train, extra)
