"""Text for a text-conditional denoiser trained from scratch: a word-level tokenizer, captioned
data and the text encoders.

- `WordTokenizer`: a `tokenizers` WordLevel model trained on the training split's captions
  and the source's `caption_words` (lowercased, split on whitespace and punctuation), with
  `[PAD]`, `[UNK]`, `[BOS]` and `[EOS]`.
  A prompt becomes `[BOS] words [EOS]` padded with `[PAD]` to `model.text.max_length` ids.
  **Unknown words are refused**, not mapped to `[UNK]`: a prompt with a word the tokenizer never
  saw in training raises a ValueError that names the words (the model cannot have learned what
  they mean, and a silent `[UNK]` would make a wrong image look like a model failure). A prompt
  over the context is refused the same way. The empty prompt is the null caption
  `[BOS] [EOS]` that caption dropout trains and classifier-free guidance subtracts.
- `captioned`: the data of a captioned image source (any registered source whose records
  have a `caption(i)`, e.g. `captions:mnist`): batches `{"image", "ids"}`, the tokenizer in the
  data spec's `extra["tokenizer"]` (its JSON, saved in the run's data_spec.json), pixels or an
  autoencoder's latents (`gen.diffusion.latent`) alike.
- `TextEncoder`: CLIP's text transformer (`gen.diffusion.diffusers.clip.CLIPTextModel`) at
  small widths, `model.text.encoder = "clip"` (causal attention, quick GELU, as CLIP; its
  params are named as transformers' CLIPTextModel), or `"transformer"`, the same blocks with
  bidirectional attention and exact GELU: every token reads the whole prompt.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gen.core.config import ConfigError
from gen.core.data import ImageData, sources
from gen.core.family import DataSpec
from gen.diffusion import latent as latent_lib
from gen.diffusion.diffusers import clip

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD, UNK, BOS, EOS = range(4)
ENCODERS = {"clip": ("quick_gelu", True), "transformer": ("gelu", False)}  # (act, causal)


class WordTokenizer:
  """Prompts to int32 ids [N, max_length] through a `tokenizers` WordLevel model."""

  def __init__(self, tokenizer, max_length: int):
    self.tok, self.max_length = tokenizer, int(max_length)
    if [self.tok.token_to_id(t) for t in SPECIALS] != list(range(len(SPECIALS))):
      raise ValueError(f"a word tokenizer needs the special tokens {SPECIALS} as ids 0..3")

  @classmethod
  def train(cls, texts, max_length: int) -> WordTokenizer:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIALS)))
    return cls(tok, max_length)

  @classmethod
  def from_json(cls, d: dict) -> WordTokenizer:
    from tokenizers import Tokenizer

    return cls(Tokenizer.from_str(d["tokenizer"]), d["max_length"])

  def to_json(self) -> dict:
    return {"kind": "words", "tokenizer": self.tok.to_str(), "max_length": self.max_length}

  @property
  def vocab_size(self) -> int:
    return self.tok.get_vocab_size()

  def words(self, text: str) -> list[str]:
    """The words of `text` as the tokenizer splits them (lowercased)."""
    return [w for w, _ in self.tok.pre_tokenizer.pre_tokenize_str(
        self.tok.normalizer.normalize_str(text))]

  def __call__(self, prompts) -> np.ndarray:
    """int32 [len(prompts), max_length]; ValueError on unknown words or an over-long prompt."""
    out = np.full((len(prompts), self.max_length), PAD, np.int32)
    for i, text in enumerate(prompts):
      enc = self.tok.encode(str(text))
      unknown = [w for w, t in zip(self.words(str(text)), enc.ids) if t == UNK]
      if unknown:
        raise ValueError(f"prompt {str(text)!r}: unknown word(s) {', '.join(unknown)}: the "
                         f"tokenizer knows the {self.vocab_size - len(SPECIALS)} words of the "
                         "training captions (an unknown word is refused, never [UNK])")
      ids = [BOS, *enc.ids, EOS]
      if len(ids) > self.max_length:
        raise ValueError(f"prompt {str(text)!r} is {len(ids)} tokens with [BOS] and [EOS]; "
                         f"the model reads at most model.text.max_length = {self.max_length}")
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids) -> str:
    return " ".join(self.tok.id_to_token(int(i)) for i in ids if int(i) >= len(SPECIALS))


def tokenizer_of(spec: DataSpec) -> WordTokenizer:
  if not spec.extra or spec.extra.get("tokenizer", {}).get("kind") != "words":
    raise ConfigError("a text_denoiser run's data_spec.json holds its word tokenizer "
                      "(extra.tokenizer); this one has none: open the data with "
                      "gen.diffusion.make_data")
  return WordTokenizer.from_json(spec.extra["tokenizer"])


# ----------------------------------------------------------------------------------- data


class Tokenized:
  """A captioned source's records as `{"image", "ids"}`: its caption through the tokenizer."""

  def __init__(self, source, tokenizer: WordTokenizer):
    self.source, self.tokenizer = source, tokenizer

  @property
  def shape(self):
    return self.source.shape

  @property
  def num_classes(self):
    return self.source.num_classes

  def __len__(self):
    return len(self.source)

  def caption(self, i: int) -> str:
    return self.source.caption(i)

  def __getitem__(self, i):
    r = self.source[i]
    return {"image": r["image"], "label": r["label"],
            "ids": self.tokenizer([self.source.caption(i)])[0]}

  def __repr__(self):
    return f"Tokenized({self.source!r})"


def captions_of(source, n: int) -> list[str]:
  """The first `n` captions of `source` (all, if it has fewer)."""
  return [source.caption(i) for i in range(min(int(n), len(source)))]


class _Captioned:
  """Mixed into ImageData or LatentData: records tokenized, `ids` in the batches and spec."""

  def __init__(self, config, process_index=None, process_count=None, reuse=()):
    t = config.model.text
    raw = sources.load(config.data.name, config.data.train_split, config.data.dir)
    if not hasattr(raw, "caption"):
      raise ConfigError(f"model.kind='text_denoiser' trains on captioned images; "
                        f"data.name='{config.data.name}' has no captions (try captions:mnist)")
    if t.max_length < 3:
      raise ConfigError(f"model.text.max_length must be >= 3 ([BOS] word [EOS]), got "
                        f"{t.max_length}")
    self.tokenizer = _train_tokenizer(config.data.name, config.data.train_split,
                                      config.data.dir, int(t.tokenizer_captions),
                                      int(t.max_length))
    super().__init__(config, process_index, process_count, reuse)
    self.spec = dataclasses.replace(
        self.spec, fields={**self.spec.fields, "ids": ((self.tokenizer.max_length,), "int32")},
        extra={**self.spec.extra, "tokenizer": self.tokenizer.to_json(),
               "prompts": captions_of(self.eval_source, t.prompts)})

  def load(self, split: str, train: bool):
    return Tokenized(super().load(split, train), self.tokenizer)

  def prepare_train(self, batch, rng):
    return {**super().prepare_train(batch, rng), "ids": batch["ids"]}


@functools.lru_cache(maxsize=4)
def _train_tokenizer(name: str, split: str, data_dir: str, n: int, max_length: int
                     ) -> WordTokenizer:
  """The tokenizer of the first `n` training captions and the source's `caption_words` (every
  word its captions can hold, when it says): deterministic, so a resumed run, its evals and
  `gen sample` rebuild the same one (the spec holds it too)."""
  source = sources.load(name, split, data_dir)
  texts = captions_of(source, n) + [" ".join(getattr(source, "caption_words", ()))]
  return WordTokenizer.train(texts, max_length)


class CaptionData(_Captioned, ImageData):
  """Captioned images: `{"image": float32[B, H, W, C], "ids": int32[B, L]}`."""


class LatentCaptionData(_Captioned, latent_lib.LatentData):
  """Captioned images whose spec also records a latent run's autoencoder."""


def make_data(config, process_index=None, process_count=None, reuse=()):
  cls = LatentCaptionData if latent_lib.enabled(config) else CaptionData
  return cls(config, process_index=process_index, process_count=process_count, reuse=reuse)


# -------------------------------------------------------------------------------- encoder


class TextEncoder(nn.Module):
  """ids [B, L] -> states [B, L, width]: CLIP's text transformer, causal ("clip") or not
  ("transformer"), its final LayerNorm included."""

  kind: str
  vocab_size: int
  width: int
  layers: int
  heads: int
  mlp_ratio: int
  max_length: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, ids):
    act, causal = ENCODERS[self.kind]
    model = clip.CLIPTextModel(self.vocab_size, self.width, self.mlp_ratio * self.width,
                               self.layers, self.heads, self.max_length, act, 1e-5,
                               causal=causal, dtype=self.dtype, name="text_model")
    return model(ids)[0]


def encoder_of(t, vocab_size: int, dtype=jnp.float32) -> TextEncoder:
  """The text encoder of `model.text` (`t`)."""
  if t.encoder not in ENCODERS:
    raise ConfigError(f"model.text.encoder must be one of {', '.join(ENCODERS)}, got "
                      f"'{t.encoder}'")
  if t.width % t.heads:
    raise ConfigError(f"model.text.width = {t.width} must be divisible by model.text.heads = "
                      f"{t.heads}")
  return TextEncoder(t.encoder, vocab_size, t.width, t.layers, t.heads, t.mlp_ratio,
                     t.max_length, dtype)
