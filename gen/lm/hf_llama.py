"""LLaMA, Mistral, Qwen2, Qwen3 and Gemma from a transformers checkpoint folder, as a gen workdir.

`gen import --from=DIR --workdir=W` reads a folder that transformers' `save_pretrained` wrote for
a `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM` or
`GemmaForCausalLM`: `config.json`, the weights (`model.safetensors`, or shards listed in
`model.safetensors.index.json`, read one tensor at a time; float32, bfloat16 or float16;
`pytorch_model.bin` when torch is installed) and the tokenizer (`tokenizer.json`, else a
LLaMA-style SentencePiece `tokenizer.model` converted as transformers converts it; with
`tokenizer_config.json`, `special_tokens_map.json` and `generation_config.json` for the start,
end and padding tokens and the chat template). It writes a workdir as `gen.lm.hf` does for GPT-2.

The model is gen's GPT with RMSNorm (Gemma's 1 + w), rotary positions (`rope_theta`, llama3 or
linear scaling), a gated MLP (SwiGLU; Gemma's GeGLU with the tanh GELU), grouped-query
attention (`model.num_kv_heads`), `head_dim`, Qwen2's q/k/v biases, Qwen3's q/k RMSNorm,
Gemma's sqrt(width) embedding scale, and a tied or separate head. The weights map as
(torch's Linear stores `[out, in]`; flax's kernels are `[in, out]`):

  model.embed_tokens.weight [V, E]             -> embed/embedding
  model.layers.i.input_layernorm.weight        -> block{i}/norm1/scale
  self_attn.{q,k,v}_proj.weight [H*D, E] ...   -> block{i}/attn/qkv/kernel [E, 3, H, D] (as many
                                                  key/value heads as query heads), else
                                                  attn/q/kernel [E, H, D] and attn/kv/kernel
                                                  [E, 2, KV, D]; their biases (Qwen2) alike
  self_attn.{q,k}_norm.weight [D]              -> block{i}/attn/{q,k}_norm/scale (Qwen3)
  self_attn.o_proj.weight [E, H*D]             -> block{i}/attn/out/kernel [H, D, E]
  post_attention_layernorm.weight              -> block{i}/norm2/scale
  mlp.gate_proj, mlp.up_proj [F, E]            -> block{i}/mlp/fc/kernel [E, 2F] (gate | up)
  mlp.down_proj [E, F]                         -> block{i}/mlp/proj/kernel [F, E]
  model.norm.weight                            -> final_norm/scale
  lm_head.weight [V, E]                        -> head/kernel [E, V] (untied only)

Weights are cast to `model.param_dtype` (float32 by default: bfloat16 and float16 weights are
exact in it; `--config.model.param_dtype=bfloat16` keeps bfloat16 weights as they are, and
rounds float32 ones). A config.json field gen's GPT cannot express is refused, by name; so are
a tensor missing, extra or ill-shaped, and a tokenizer whose ids do not fit the vocabulary.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

from gen.core.config import ConfigDict
from gen.core.interop import (Importer, InputError, finish_config, frozen_run, load_torch,
                              read_json, save_workdir)
from gen.lm.config import default_config
from gen.lm.data import token_spec
from gen.lm.data.tokenizer_json import JSONTokenizer, spec_from_sentencepiece
from gen.lm.steps import make

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TOKENIZER = "tokenizer.json"
SENTENCEPIECE = "tokenizer.model"  # Read when there is no tokenizer.json (LLaMA 2, Mistral).
# model_type -> (its architecture, whether it ties the head by default).
MODEL_TYPES = {"llama": ("LlamaForCausalLM", False), "mistral": ("MistralForCausalLM", False),
               "qwen2": ("Qwen2ForCausalLM", False), "qwen3": ("Qwen3ForCausalLM", False),
               "gemma": ("GemmaForCausalLM", True)}
ROPE_TYPES = ("default", "linear", "llama3")
# The longest context a workdir gets by default (the cache is this long; --config.data.seq_len
# sets another, up to max_position_embeddings).
MAX_CONTEXT = 4096


def recognizes(folder: str) -> bool:
  """Any transformers config but GPT-2's (gen.lm.hf): unsupported ones are refused by name."""
  try:
    d = read_json(os.path.join(folder, CONFIG))
  except InputError:
    return False
  return isinstance(d.get("model_type"), str) and d["model_type"] != "gpt2"


# ------------------------------------------------------------------------- config.json


def read_config(folder: str) -> dict:
  """The architecture of `folder/config.json`, each field checked against what gen's GPT does."""
  path = os.path.join(folder, CONFIG)
  d = read_json(path)

  def refuse(field, why, value=None):
    value = d.get(field) if value is None else value
    raise InputError(f"{path}: {field}={value!r} is not supported ({why})")

  def positive_int(field, default=None):
    v = d.get(field, default)
    if type(v) is not int or v <= 0:
      refuse(field, "expected a positive integer", v)
    return v

  def number(field, default):
    v = d.get(field, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
      refuse(field, "expected a positive number", v)
    return float(v)

  kind = d.get("model_type")
  if kind not in MODEL_TYPES:
    refuse("model_type", "this importer reads " + ", ".join(MODEL_TYPES))
  arch, tied_default = MODEL_TYPES[kind]
  archs = d.get("architectures") or [arch]
  if archs != [arch]:
    refuse("architectures", f"a {kind} folder holds a {arch}", archs)
  a = {"kind": kind, "arch": arch}
  for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "max_position_embeddings"):
    a[k] = positive_int(k)
  heads = a["num_attention_heads"]
  a["num_key_value_heads"] = positive_int("num_key_value_heads", heads)
  if heads % a["num_key_value_heads"]:
    refuse("num_key_value_heads", f"num_attention_heads={heads} is not a multiple of it")
  head_dim = d.get("head_dim")
  if head_dim is None:
    if a["hidden_size"] % heads:
      refuse("num_attention_heads", f"hidden_size={a['hidden_size']} is not divisible by it")
    head_dim = a["hidden_size"] // heads
  a["head_dim"] = positive_int("head_dim", head_dim)
  if a["head_dim"] % 2:
    refuse("head_dim", "rotary positions need an even head_dim")
  a["norm_eps"] = number("rms_norm_eps", 1e-6)

  act = d.get("hidden_act", "silu")
  if kind == "gemma":  # "gelu" is the legacy name of Gemma's tanh GELU (transformers says so).
    act = d.get("hidden_activation") or act
    if act not in ("gelu", "gelu_pytorch_tanh", "gelu_new"):
      refuse("hidden_act", "Gemma's MLP is GeGLU with the tanh GELU (gelu_pytorch_tanh)", act)
  elif act != "silu":
    refuse("hidden_act", f"a {arch}'s MLP is SwiGLU: silu")

  tied = d.get("tie_word_embeddings", tied_default)
  if not isinstance(tied, bool):
    refuse("tie_word_embeddings", "expected true or false")
  a["tied"] = tied

  # Biases: LLaMA's attention_bias / mlp_bias (all or none), Qwen2's q/k/v biases.
  attn_bias, mlp_bias = d.get("attention_bias", False), d.get("mlp_bias", False)
  if kind == "qwen2":
    if attn_bias not in (False, None) or mlp_bias:
      refuse("attention_bias" if attn_bias else "mlp_bias", "Qwen2 has q/k/v biases only")
    a["use_bias"], a["qkv_bias"] = False, True
  else:
    if bool(attn_bias) != bool(mlp_bias):
      refuse("attention_bias", "gen's GPT has biases on every layer or none "
             f"(mlp_bias={mlp_bias!r})", attn_bias)
    a["use_bias"], a["qkv_bias"] = bool(attn_bias), False

  # Attention that is not plain causal attention over the whole context.
  window = d.get("sliding_window")
  if kind == "mistral":
    if window is not None and (type(window) is not int or window < a["max_position_embeddings"]):
      refuse("sliding_window", "gen's attention sees the whole context: null, or at least "
             f"max_position_embeddings={a['max_position_embeddings']}")
  elif d.get("use_sliding_window"):
    refuse("use_sliding_window", "gen's attention sees the whole context")
  types = d.get("layer_types")
  if types is not None and any(t != "full_attention" for t in types):
    refuse("layer_types", "every layer must be full_attention", sorted(set(types)))
  if d.get("use_bidirectional_attention"):
    refuse("use_bidirectional_attention", "gen's GPT is causal")
  for field in ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"):
    if d.get(field) is not None:
      refuse(field, "not part of gen's GPT")

  # Rotary positions: transformers 5's rope_parameters, or the older rope_theta / rope_scaling.
  rope = d.get("rope_parameters")
  field = "rope_parameters"
  if rope is None:
    rope, field = dict(d.get("rope_scaling") or {}), "rope_scaling"
    rope.setdefault("rope_theta", d.get("rope_theta", 10000.0))
  if not isinstance(rope, dict):
    refuse(field, "expected an object")
  if "rope_theta" in rope and "rope_type" not in rope and "type" not in rope:
    rope = {**rope, "rope_type": "default"}
  rtype = rope.get("rope_type", rope.get("type", "default"))
  if rtype not in ROPE_TYPES:
    raise InputError(f"{path}: {field}.rope_type={rtype!r} is not supported (supported: "
                     f"{', '.join(ROPE_TYPES)})")
  theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
  if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 0:
    raise InputError(f"{path}: {field}.rope_theta={theta!r} is not supported (expected a "
                     "positive number)")
  a["rope_theta"] = float(theta)
  partial = rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
  if partial != 1.0:
    raise InputError(f"{path}: partial_rotary_factor={partial!r} is not supported (gen rotates "
                     "whole heads)")
  needs = {"default": (), "linear": ("factor",),
           "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                      "original_max_position_embeddings")}[rtype]
  scaling = {"rope_type": rtype}
  for k in needs:
    v = rope.get(k)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
      raise InputError(f"{path}: {field}.{k}={v!r} is not supported (a {rtype} scaling needs a "
                       "positive number)")
    scaling[k] = int(v) if k == "original_max_position_embeddings" else float(v)
  if rtype == "llama3" and not scaling["low_freq_factor"] < scaling["high_freq_factor"]:
    raise InputError(f"{path}: {field}.low_freq_factor={scaling['low_freq_factor']!r} is not "
                     "supported (it must be below high_freq_factor)")
  a["rope_scaling"] = scaling
  a["config_ids"] = {k: d.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
  return a


# ----------------------------------------------------------------------------- weights


def expected_shapes(a: dict) -> dict[str, tuple[int, ...]]:
  """The tensors the model of architecture `a` saves."""
  e, f, v = a["hidden_size"], a["intermediate_size"], a["vocab_size"]
  h, kv, d = a["num_attention_heads"], a["num_key_value_heads"], a["head_dim"]
  shapes = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,)}
  for i in range(a["num_hidden_layers"]):
    p = f"model.layers.{i}."
    shapes.update({
        p + "input_layernorm.weight": (e,), p + "post_attention_layernorm.weight": (e,),
        p + "self_attn.q_proj.weight": (h * d, e), p + "self_attn.k_proj.weight": (kv * d, e),
        p + "self_attn.v_proj.weight": (kv * d, e), p + "self_attn.o_proj.weight": (e, h * d),
        p + "mlp.gate_proj.weight": (f, e), p + "mlp.up_proj.weight": (f, e),
        p + "mlp.down_proj.weight": (e, f)})
    if a["use_bias"] or a["qkv_bias"]:
      shapes.update({p + "self_attn.q_proj.bias": (h * d,), p + "self_attn.k_proj.bias": (kv * d,),
                     p + "self_attn.v_proj.bias": (kv * d,)})
    if a["use_bias"]:
      shapes.update({p + "self_attn.o_proj.bias": (e,), p + "mlp.gate_proj.bias": (f,),
                     p + "mlp.up_proj.bias": (f,), p + "mlp.down_proj.bias": (e,)})
    if a["kind"] == "qwen3":
      shapes.update({p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)})
  if not a["tied"]:
    shapes["lm_head.weight"] = (v, e)
  return shapes


# safetensors dtype names -> numpy dtypes (bfloat16 from ml_dtypes, which jax ships).
def _dtypes() -> dict:
  import ml_dtypes

  return {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}


class SafetensorsFile:
  """The header of a safetensors file, and its tensors read one at a time (bfloat16 too)."""

  def __init__(self, path: str):
    self.path = path
    try:
      with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= 100 * 2**20:
          raise ValueError(f"header length {n}")
        header = json.loads(f.read(n))
      self.start = 8 + n
      size = os.path.getsize(path)
      self.tensors = {}
      for name, info in header.items():
        if name == "__metadata__":
          continue
        dtype, shape, (lo, hi) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype not in _dtypes():
          raise ValueError(f"tensor {name} has dtype {dtype}")
        width = np.dtype(_dtypes()[dtype]).itemsize
        if hi - lo != width * math.prod(shape) or self.start + hi > size:
          raise ValueError(f"tensor {name}: its bytes do not fit the file")
        self.tensors[name] = (dtype, shape, lo)
    except FileNotFoundError:
      raise InputError(f"{path}: missing") from None
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
      raise InputError(f"{path}: not a readable safetensors file ({e})") from None

  def dtype(self, name: str) -> str:
    return self.tensors[name][0]

  def shape(self, name: str) -> tuple[int, ...]:
    return self.tensors[name][1]

  def read(self, name: str) -> np.ndarray:
    dtype, shape, lo = self.tensors[name]
    dt = np.dtype(_dtypes()[dtype]).newbyteorder("<")
    with open(self.path, "rb") as f:
      f.seek(self.start + lo)
      data = f.read(dt.itemsize * math.prod(shape))
    return np.frombuffer(data, dt).reshape(shape)


class Tensors:
  """Every tensor of a folder's weights by name: `shape`, `dtype`, `file` and `read` (one at a
  time: a sharded model is never all in memory twice)."""

  def __init__(self, folder: str):
    index = os.path.join(folder, SAFETENSORS_INDEX)
    self.files: dict[str, object] = {}  # name -> SafetensorsFile, or (array, path) from torch
    if os.path.isfile(os.path.join(folder, SAFETENSORS)):
      paths = [os.path.join(folder, SAFETENSORS)]
    elif os.path.isfile(index):
      weight_map = read_json(index).get("weight_map")
      if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index}: no weight_map")
      paths = [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]
    elif os.path.isfile(os.path.join(folder, TORCH_BIN)):
      path = os.path.join(folder, TORCH_BIN)
      self.files = {k: (v, path) for k, v in load_torch(path, SAFETENSORS).items()}
      self.source = path
      return
    else:
      raise InputError(f"{folder}: no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or "
                       f"{TORCH_BIN})")
    self.source = paths[0]
    for path in paths:
      st = SafetensorsFile(path)
      for name in st.tensors:
        if name in self.files:
          raise InputError(f"{path}: tensor {name} is also in {self.file(name)}")
        self.files[name] = st
    if os.path.isfile(index):
      for name, file in read_json(index)["weight_map"].items():
        if name in self.files and os.path.basename(self.file(name)) != file:
          raise InputError(f"{index}: tensor {name} is in {self.file(name)}, not {file}")

  def file(self, name: str) -> str:
    st = self.files[name]
    return st[1] if isinstance(st, tuple) else st.path

  def shape(self, name: str) -> tuple[int, ...]:
    st = self.files[name]
    return tuple(st[0].shape) if isinstance(st, tuple) else st.shape(name)

  def floating(self, name: str) -> bool:
    st = self.files[name]
    if isinstance(st, tuple):
      return np.issubdtype(st[0].dtype, np.floating)
    return st.dtype(name) in ("F32", "F16", "BF16", "F64")

  def read(self, name: str) -> np.ndarray:
    st = self.files[name]
    return st[0] if isinstance(st, tuple) else st.read(name)


def check_tensors(tensors: Tensors, a: dict) -> None:
  """An InputError naming the file and tensor for a tensor missing, extra, ill-shaped or not
  floating point (from the headers: nothing is read yet)."""
  want = expected_shapes(a)
  names = set(tensors.files)
  if a["tied"] and "lm_head.weight" in names:  # Saved anyway by some versions: must be embed.
    emb = "model.embed_tokens.weight"
    if emb in names and (tensors.shape("lm_head.weight") != tensors.shape(emb)
                         or not np.array_equal(tensors.read("lm_head.weight"), tensors.read(emb))):
      raise InputError(f"{tensors.file('lm_head.weight')}: tensor lm_head.weight differs from "
                       f"{emb}, but {CONFIG} ties them (tie_word_embeddings=true)")
    names.discard("lm_head.weight")
  names = {n for n in names if not n.endswith("rotary_emb.inv_freq")}  # A buffer, not a weight.
  for name, shape in want.items():
    if name not in names:
      raise InputError(f"{tensors.source}: tensor {name} is missing (shape {shape} expected)")
  for name in sorted(names):
    shape = tensors.shape(name)
    if name not in want:
      raise InputError(f"{tensors.file(name)}: tensor {name} {shape} is not a weight of this "
                       f"{a['arch']} ({CONFIG})")
    if shape != want[name]:
      raise InputError(f"{tensors.file(name)}: tensor {name} has shape {shape}, {CONFIG} implies "
                       f"{want[name]}")
    if not tensors.floating(name):
      raise InputError(f"{tensors.file(name)}: tensor {name} is not floating point")


def to_params(tensors: Tensors, a: dict, dtype=np.float32) -> dict:
  """gen's GPT params (numpy arrays of `dtype`) from the checked tensors."""
  e = a["hidden_size"]
  h, kv, d = a["num_attention_heads"], a["num_key_value_heads"], a["head_dim"]

  def w(name):
    return np.asarray(tensors.read(name)).astype(dtype)

  def t(name):  # A torch Linear's [out, in] as a flax kernel [in, out].
    return np.ascontiguousarray(w(name).T)

  params = {"embed": {"embedding": w("model.embed_tokens.weight")},
            "final_norm": {"scale": w("model.norm.weight")}}
  for i in range(a["num_hidden_layers"]):
    p = f"model.layers.{i}."
    q, k, v = (t(p + f"self_attn.{n}_proj.weight") for n in "qkv")
    if kv == h:
      attn = {"qkv": {"kernel": np.stack([x.reshape(e, h, d) for x in (q, k, v)], axis=1)}}
    else:
      attn = {"q": {"kernel": q.reshape(e, h, d)},
              "kv": {"kernel": np.stack([k.reshape(e, kv, d), v.reshape(e, kv, d)], axis=1)}}
    if a["use_bias"] or a["qkv_bias"]:
      qb, kb, vb = (w(p + f"self_attn.{n}_proj.bias") for n in "qkv")
      if kv == h:
        attn["qkv"]["bias"] = np.stack([x.reshape(h, d) for x in (qb, kb, vb)])
      else:
        attn["q"]["bias"] = qb.reshape(h, d)
        attn["kv"]["bias"] = np.stack([kb.reshape(kv, d), vb.reshape(kv, d)])
    if a["kind"] == "qwen3":
      attn["q_norm"] = {"scale": w(p + "self_attn.q_norm.weight")}
      attn["k_norm"] = {"scale": w(p + "self_attn.k_norm.weight")}
    attn["out"] = {"kernel": t(p + "self_attn.o_proj.weight").reshape(h, d, e)}
    mlp = {"fc": {"kernel": np.concatenate([t(p + "mlp.gate_proj.weight"),
                                            t(p + "mlp.up_proj.weight")], axis=1)},
           "proj": {"kernel": t(p + "mlp.down_proj.weight")}}
    if a["use_bias"]:
      attn["out"]["bias"] = w(p + "self_attn.o_proj.bias")
      mlp["fc"]["bias"] = np.concatenate([w(p + "mlp.gate_proj.bias"), w(p + "mlp.up_proj.bias")])
      mlp["proj"]["bias"] = w(p + "mlp.down_proj.bias")
    params[f"block{i}"] = {"norm1": {"scale": w(p + "input_layernorm.weight")}, "attn": attn,
                           "norm2": {"scale": w(p + "post_attention_layernorm.weight")},
                           "mlp": mlp}
  if not a["tied"]:
    params["head"] = {"kernel": t("lm_head.weight")}
  return params


# --------------------------------------------------------------------------- tokenizer


def _token_text(v):
  """A special token of tokenizer_config.json / special_tokens_map.json: a string or
  {"content": ...}."""
  if isinstance(v, dict):
    v = v.get("content")
  return v if isinstance(v, str) and v else None


def _read_optional(path: str) -> dict:
  return read_json(path) if os.path.isfile(path) else {}


def read_tokenizer(folder: str, a: dict) -> JSONTokenizer:
  """The tokenizer.json of `folder` (else its LLaMA-style SentencePiece tokenizer.model,
  converted as transformers converts it) with its start, end and padding tokens
  (generation_config.json, then tokenizer_config.json, special_tokens_map.json, config.json)
  and chat template, checked against the model's vocabulary."""
  path = os.path.join(folder, TOKENIZER)
  tc_path = os.path.join(folder, "tokenizer_config.json")
  tc = _read_optional(tc_path)
  if os.path.isfile(path):
    try:
      tok = JSONTokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001  Whatever the tokenizers library raises.
      raise InputError(f"{path}: not a readable tokenizer file ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
  elif os.path.isfile(os.path.join(folder, SENTENCEPIECE)):
    path = os.path.join(folder, SENTENCEPIECE)
    with open(path, "rb") as f:
      model = f.read()
    try:
      tok = JSONTokenizer(spec_from_sentencepiece(model, tc))
    except ValueError as e:
      raise InputError(f"{path}: {e}") from None
  else:
    raise InputError(f"{path}: missing, and no {SENTENCEPIECE} either (this importer reads the "
                     "tokenizers library's file, or a LLaMA-style SentencePiece model)")
  vocab = tok.backend.get_vocab(with_added_tokens=True)
  top = max(vocab.values(), default=-1)
  if top >= a["vocab_size"]:
    token = next(t for t, i in vocab.items() if i == top)
    raise InputError(f"{path}: token {token!r} has id {top}, outside the model's "
                     f"vocab_size={a['vocab_size']} ({CONFIG}): not this model's tokenizer")
  stm = _read_optional(os.path.join(folder, "special_tokens_map.json"))
  gc = _read_optional(os.path.join(folder, "generation_config.json"))

  def ids_of(key):
    """The ids of the special token `key` (bos, eos, pad): a list, maybe empty."""
    v, where = gc.get(f"{key}_token_id"), "generation_config.json"
    if v is None:
      text = _token_text(tc.get(f"{key}_token")) or _token_text(stm.get(f"{key}_token"))
      if text is not None:
        if text not in vocab:
          raise InputError(f"{tc_path}: {key}_token={text!r} is not in {path}")
        return [vocab[text]]
      v, where = a["config_ids"][f"{key}_token_id"], CONFIG
    vs = v if isinstance(v, list) else [] if v is None else [v]
    for i in vs:
      if type(i) is not int or not 0 <= i < a["vocab_size"]:
        raise InputError(f"{os.path.join(folder, where)}: {key}_token_id={v!r} is not a token "
                         f"id of vocab_size={a['vocab_size']}")
    return list(vs)

  bos, eos, pad = ids_of("bos"), ids_of("eos"), ids_of("pad")
  template = tc.get("chat_template") or ""
  jinja = os.path.join(folder, "chat_template.jinja")
  if not template and os.path.isfile(jinja):
    with open(jinja, encoding="utf-8") as f:
      template = f.read()
  if not isinstance(template, str):  # A list of named templates: the default one.
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    template = named.get("default") or ""
  inverse = {i: t for t, i in vocab.items()}
  special = {}  # The special tokens' text, as chat templates see them.
  for key, ids in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", [])):
    text = _token_text(tc.get(f"{key}_token")) or _token_text(stm.get(f"{key}_token"))
    text = text or (inverse.get(ids[0]) if ids else None)
    if text:
      special[f"{key}_token"] = text
  return JSONTokenizer(tok.spec, a["vocab_size"], bos[:1], eos, pad[0] if pad else -1,
                       template, special)


# --------------------------------------------------------------------------- workdir


def workdir_config(a: dict, seq_len: int) -> ConfigDict:
  """The config of an imported model: its architecture, transformers' sampling defaults, and
  data keys for `gen eval` (set `data.name` to a `text:PATH`)."""
  c = default_config()
  c.data.name = "text:input.txt"  # For `gen eval`: --config.data.name=text:PATH.
  c.data.tokenizer = JSONTokenizer.name  # Kept in data_spec.json.
  c.data.vocab_size = 0
  c.data.seq_len = seq_len
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.eval_split = "val"

  gemma = a["kind"] == "gemma"
  c.model.num_layers = a["num_hidden_layers"]
  c.model.num_heads = a["num_attention_heads"]
  c.model.num_kv_heads = a["num_key_value_heads"]
  c.model.head_dim = a["head_dim"]
  c.model.width = a["hidden_size"]
  c.model.norm = "rmsnorm_1p" if gemma else "rmsnorm"
  c.model.norm_eps = a["norm_eps"]
  c.model.mlp = "geglu" if gemma else "swiglu"
  c.model.mlp_hidden = a["intermediate_size"]
  c.model.positions = "rotary"
  c.model.rope_theta = a["rope_theta"]
  c.model.rope_scaling = ConfigDict(a["rope_scaling"])
  c.model.tie_embeddings = a["tied"]
  c.model.use_bias = a["use_bias"]
  c.model.qkv_bias = a["qkv_bias"]
  c.model.qk_norm = a["kind"] == "qwen3"
  c.model.embed_scale = gemma
  c.model.dropout = 0.0
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"
  c.model.remat = False

  c.sample.max_new_tokens = 100
  c.sample.temperature = 1.0
  c.sample.top_k = 50  # transformers' generate default.
  c.sample.top_p = 1.0
  c.sample.stride = 0

  frozen_run(c)  # Weights to sample, evaluate and start from; not trained in place.
  c.train.num_samples = 2
  return c


def read(folder: str, overrides: Sequence[str] = ()):
  """Everything of `folder`, checked: (architecture, config with `overrides`, data spec with the
  tokenizer, params as numpy arrays of `model.param_dtype`)."""
  import jax

  a = read_config(folder)
  tokenizer = read_tokenizer(folder, a)
  tensors = Tensors(folder)
  check_tensors(tensors, a)
  config = finish_config(workdir_config(a, min(a["max_position_embeddings"], MAX_CONTEXT)),
                         overrides)
  seq_len = config.data.seq_len
  if type(seq_len) is not int or not 0 < seq_len <= a["max_position_embeddings"]:
    raise InputError(f"data.seq_len={seq_len!r}: the context must be in 1.."
                     f"{a['max_position_embeddings']} (max_position_embeddings, {CONFIG})")
  spec = token_spec(seq_len, tokenizer)
  pipeline = make(config, spec)
  abstract = jax.eval_shape(pipeline.init, jax.random.key(config.seed), spec.example_batch(1))
  want = {jax.tree_util.keystr(p): (x.shape, np.dtype(x.dtype))
          for p, x in jax.tree_util.tree_leaves_with_path(abstract.params)}
  dtype = next(iter(want.values()))[1]
  params = to_params(tensors, a, dtype)
  got = {jax.tree_util.keystr(p): (x.shape, np.dtype(x.dtype))
         for p, x in jax.tree_util.tree_leaves_with_path(params)}
  if want != got:  # An override that changes the model (num_layers, tie_embeddings...).
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    raise InputError(f"the config (with its overrides) builds another model than "
                     f"{os.path.join(folder, CONFIG)}: {', '.join(diff[:4])}")
  return a, config, spec, pipeline, params


def write(folder: str, workdir: str, overrides: Sequence[str] = ()) -> str:
  """Reads and checks everything in `folder`, then writes the gen workdir into `workdir`."""
  a, config, spec, pipeline, params = read(folder, overrides)
  n = save_workdir(workdir, config, spec, pipeline, params)
  kv = a["num_key_value_heads"]
  return (f"{a['arch']} from {folder}: {a['num_hidden_layers']} layers, "
          f"{a['num_attention_heads']} heads ({kv} key/value), head_dim {a['head_dim']}, width "
          f"{a['hidden_size']}, context {config.data.seq_len} (of "
          f"{a['max_position_embeddings']}), vocabulary {a['vocab_size']} ({n:,} params, "
          f"{config.model.param_dtype})")


IMPORTER = Importer("a transformers LLaMA, Mistral, Qwen2, Qwen3 or Gemma folder (config.json "
                    "with its model_type)", recognizes, write)
