"""Any `tokenizer.json` (the `tokenizers` library's file, what transformers saves), run by that
library: byte-level BPE (GPT-2, Qwen, LLaMA 3), SentencePiece conversions (LLaMA 2, Mistral,
Gemma: "▁" for spaces, byte fallback), WordPiece or Unigram alike.

`encode` is transformers' `tokenizer(text)["input_ids"]`: the file's normalizer, pre-tokenizer,
model and post-processor (which adds LLaMA's `<s>`), special tokens matched whole. `decode` is
transformers' `tokenizer.decode(ids)`: special tokens kept. The file travels in `to_json()`,
so a run's spec alone rebuilds the tokenizer.

`start_ids` (what an empty prompt starts from) is the start token when there is one; `end_ids`
are the tokens that end a sample (generation_config.json may list several, as LLaMA 3's
`<|eot_id|>` and `<|end_of_text|>`); `end_id` is the first of them. `chat_template` is the
tokenizer's Jinja chat template, when it has one: `encode_chat(messages)` renders a conversation
with it as transformers' `apply_chat_template(messages, add_generation_prompt=True)` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from gen.lm.data.tokenizers import Tokenizer, TokenizerError, register


@register
class JSONTokenizer(Tokenizer):
  name = "tokenizer_json"

  def __init__(self, spec: str, vocab_size: int = 0, start_ids: Sequence[int] = (),
               end_ids: Sequence[int] = (), pad_id: int = -1, chat_template: str = "",
               special: dict | None = None):
    from tokenizers import Tokenizer as Backend

    self.spec = spec
    self.backend = Backend.from_str(spec)
    top = max(self.backend.get_vocab(with_added_tokens=True).values(), default=-1)
    self._size = max(int(vocab_size), top + 1)
    self._start = [int(i) for i in start_ids]
    self.end_ids = [int(i) for i in end_ids]
    self.end_id = self.end_ids[0] if self.end_ids else -1
    self.pad_id = int(pad_id)
    self.chat_template = chat_template or ""
    self.special = dict(special or {})  # {bos,eos,pad,unk}_token strings, for chat templates.

  @property
  def vocab_size(self) -> int:
    return self._size

  @property
  def start_ids(self) -> list[int]:
    return list(self._start)

  def encode(self, text: str) -> list[int]:
    return list(self.backend.encode(text, add_special_tokens=True).ids)

  def encode_array(self, text: str) -> np.ndarray:
    return np.asarray(self.encode(text), np.int32)

  def decode(self, ids) -> str:
    n = self.backend.get_vocab_size(with_added_tokens=True)
    known = [int(i) for i in ids if 0 <= int(i) < n]
    return self.backend.decode(known, skip_special_tokens=False)

  def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """The conversation as the chat template writes it, as transformers' apply_chat_template
    renders it (jinja2's sandbox, trim_blocks and lstrip_blocks, loop controls, its
    `raise_exception`, `tojson` and `strftime_now`; the special tokens as variables)."""
    import datetime

    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not self.chat_template:
      raise TokenizerError("this tokenizer has no chat template (tokenizer_config.json's "
                           "chat_template, or chat_template.jinja)")

    def raise_exception(message):
      raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
      return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                        sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
    try:
      return env.from_string(self.chat_template).render(
          messages=list(messages), add_generation_prompt=add_generation_prompt, **self.special)
    except TemplateError as e:
      raise TokenizerError(f"the chat template failed: {e}") from None

  def encode_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
    """`render_chat` encoded without the post-processor's tokens (the template writes its own),
    as apply_chat_template(tokenize=True)."""
    text = self.render_chat(messages, add_generation_prompt)
    return list(self.backend.encode(text, add_special_tokens=False).ids)

  def to_json(self) -> dict:
    return {"type": self.name, "tokenizer": self.spec, "vocab_size": self._size,
            "start_ids": self._start, "end_ids": self.end_ids, "pad_id": self.pad_id,
            "chat_template": self.chat_template, "special": self.special}

  @classmethod
  def from_json(cls, d: dict) -> JSONTokenizer:
    return cls(d["tokenizer"], d.get("vocab_size", 0), d.get("start_ids", ()),
               d.get("end_ids", ()), d.get("pad_id", -1), d.get("chat_template", ""),
               d.get("special"))

  @classmethod
  def from_file(cls, path: str, **kw) -> JSONTokenizer:
    with open(path, encoding="utf-8") as f:
      spec = f.read()
    json.loads(spec)  # A ValueError for a file that is not JSON.
    return cls(spec, **kw)
