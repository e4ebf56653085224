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


# The tokenizer classes whose `tokenizer.model` (SentencePiece) `spec_from_sentencepiece`
# converts; "" stands for a folder whose tokenizer_config.json names none.
SENTENCEPIECE_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "")


def _bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
  """Merges for a SentencePiece BPE vocabulary, ranked as transformers ranks them (by the
  merged piece's id, then the parts' lengths and ids)."""
  merges = []
  for piece, rank in vocab.items():
    local = [(piece[:i], piece[i:], rank) for i in range(1, len(piece))
             if piece[:i] in vocab and piece[i:] in vocab]
    merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
  merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])))
  return [(left, right) for left, right, _ in merges]


def _text(token) -> str | None:
  return token.get("content") if isinstance(token, dict) else token


def spec_from_sentencepiece(model: bytes, config: dict) -> str:
  """The tokenizer.json text of a LLaMA-style SentencePiece `tokenizer.model`, built as
  transformers 5's `LlamaTokenizer` builds it from that file and `tokenizer_config.json`
  (`config`): BPE over the model's pieces with byte fallback, merges from the piece ids,
  "▁" for spaces with the prefix space of `add_prefix_space` and `legacy`, the control and
  unknown pieces as special tokens, user-defined pieces as added tokens, and `bos_token` /
  `eos_token` added as `add_bos_token` / `add_eos_token` say (both False unless set).
  A ValueError names what is not LLaMA-style."""
  from sentencepiece import sentencepiece_model_pb2
  from tokenizers import AddedToken, decoders, pre_tokenizers, processors
  from tokenizers import Tokenizer as Backend
  from tokenizers.models import BPE

  cls = config.get("tokenizer_class") or ""
  if cls not in SENTENCEPIECE_CLASSES:
    raise ValueError(f"tokenizer_class {cls!r}: only LlamaTokenizer's SentencePiece files are "
                     "converted; this folder needs its tokenizer.json")
  proto = sentencepiece_model_pb2.ModelProto()
  try:
    proto.ParseFromString(model)
  except Exception as e:  # noqa: BLE001  Whatever protobuf raises.
    raise ValueError(f"not a SentencePiece model ({type(e).__name__})") from None
  if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
    raise ValueError("a SentencePiece model that is not BPE (LLaMA's are): this folder needs "
                     "its tokenizer.json")
  vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
  backend = Backend(BPE(vocab=vocab, merges=_bpe_merges(vocab), fuse_unk=True,
                        byte_fallback=True, dropout=None))
  prefix = config.get("add_prefix_space")
  prefix = True if prefix is None else bool(prefix)
  scheme = ("first" if config.get("legacy", True) is False else "always") if prefix else "never"
  backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme,
                                                   split=False)
  steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
  backend.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)]
                                               if prefix else []))
  kinds = sentencepiece_model_pb2.ModelProto.SentencePiece
  backend.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                              for p in proto.pieces if p.type in (kinds.UNKNOWN, kinds.CONTROL)])
  user = [AddedToken(p.piece, normalized=False, special=False)
          for p in proto.pieces if p.type == kinds.USER_DEFINED]
  if user:
    backend.add_tokens(user)
  ends = []
  for key, default in (("bos", False), ("eos", False)):
    if config.get(f"add_{key}_token", default):
      token = _text(config.get(f"{key}_token")) or {"bos": "<s>", "eos": "</s>"}[key]
      if token not in vocab:
        raise ValueError(f"{key}_token={token!r} is not a piece of the model")
      ends.append((key, token))
  bos = [t for k, t in ends if k == "bos"]
  eos = [t for k, t in ends if k == "eos"]
  single = " ".join([f"{t}:0" for t in bos] + ["$A:0"] + [f"{t}:0" for t in eos])
  pair = " ".join([single] + [f"{t}:1" for t in bos] + ["$B:1"] + [f"{t}:1" for t in eos])
  backend.post_processor = processors.TemplateProcessing(
      single=single, pair=pair, special_tokens=[(t, vocab[t]) for _, t in ends])
  return backend.to_str()
