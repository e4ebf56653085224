"""Preference pairs for DPO: a JSONL file, one `{"prompt", "chosen", "rejected"}` per line.

The three fields are text in the tokenizer's form (a chorale prompt like
`"72,67,64,48 "`; an empty prompt starts from the tokenizer's start token). The
continuations must extend the prompt: `encode(prompt + chosen)` starts with
`encode(prompt)`. Lines may instead (or also) give token ids, `prompt_ids`,
`chosen_ids`, `rejected_ids`, which are used as they are (they can hold an end token,
which text cannot); other keys (rewards, notes) are ignored.

Records are `{"chosen", "rejected": int32[seq_len + 1], "prompt_len": int32}`: the prompt
followed by the continuation, -1 after it. A continuation longer than the context is
cut to fit (both of a pair alike, so the longer one is not favoured by length alone).
The training split of DPO fine-tuning (`gen.lm.finetune`, `data.pairs`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from gen.core.data.sources import DataError
from gen.lm.data.tokenizers import Tokenizer


def _ids(rec: dict, key: str, tokenizer: Tokenizer, where: str) -> list[int] | None:
  ids = rec.get(f"{key}_ids")
  if ids is None:
    return None
  if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
    raise ValueError(f"{where}: '{key}_ids' must be a list of integers")
  bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
  if bad:
    raise ValueError(f"{where}: '{key}_ids' has ids outside the vocabulary of "
                     f"{tokenizer.vocab_size}: {bad[:5]}")
  return ids


def encode_pair(rec: dict, tokenizer: Tokenizer, where: str = "pair"):
  """(prompt ids, chosen ids, rejected ids) of one record."""
  try:
    prompt = _ids(rec, "prompt", tokenizer, where)
    conts = [_ids(rec, k, tokenizer, where) for k in ("chosen", "rejected")]
    if prompt is None or None in conts:
      for k in ("prompt", "chosen", "rejected"):
        if not isinstance(rec.get(k), str):
          raise ValueError(f"{where}: needs text fields 'prompt', 'chosen' and 'rejected' "
                           f"(or '{k}_ids'); '{k}' is missing")
      head = tokenizer.encode(rec["prompt"])
      if prompt is None:
        prompt = head or list(tokenizer.start_ids)
      for i, k in enumerate(("chosen", "rejected")):
        if conts[i] is None:
          try:
            full = tokenizer.encode(rec["prompt"] + rec[k])
          except ValueError as e:
            raise ValueError(f"{where}: prompt + {k} does not encode: {e} (chorale steps "
                             "are separated by spaces: end a chorale prompt with one)") from None
          if full[:len(head)] != head:
            raise ValueError(f"{where}: '{k}' does not continue the prompt's tokens")
          conts[i] = full[len(head):]
  except ValueError as e:  # TokenizerError is a ValueError.
    raise DataError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
  if not prompt:
    raise DataError(f"{where}: empty prompt and the tokenizer has no start token")
  if not conts[0] or not conts[1]:
    raise DataError(f"{where}: 'chosen' and 'rejected' must not be empty")
  return prompt, conts[0], conts[1]


class PairSource:
  """Random-access preference pairs, packed for a model with context `seq_len`."""

  kind = "tokens"
  num_classes = 0

  def __init__(self, path: str, seq_len: int, tokenizer: Tokenizer):
    if not os.path.isfile(path):
      raise DataError(f"missing preference pairs file {path} (data.pairs)")
    self.path, self.seq_len = path, seq_len
    width = seq_len + 1
    chosen, rejected, plens = [], [], []
    with open(path) as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        where = f"{path}:{n}"
        try:
          rec = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f"{where}: not JSON ({e})") from None
        if not isinstance(rec, dict):
          raise DataError(f"{where}: expected an object with prompt, chosen, rejected")
        prompt, good, bad = encode_pair(rec, tokenizer, where)
        if len(prompt) >= width:
          raise DataError(f"{where}: a prompt of {len(prompt)} tokens leaves no room in the "
                          f"context of {seq_len} tokens")
        keep = min(max(len(good), len(bad)), width - len(prompt))
        for out, cont in ((chosen, good), (rejected, bad)):
          row = np.full(width, -1, np.int32)
          seq = (prompt + cont[:keep])[:width]
          row[:len(seq)] = seq
          out.append(row)
        plens.append(len(prompt))
    if not plens:
      raise DataError(f"{path}: no preference pairs")
    self.chosen, self.rejected = np.stack(chosen), np.stack(rejected)
    self.prompt_len = np.asarray(plens, np.int32)
    self.stream = self.chosen[0][self.chosen[0] >= 0]  # Its first tokens, as a text stream's.

  @property
  def shape(self) -> tuple[int]:
    return (self.seq_len,)

  def __len__(self) -> int:
    return len(self.prompt_len)

  def __getitem__(self, i):
    i = int(i)
    return {"chosen": self.chosen[i], "rejected": self.rejected[i],
            "prompt_len": self.prompt_len[i]}

  def __repr__(self):
    return f"PairSource({self.path}, {len(self)} pairs, seq_len={self.seq_len})"
