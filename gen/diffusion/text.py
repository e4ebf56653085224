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
- `model.text.pretrained = WORKDIR`, a text_to_image run (`gen import` of a Stable Diffusion
  pipeline folder): its CLIP text encoder, **frozen** (`FrozenEncoder`: its weights are not
  in the run's params, no gradient reaches them), and its CLIP tokenizer (`ClipPrompts`)
  replace the jointly trained ones. The ids are the first `model.text.max_length` of CLIP's
  77 (start, words, end, padding): CLIP's attention is causal, so the states of those
  positions are exactly the ones Stable Diffusion's pipeline computes over all 77 (tested);
  a prompt longer than `max_length` tokens is refused, as is one over the word tokenizer's.
  CLIP's byte-level BPE has no unknown words. The data spec records the source
  (`extra["text_encoder"]`: its workdir and checkpoint step), which `make` reads again, as a
  latent run reads its autoencoder: keep that workdir where it is. The encoder runs forward
  only, at every step: for the 123M-parameter encoder of Stable Diffusion 1.x that is about
  2 x 123M x `max_length` FLOPs per caption, worth a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
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


class ClipPrompts:
  """A pretrained CLIP tokenizer (`model.text.pretrained`'s) with the word tokenizer's contract:
  prompts to int32 ids [N, max_length], the first `max_length` of CLIP's padded ids; a prompt
  of more than `max_length` tokens (start and end included) is a ValueError."""

  def __init__(self, tokenizer: clip.CLIPTokenizer, max_length: int):
    self.tok, self.max_length = tokenizer, int(max_length)
    if not 3 <= self.max_length <= tokenizer.model_max_length:
      raise ConfigError(f"model.text.max_length = {self.max_length}: a pretrained CLIP "
                        f"tokenizer gives 3 to {tokenizer.model_max_length} ids")

  @classmethod
  def from_json(cls, d: dict) -> ClipPrompts:
    return cls(clip.CLIPTokenizer.from_json(d["clip"]), d["max_length"])

  def to_json(self) -> dict:
    return {"kind": "clip", "clip": self.tok.to_json(), "max_length": self.max_length}

  @property
  def vocab_size(self) -> int:
    return self.tok.vocab_size

  def __call__(self, prompts) -> np.ndarray:
    """int32 [len(prompts), max_length]; ValueError on a prompt over max_length tokens."""
    prompts = [str(p) for p in prompts]
    ids, lengths = self.tok.encode(prompts)
    for text, n in zip(prompts, lengths):
      if n > self.max_length:
        raise ValueError(f"prompt {text!r} is {n} CLIP tokens with the start and end tokens; "
                         f"the model reads at most model.text.max_length = {self.max_length}")
    return ids[:, :self.max_length]

  def decode(self, ids) -> str:
    return self.tok.decode(ids)


TOKENIZERS = {"words": WordTokenizer, "clip": ClipPrompts}  # extra["tokenizer"]["kind"] ->


def tokenizer_of(spec: DataSpec) -> WordTokenizer | ClipPrompts:
  kind = ((spec.extra or {}).get("tokenizer") or {}).get("kind")
  if kind not in TOKENIZERS:
    raise ConfigError("a text_denoiser run's data_spec.json holds its tokenizer "
                      "(extra.tokenizer, a word tokenizer or a pretrained CLIP one); this one "
                      "has none: open the data with gen.diffusion.make_data")
  return TOKENIZERS[kind].from_json(spec.extra["tokenizer"])


# ----------------------------------------------------------------------------------- data


class Tokenized:
  """A captioned source's records as `{"image", "ids"}`: its caption through the tokenizer;
  with `targets`, also the source's per-slot `targets` (and its `targets` heads), which the
  caption parsing of `model.text.parse_weight` learns from."""

  def __init__(self, source, tokenizer: WordTokenizer, targets: bool = False):
    self.source, self.tokenizer = source, tokenizer
    if targets and not getattr(source, "targets", None):
      raise ConfigError(f"model.text.parse_weight > 0 learns to read captions into the "
                        f"objects' attributes: {source!r} has no per-object targets (a "
                        "captions:... source has)")
    self.targets = source.targets if targets else None

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
    out = {"image": r["image"], "label": r["label"],
           "ids": self.tokenizer([self.source.caption(i)])[0]}
    if self.targets:
      out["targets"] = r["targets"]
    return out

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
    extra = {}
    self.parse = t.get("parse_weight", 0.0) > 0
    if self.parse and t.get("pretrained", ""):
      raise ConfigError("model.text.parse_weight trains the text encoder to parse captions: a "
                        "frozen model.text.pretrained encoder cannot learn it")
    if t.get("pretrained", ""):
      source = pretrained_source(t.pretrained)
      self.tokenizer = ClipPrompts(clip.CLIPTokenizer.from_json(source.tokenizer),
                                   int(t.max_length))
      extra["text_encoder"] = {"source": source.workdir, "step": source.step,
                               "hidden_size": source.hidden_size}
    else:
      self.tokenizer = _train_tokenizer(config.data.name, config.data.train_split,
                                        config.data.dir, int(t.tokenizer_captions),
                                        int(t.max_length))
    super().__init__(config, process_index, process_count, reuse)
    self.spec = dataclasses.replace(
        self.spec, fields={**self.spec.fields, "ids": ((self.tokenizer.max_length,), "int32")},
        extra={**self.spec.extra, "tokenizer": self.tokenizer.to_json(),
               "prompts": captions_of(self.eval_source, t.prompts), **extra})

  def load(self, split: str, train: bool):
    return Tokenized(super().load(split, train), self.tokenizer, self.parse)

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


# ------------------------------------------------------------ a pretrained, frozen encoder


@dataclasses.dataclass(frozen=True)
class Source:
  """What `model.text.pretrained` names: a text_to_image run's workdir (absolute), its newest
  checkpoint's step, its CLIP tokenizer (JSON) and its text encoder's width."""

  workdir: str
  step: int
  tokenizer: dict
  hidden_size: int


def pretrained_source(path: str) -> Source:
  """The text_to_image run at `path`, checked: ConfigErrors name what is missing."""
  from gen.core import runs
  from gen.core.checkpoint import Checkpointer

  what = f"model.text.pretrained={path}"
  if not os.path.isfile(os.path.join(path, runs.CONFIG_FILE)):
    raise ConfigError(f"{what}: no run there ({runs.CONFIG_FILE} not found); import a Stable "
                      "Diffusion pipeline folder with gen import --from=FOLDER --workdir=DIR")
  config = runs.load_config(path)
  if config.get("family") != "diffusion" or config.model.get("kind") != "text_to_image":
    raise ConfigError(f"{what} holds a {config.get('family')} "
                      f"{config.model.get('kind', 'model')} run, not a text_to_image one (gen "
                      "import of a Stable Diffusion pipeline folder)")
  spec = DataSpec.load(path)
  tok = (spec.extra or {}).get("tokenizer") if spec is not None else None
  if not (isinstance(tok, dict) and "bos_id" in tok):
    raise ConfigError(f"{what}: its data_spec.json holds no CLIP tokenizer")
  steps = []
  if os.path.isdir(os.path.join(path, "checkpoints")):
    ckpt = Checkpointer(path, async_save=False, create=False)
    try:
      steps = ckpt.all_steps()
    finally:
      ckpt.close()
  if not steps:
    raise ConfigError(f"{what} has no checkpoint")
  return Source(os.path.abspath(path), int(steps[-1]), tok,
                int(config.model.text_to_image.text_encoder.hidden_size))


@dataclasses.dataclass(frozen=True, eq=False)
class Frozen:
  """A CLIP text model and its params, outside any Flax tree (a module's attribute holding
  this is not a submodule: no params of the run's own)."""

  net: Any
  params: Any


class FrozenEncoder(nn.Module):
  """ids [B, L] -> a pretrained CLIP text model's last hidden state [B, L, width], a constant
  of the program: no gradient reaches it."""

  frozen: Frozen

  def __call__(self, ids):
    f = self.frozen
    return jax.lax.stop_gradient(clip.encode(f.net, f.params, ids))


@functools.lru_cache(maxsize=2)
def _restore_encoder(workdir: str, step: int, mtime: float):
  """(the text encoder's config fields, its params) of a text_to_image run's checkpoint
  `step`, restored once (`mtime` tells a rewritten checkpoint from the cached one)."""
  from gen.core import runs

  del mtime
  config, _, pipeline, state, _ = runs.load_workdir(workdir, step=step)
  params = jax.device_get(pipeline.sample_params(state))["text_encoder"]
  return dict(config.model.text_to_image.text_encoder), params


def frozen_encoder(spec: DataSpec, dtype=jnp.float32) -> FrozenEncoder:
  """The frozen encoder a spec's `extra["text_encoder"]` records (reads its run: call it
  eagerly)."""
  record = spec.extra["text_encoder"]
  path, step = record["source"], int(record["step"])
  folder = os.path.join(path, "checkpoints", str(step))
  if not os.path.isdir(folder):
    raise ConfigError(f"the pretrained text encoder {path} (step {step}) this run was trained "
                      "with is gone: restore it there")
  fields, params = _restore_encoder(path, step, os.path.getmtime(folder))
  return FrozenEncoder(Frozen(clip.CLIPTextModel(**fields, dtype=dtype), params))


def width_of(t, spec: DataSpec) -> int:
  """The text encoder's width: the pretrained one's (as its record says) or model.text's."""
  record = (spec.extra or {}).get("text_encoder")
  return int(record["hidden_size"]) if record else int(t.width)


def encoder_of(t, vocab_size: int, dtype=jnp.float32) -> TextEncoder:
  """The text encoder of `model.text` (`t`), trained jointly."""
  if t.encoder not in ENCODERS:
    raise ConfigError(f"model.text.encoder must be one of {', '.join(ENCODERS)}, got "
                      f"'{t.encoder}'")
  if t.width % t.heads:
    raise ConfigError(f"model.text.width = {t.width} must be divisible by model.text.heads = "
                      f"{t.heads}")
  return TextEncoder(t.encoder, vocab_size, t.width, t.layers, t.heads, t.mlp_ratio,
                     t.max_length, dtype)
