"""The language models' data: token windows over a stream, with the run's tokenizer.

`TokenData(config)` reads a token source (`gen.lm.data.text`: `text:PATH`, `tfds:NAME`,
`jsb_chorales`) into `{"tokens": int32[B, seq_len + 1]}` batches (inputs and next-token
targets; no preprocessing). The tokenizer is built from the data (a char vocabulary, BPE
merges) or taken over from an earlier run's spec (`reuse`: a resumed run, `init_from`), and
travels in the spec (`token_spec`), so `gen sample` decodes with nothing but the workdir.
"""

from __future__ import annotations

from collections.abc import Sequence

from gen.core.data import Data
from gen.core.family import DataSpec
from gen.lm.data import text
from gen.lm.data import tokenizers as tok_lib

KIND = "tokens"


def token_spec(seq_len: int, tokenizer: tok_lib.Tokenizer | None = None, *,
               vocab_size: int = 0, end_id: int = -1, start_ids: Sequence[int] = ()) -> DataSpec:
  """The spec of windows of `seq_len + 1` tokens; vocabulary facts from `tokenizer` (or given,
  for tests and benchmarks that need no tokenizer)."""
  if tokenizer is not None:
    vocab_size, end_id = tokenizer.vocab_size, tokenizer.end_id
    start_ids = start_ids or tokenizer.start_ids
  extra = {"vocab_size": int(vocab_size), "end_id": int(end_id),
           "start_ids": [int(i) for i in start_ids]}
  ends = [int(i) for i in getattr(tokenizer, "end_ids", ())]
  if len(ends) > 1:  # Several tokens end a sample (end_id is the first).
    extra["end_ids"] = ends
  if tokenizer is not None:
    extra["tokenizer"] = tokenizer.to_json()
  return DataSpec((seq_len,), 0, "", KIND, {"tokens": ((seq_len + 1,), "int32")}, extra)


def tokenizer_of(spec: DataSpec) -> tok_lib.Tokenizer | None:
  """The tokenizer a spec carries (None for a spec made without one)."""
  d = spec.extra.get("tokenizer")
  return tok_lib.from_json(d) if d else None


def saved_tokenizer(dirs: Sequence[str]) -> tok_lib.Tokenizer | None:
  """The tokenizer of the first of `dirs` holding a run's spec with one."""
  for d in dirs:
    spec = DataSpec.load(d)
    tok = tokenizer_of(spec) if spec is not None else None
    if tok is not None:
      return tok
  return None


class TokenData(Data):
  """Token windows of `data.name`'s splits; the tokenizer as `self.tokenizer`."""

  def __init__(self, config, process_index: int | None = None, process_count: int | None = None,
               reuse: Sequence[str] = ()):
    super().__init__(config, process_index, process_count, reuse)
    self.seq_len = int(self.cfg.get("seq_len", 0))
    if self.seq_len <= 0:
      raise ValueError(f"{self.cfg.name} is a token source: set data.seq_len > 0")
    self.tokenizer = saved_tokenizer(self.reuse) or text.build_tokenizer(self.cfg)
    self.train_source = self.load(self.cfg.train_split, train=True)
    # Unconditional samples start from the start tokens (or, for a tokenizer without
    # one, from the first token of the training data).
    start = self.tokenizer.start_ids or [int(self.train_source.stream[0])]
    self.spec = token_spec(self.seq_len, self.tokenizer, start_ids=start)

  def load(self, split: str, train: bool):
    return text.load(self.cfg.name, split, self.cfg.dir, self.seq_len, self.tokenizer, train)

  @property
  def shape(self) -> tuple[int, ...]:
    return (self.seq_len,)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size
