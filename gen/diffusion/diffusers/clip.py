"""CLIP's text encoder (transformers' CLIPTextModel) and tokenizer, as Stable Diffusion uses them.

`CLIPTextModel` computes what transformers' CLIPTextModel computes: token plus learned
position embeddings, `num_hidden_layers` pre-LayerNorm blocks (causal self-attention with
biases, scaled by 1/sqrt(head_dim); an MLP fc1, quick_gelu or gelu, fc2), a final LayerNorm.
It returns the final-normed `last_hidden_state` and the `hidden_states` tuple (the embeddings
and every block's output, not normed: num_hidden_layers + 1 entries), as transformers does
with output_hidden_states. `encode(params, ids, clip_skip)` is what diffusers' Stable
Diffusion pipelines feed the UNet: the last hidden state, or with clip_skip k the output of
the k-th block from the end through the final LayerNorm.

Parameters are named after transformers' tensors (see `gen.diffusion.diffusers.tensors`):
`encoder.layers.3.self_attn.q_proj.weight` is `params["encoder"]["layers_3"]["self_attn"]
["q_proj"]["kernel"]` (transposed); a `text_model.` prefix (older checkpoints, Stable
Diffusion's text_encoder/ folders) is read as well. `load_text_encoder(folder)` reads a
transformers folder (config.json, model.safetensors or pytorch_model.bin).

`CLIPTokenizer` is transformers' CLIPTokenizer built from vocab.json and merges.txt with the
`tokenizers` library: NFC, whitespace runs to one space, lower case; pieces of letters, single
digits, runs of other symbols and English contractions; byte-level BPE with `</w>` at each
word's end; `<|startoftext|>` ... `<|endoftext|>` around it, truncated to model_max_length
with the end token kept and padded with the pad token (`<|endoftext|>` in Stable Diffusion
1.x, `!` in 2.x: read from tokenizer_config.json / special_tokens_map.json).
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen.core.interop import InputError, read_json
from gen.diffusion.diffusers import tensors as tensors_lib

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh")
ARCHITECTURES = ("CLIPTextModel",)
# config.json fields read into the module.
READ = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps")
# Fields that need a value gen has.
FIXED = {"model_type": "clip_text_model", "architectures": (list(ARCHITECTURES), None),
         "add_cross_attention": False, "is_decoder": False, "is_encoder_decoder": False,
         "pruned_heads": {}, "output_attentions": False, "torchscript": False}
# Fields with no effect on the text states (training, the image tower, bookkeeping).
IGNORED = ("projection_dim", "attention_dropout", "dropout", "initializer_range",
           "initializer_factor", "pad_token_id", "bos_token_id", "eos_token_id", "torch_dtype",
           "dtype", "transformers_version", "output_hidden_states", "return_dict",
           "use_bfloat16", "tie_word_embeddings", "chunk_size_feed_forward", "id2label",
           "label2id", "problem_type", "tokenizer_class", "prefix", "finetuning_task",
           "task_specific_params", "use_cache")
PREFIX = "text_model."
BUFFERS = ("embeddings.position_ids",)  # Saved by older transformers; not a weight.


def activation(name: str):
  if name == "quick_gelu":
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  raise ValueError(f"hidden_act {name!r}: supported {', '.join(ACTIVATIONS)}")


def _layer_norm(eps, name):
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class CLIPAttention(nn.Module):
  heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    b, s, c = x.shape
    hd = c // self.heads

    def proj(name):
      return nn.Dense(c, dtype=self.dtype, name=name)(x).reshape(b, s, self.heads, hd)

    y = jax.nn.dot_product_attention(proj("q_proj"), proj("k_proj"), proj("v_proj"), mask=mask)
    return nn.Dense(c, dtype=self.dtype, name="out_proj")(y.reshape(b, s, c))


class CLIPMLP(nn.Module):
  intermediate_size: int
  act: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(activation(self.act)(h))


class CLIPEncoderLayer(nn.Module):
  heads: int
  intermediate_size: int
  act: str
  eps: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    h = _layer_norm(self.eps, "layer_norm1")(x)
    x = x + CLIPAttention(self.heads, self.dtype, name="self_attn")(h, mask)
    h = _layer_norm(self.eps, "layer_norm2")(x)
    return x + CLIPMLP(self.intermediate_size, self.act, self.dtype, name="mlp")(h)


class _Embeddings(nn.Module):
  vocab_size: int
  hidden_size: int
  max_positions: int

  @nn.compact
  def __call__(self, ids):
    tok = nn.Embed(self.vocab_size, self.hidden_size, name="token_embedding")(ids)
    pos = nn.Embed(self.max_positions, self.hidden_size, name="position_embedding")(
        jnp.arange(ids.shape[1]))
    return tok + pos[None]


class _Encoder(nn.Module):
  num_layers: int
  heads: int
  intermediate_size: int
  act: str
  eps: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    states = [x]
    for i in range(self.num_layers):
      x = CLIPEncoderLayer(self.heads, self.intermediate_size, self.act, self.eps, self.dtype,
                           name=f"layers_{i}")(x, mask)
      states.append(x)
    return tuple(states)


class CLIPTextModel(nn.Module):
  """transformers' CLIPTextModel (see the module docstring). `ids` [B, S] int, S up to
  max_position_embeddings; `attention_mask` [B, S] (1 for tokens, 0 for padding) as
  transformers takes it, or None (Stable Diffusion passes none). Returns (last_hidden_state
  [B, S, hidden], hidden_states: num_hidden_layers + 1 arrays [B, S, hidden])."""

  vocab_size: int = 49408
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  causal: bool = True  # False: every token attends to every token (not CLIP; gen's own).
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    activation(self.hidden_act)  # An unknown one fails here, not at trace time.
    self.embeddings = _Embeddings(self.vocab_size, self.hidden_size,
                                  self.max_position_embeddings)
    self.encoder = _Encoder(self.num_hidden_layers, self.num_attention_heads,
                            self.intermediate_size, self.hidden_act, self.layer_norm_eps,
                            self.dtype)
    self.final_layer_norm = nn.LayerNorm(epsilon=self.layer_norm_eps, use_fast_variance=False)

  def __call__(self, ids, attention_mask=None):
    s = ids.shape[1]
    mask = jnp.tril(jnp.ones((s, s), bool)) if self.causal else jnp.ones((s, s), bool)
    mask = mask[None, None]
    if attention_mask is not None:
      mask = mask & (jnp.asarray(attention_mask) > 0)[:, None, None, :]
    states = self.encoder(self.embeddings(ids).astype(self.dtype), mask)
    return self.final_layer_norm(states[-1]), states

  def final_norm(self, x):
    return self.final_layer_norm(x)


def encode(model: CLIPTextModel, params, ids, clip_skip: int = 0):
  """The prompt states diffusers' StableDiffusionPipeline.encode_prompt gives the UNet: the
  last hidden state, or with `clip_skip` k > 0 hidden_states[-(k + 1)] through the final
  LayerNorm (k = 1: the penultimate block's output)."""
  last, states = model.apply({"params": params}, ids)
  if not clip_skip:
    return last
  if not 0 < clip_skip < len(states):
    raise ValueError(f"clip_skip={clip_skip}: the model has {len(states) - 1} layers")
  return model.apply({"params": params}, states[-(clip_skip + 1)],
                     method=CLIPTextModel.final_norm)


# ----------------------------------------------------------------------------- loading


def read_config(folder: str) -> dict:
  """CLIPTextModel's fields of `folder/config.json`, checked (a one-line InputError naming a
  field gen cannot express)."""
  path = os.path.join(folder, CONFIG)
  d = read_json(path)
  f = tensors_lib.Fields(path, d)
  f.known(FIXED, READ, IGNORED, "gen's CLIPTextModel")
  if d.get("model_type") != "clip_text_model":
    f.refuse("model_type", "this reads a CLIP text model (clip_text_model)")
  out = {k: f.positive_int(k, default) for k, default in (
      ("vocab_size", 49408), ("hidden_size", 512), ("intermediate_size", 2048),
      ("num_hidden_layers", 12), ("num_attention_heads", 8), ("max_position_embeddings", 77))}
  if out["hidden_size"] % out["num_attention_heads"]:
    f.refuse("num_attention_heads", f"it must divide hidden_size={out['hidden_size']}")
  act = d.get("hidden_act", "quick_gelu")
  if act not in ACTIVATIONS:
    f.refuse("hidden_act", f"supported: {', '.join(ACTIVATIONS)}")
  out["hidden_act"] = act
  out["layer_norm_eps"] = f.positive("layer_norm_eps", 1e-5)
  return out


def _current(name: str) -> str:
  return name.removeprefix(PREFIX)


def load_text_encoder(folder: str, dtype=jnp.float32) -> tuple[CLIPTextModel, dict]:
  """(module, params) of a transformers CLIPTextModel folder (Stable Diffusion's
  text_encoder/): config.json and model.safetensors (pytorch_model.bin with torch). Bad input
  is a one-line InputError naming the file and the field or tensor."""
  model = CLIPTextModel(**read_config(folder), dtype=dtype)
  tensors, path = tensors_lib.read_weights(folder, SAFETENSORS, TORCH_BIN)
  ids = jnp.zeros((1, model.max_position_embeddings), jnp.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
  ignore = tuple(n for n in tensors if _current(n) in BUFFERS)
  params = tensors_lib.to_params(tensors, path, abstract, "a CLIPTextModel of this config.json",
                                 rename=_current, ignore=ignore)
  return model, params


# --------------------------------------------------------------------------- tokenizer

VOCAB = "vocab.json"
MERGES = "merges.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
           r"""[^\s\p{L}\p{N}]+""")
DEFAULTS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}


def _content(v):
  return v.get("content") if isinstance(v, dict) else v


class CLIPTokenizer:
  """transformers' CLIPTokenizer (see the module docstring), called as Stable Diffusion's
  pipelines call it: `tokenizer(prompts)` -> int32 ids [B, model_max_length], padded
  ("max_length") and truncated with the end token kept."""

  def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *,
               bos_token="<|startoftext|>", eos_token="<|endoftext|>",
               unk_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=77,
               added_tokens=()):
    from tokenizers import (
      AddedToken,
      Regex,
      Tokenizer,
      decoders,
      normalizers,
      pre_tokenizers,
      processors,
    )
    from tokenizers.models import BPE

    for role, token in (("bos_token", bos_token), ("eos_token", eos_token),
                        ("unk_token", unk_token), ("pad_token", pad_token)):
      if token not in vocab and token not in {a.content for a in added_tokens}:
        raise InputError(f"{role} {token!r} is not in the vocabulary")
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                        end_of_word_suffix="</w>", fuse_unk=False, unk_token=unk_token))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(),
                                           normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    listed = {a.content for a in added_tokens}
    tok.add_special_tokens(list(added_tokens) + [
        AddedToken(t, special=True) for t in dict.fromkeys((bos_token, eos_token, unk_token,
                                                            pad_token)) if t not in listed])
    self.bos_id, self.eos_id = tok.token_to_id(bos_token), tok.token_to_id(eos_token)
    self.pad_id = tok.token_to_id(pad_token)
    tok.post_processor = processors.RobertaProcessing((eos_token, self.eos_id),
                                                      (bos_token, self.bos_id),
                                                      trim_offsets=False, add_prefix_space=False)
    self.model_max_length = model_max_length
    tok.enable_truncation(max_length=model_max_length)
    tok.enable_padding(length=model_max_length, pad_id=self.pad_id, pad_token=pad_token)
    self.tokenizer = tok
    self.vocab_size = tok.get_vocab_size()

  def __call__(self, prompts) -> np.ndarray:
    return self.encode(prompts)[0]

  def encode(self, prompts) -> tuple[np.ndarray, list[int]]:
    """(ids as `__call__` gives them, and each prompt's number of tokens before truncation,
    start and end tokens included)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    encodings = self.tokenizer.encode_batch(prompts)
    lengths = [sum(e.attention_mask) + sum(sum(o.attention_mask) - 2 for o in e.overflowing)
               for e in encodings]
    return np.array([e.ids for e in encodings], np.int32), lengths

  def to_json(self) -> dict:
    """Everything it is, as JSON data (the `tokenizers` serialization): `from_json` reads it."""
    return {"tokenizer": self.tokenizer.to_str(), "bos_id": self.bos_id, "eos_id": self.eos_id,
            "pad_id": self.pad_id, "model_max_length": self.model_max_length}

  @classmethod
  def from_json(cls, d: dict) -> CLIPTokenizer:
    from tokenizers import Tokenizer

    tok = cls.__new__(cls)
    tok.tokenizer = Tokenizer.from_str(d["tokenizer"])
    tok.bos_id, tok.eos_id, tok.pad_id = d["bos_id"], d["eos_id"], d["pad_id"]
    tok.model_max_length = d["model_max_length"]
    tok.vocab_size = tok.tokenizer.get_vocab_size()
    return tok

  def decode(self, ids) -> str:
    text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
    return text.replace("</w>", " ").strip()


def _read_merges(path: str) -> list[tuple[str, str]]:
  if not os.path.isfile(path):
    raise InputError(f"{path}: missing")
  merges = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f):
      line = line.rstrip("\n")
      if (i == 0 and line.startswith("#version")) or not line.strip():
        continue
      parts = line.split(" ")
      if len(parts) != 2:
        raise InputError(f"{path}: line {i + 1} is not a merge (two symbols): {line[:40]!r}")
      merges.append((parts[0], parts[1]))
  return merges


def load_tokenizer(folder: str) -> CLIPTokenizer:
  """CLIPTokenizer of a transformers tokenizer folder (Stable Diffusion's tokenizer/):
  vocab.json, merges.txt, and the special tokens and model_max_length of
  tokenizer_config.json or special_tokens_map.json when present."""
  from tokenizers import AddedToken

  vocab = read_json(os.path.join(folder, VOCAB))
  if not all(isinstance(k, str) and type(v) is int for k, v in vocab.items()):
    raise InputError(f"{os.path.join(folder, VOCAB)}: expected token -> integer id")
  merges = _read_merges(os.path.join(folder, MERGES))
  settings = dict(DEFAULTS)
  config = {}
  for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      d = read_json(path)
      config.update(d)
      for role in DEFAULTS:
        if _content(d.get(role)) is not None:
          settings[role] = _content(d[role])
  max_length = config.get("model_max_length", 77)
  if type(max_length) is not int or max_length < 2:
    raise InputError(f"{os.path.join(folder, TOKENIZER_CONFIG)}: model_max_length="
                     f"{json.dumps(max_length)} is not supported (expected an integer >= 2)")
  added = []
  for key, t in sorted((config.get("added_tokens_decoder") or {}).items(),
                       key=lambda kv: int(kv[0])):
    if vocab.get(t["content"]) != int(key):
      raise InputError(f"{os.path.join(folder, TOKENIZER_CONFIG)}: added token "
                       f"{t['content']!r} has id {key}, vocab.json {vocab.get(t['content'])}")
    added.append(AddedToken(t["content"], single_word=t.get("single_word", False),
                            lstrip=t.get("lstrip", False), rstrip=t.get("rstrip", False),
                            normalized=t.get("normalized", True),
                            special=t.get("special", True)))
  try:
    return CLIPTokenizer(vocab, merges, model_max_length=max_length, added_tokens=added,
                         **settings)
  except InputError as e:
    raise InputError(f"{folder}: {e}") from None
