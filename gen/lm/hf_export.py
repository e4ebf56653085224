"""A gen language model as a transformers folder: `gen export --workdir=W --to=DIR`.

The inverse of `gen.lm.hf` and `gen.lm.hf_llama`. A run whose model transformers can express is
written as `config.json`, `generation_config.json` and `model.safetensors` (in the parameters'
dtype), plus its tokenizer when it has a transformers form. `AutoModelForCausalLM
.from_pretrained(DIR)` then computes the same logits. The model kinds are:

- GPT-2 (`GPT2LMHeadModel`): learned positions, LayerNorm, the tanh-GELU MLP 4 x width wide,
  biases.
- LLaMA (`LlamaForCausalLM`): rotary positions (default, linear or llama3 scaling), RMSNorm,
  SwiGLU, biases everywhere or nowhere.
- Qwen2: as LLaMA, with q/k/v biases only.
- Qwen3: as LLaMA, with q/k RMSNorm.
- Gemma: Gemma's (1 + w) RMSNorm, GeGLU, embeddings times sqrt(width).

Any other model is refused, and the error names the key that does not fit. The tokenizer is
written as `tokenizer.json` (an imported one) or as `vocab.json` / `merges.txt` (GPT-2's
byte-level BPE). gen's `char` and `byte` tokenizers are written as a `tokenizer.json` that
the `tokenizers` library (and so transformers' `PreTrainedTokenizerFast`) runs with the same
ids: a BPE model without merges over the characters (char: each character its id, no
pre-tokenizer, the pieces fused on decoding) or over GPT-2's byte-to-character table (byte:
each UTF-8 byte its value, byte-level pre-tokenizer and decoder). A SentencePiece tokenizer
trained by gen has no such file, and the export says so.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from gen.core.interop import Exporter, InputError
from gen.lm.models import mlp_width, rope_scaling_of

SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def save_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
  """A safetensors file of numpy arrays, bfloat16 ones too (which safetensors' numpy API
  cannot write)."""
  header, offset, blobs = {}, 0, []
  for name in sorted(tensors):
    x = np.ascontiguousarray(tensors[name])
    dtype = SAFETENSORS_DTYPES[np.dtype(x.dtype).name]
    data = x.astype(x.dtype.newbyteorder("<")).tobytes()
    header[name] = {"dtype": dtype, "shape": list(x.shape),
                    "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
    blobs.append(data)
  header["__metadata__"] = {"format": "pt"}
  head = json.dumps(header, separators=(",", ":")).encode()
  head += b" " * (-len(head) % 8)
  with open(path, "wb") as f:
    f.write(len(head).to_bytes(8, "little"))
    f.write(head)
    for data in blobs:
      f.write(data)


def _write_json(path: str, d: dict) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(d, f, indent=2, ensure_ascii=False)
    f.write("\n")


def kind_of(m) -> str:
  """gpt2, llama, qwen2, qwen3 or gemma: the transformers model that computes what `m` (a
  config's model section) does; an InputError naming the key that fits none."""
  get = lambda k, d: m.get(k, d)  # noqa: E731
  norm, mlp, positions = m.norm, m.mlp, m.positions
  heads, width = m.num_heads, m.width
  kv, head_dim = get("num_kv_heads", 0) or heads, get("head_dim", 0) or width // heads
  hidden = mlp_width(mlp, width, get("mlp_hidden", 0))
  qkv_bias, qk_norm = get("qkv_bias", False), get("qk_norm", False)
  embed_scale = get("embed_scale", False)

  def refuse(key, value, why):
    raise InputError(f"model.{key}={value!r} cannot be exported ({why})")

  if positions == "learned":
    why = "a model with learned positions is a GPT-2"
    for key, value, want in (("norm", norm, "layernorm"), ("mlp", mlp, "gelu"),
                             ("use_bias", m.use_bias, True), ("num_kv_heads", kv, heads),
                             ("head_dim", head_dim, width // heads),
                             ("mlp_hidden", hidden, 4 * width), ("qkv_bias", qkv_bias, False),
                             ("qk_norm", qk_norm, False), ("embed_scale", embed_scale, False)):
      if value != want:
        refuse(key, value, f"{why}: {key}={want!r}")
    if width % heads:
      refuse("num_heads", heads, f"{why}: width {width} must be divisible by it")
    return "gpt2"
  if norm == "rmsnorm_1p" or mlp == "geglu" or embed_scale:
    why = "Gemma has rmsnorm_1p, geglu and embed_scale together, and no biases or q/k norm"
    for key, value, want in (("norm", norm, "rmsnorm_1p"), ("mlp", mlp, "geglu"),
                             ("embed_scale", embed_scale, True), ("use_bias", m.use_bias, False),
                             ("qkv_bias", qkv_bias, False), ("qk_norm", qk_norm, False)):
      if value != want:
        refuse(key, value, why)
    kind = "gemma"
  else:
    why = "LLaMA, Qwen2 and Qwen3 have rmsnorm and swiglu"
    if norm != "rmsnorm":
      refuse("norm", norm, why)
    if mlp != "swiglu":
      refuse("mlp", mlp, why)
    if qk_norm and (qkv_bias or m.use_bias):
      refuse("qk_norm", qk_norm, "Qwen3 (q/k norm) has no biases")
    if qkv_bias and m.use_bias:
      refuse("qkv_bias", qkv_bias, "biases everywhere (use_bias) already include q/k/v")
    kind = "qwen3" if qk_norm else "qwen2" if qkv_bias else "llama"
  if positions != "rotary":
    refuse("positions", positions, "learned or rotary")
  if rope_scaling_of(m) and kind != "llama":
    refuse("rope_scaling", dict(rope_scaling_of(m)), f"written for LLaMA, not {kind}")
  return kind


def _torch_linear(kernel: np.ndarray, inputs: int) -> np.ndarray:
  """A flax kernel [in..., out...] as a torch Linear's weight [out, in]."""
  return np.ascontiguousarray(kernel.reshape(inputs, -1).T)


def gpt2_tensors(params: dict, m) -> dict[str, np.ndarray]:
  e = m.width
  out = {"transformer.wte.weight": params["embed"]["embedding"],
         "transformer.wpe.weight": params["pos_embed"]["embedding"],
         "transformer.ln_f.weight": params["final_norm"]["scale"],
         "transformer.ln_f.bias": params["final_norm"]["bias"]}
  for i in range(m.num_layers):
    b, p = params[f"block{i}"], f"transformer.h.{i}."
    out.update({
        p + "ln_1.weight": b["norm1"]["scale"], p + "ln_1.bias": b["norm1"]["bias"],
        p + "attn.c_attn.weight": b["attn"]["qkv"]["kernel"].reshape(e, 3 * e),
        p + "attn.c_attn.bias": b["attn"]["qkv"]["bias"].reshape(3 * e),
        p + "attn.c_proj.weight": b["attn"]["out"]["kernel"].reshape(e, e),
        p + "attn.c_proj.bias": b["attn"]["out"]["bias"],
        p + "ln_2.weight": b["norm2"]["scale"], p + "ln_2.bias": b["norm2"]["bias"],
        p + "mlp.c_fc.weight": b["mlp"]["fc"]["kernel"], p + "mlp.c_fc.bias": b["mlp"]["fc"]["bias"],
        p + "mlp.c_proj.weight": b["mlp"]["proj"]["kernel"],
        p + "mlp.c_proj.bias": b["mlp"]["proj"]["bias"]})
  if not m.tie_embeddings:
    out["lm_head.weight"] = np.ascontiguousarray(params["head"]["kernel"].T)
  return out


def llama_tensors(params: dict, m, kind: str) -> dict[str, np.ndarray]:
  e = m.width
  out = {"model.embed_tokens.weight": params["embed"]["embedding"],
         "model.norm.weight": params["final_norm"]["scale"]}
  for i in range(m.num_layers):
    b, p = params[f"block{i}"], f"model.layers.{i}."
    attn, mlp = b["attn"], b["mlp"]
    if "qkv" in attn:
      qkv = attn["qkv"]  # kernel [E, 3, H, D], bias [3, H, D]
      kernels = {n: qkv["kernel"][:, j] for j, n in enumerate("qkv")}
      biases = ({n: qkv["bias"][j] for j, n in enumerate("qkv")} if "bias" in qkv else {})
    else:
      kernels = {"q": attn["q"]["kernel"], "k": attn["kv"]["kernel"][:, 0],
                 "v": attn["kv"]["kernel"][:, 1]}
      biases = ({"q": attn["q"]["bias"], "k": attn["kv"]["bias"][0], "v": attn["kv"]["bias"][1]}
                if "bias" in attn["q"] else {})
    for n in "qkv":
      out[p + f"self_attn.{n}_proj.weight"] = _torch_linear(kernels[n], e)
      if n in biases:
        out[p + f"self_attn.{n}_proj.bias"] = biases[n].reshape(-1)
    if kind == "qwen3":
      out[p + "self_attn.q_norm.weight"] = attn["q_norm"]["scale"]
      out[p + "self_attn.k_norm.weight"] = attn["k_norm"]["scale"]
    o = attn["out"]["kernel"]  # [H, D, E]
    out[p + "self_attn.o_proj.weight"] = np.ascontiguousarray(o.reshape(-1, e).T)
    fc = mlp["fc"]["kernel"]  # [E, 2F]: gate | up
    f = fc.shape[1] // 2
    out[p + "mlp.gate_proj.weight"] = np.ascontiguousarray(fc[:, :f].T)
    out[p + "mlp.up_proj.weight"] = np.ascontiguousarray(fc[:, f:].T)
    out[p + "mlp.down_proj.weight"] = np.ascontiguousarray(mlp["proj"]["kernel"].T)
    if "bias" in attn["out"]:
      out[p + "self_attn.o_proj.bias"] = attn["out"]["bias"]
      out[p + "mlp.gate_proj.bias"] = mlp["fc"]["bias"][:f]
      out[p + "mlp.up_proj.bias"] = mlp["fc"]["bias"][f:]
      out[p + "mlp.down_proj.bias"] = mlp["proj"]["bias"]
    out[p + "input_layernorm.weight"] = b["norm1"]["scale"]
    out[p + "post_attention_layernorm.weight"] = b["norm2"]["scale"]
  if not m.tie_embeddings:
    out["lm_head.weight"] = np.ascontiguousarray(params["head"]["kernel"].T)
  return out


ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "gemma": "GemmaForCausalLM"}


def model_config(m, kind: str, vocab_size: int, context: int, dtype: str, ids: dict) -> dict:
  """config.json of the transformers model `kind` for a config's model section `m`."""
  base = {"architectures": [ARCHITECTURES[kind]], "model_type": kind, "vocab_size": vocab_size,
          "tie_word_embeddings": bool(m.tie_embeddings), "dtype": dtype, "torch_dtype": dtype,
          "use_cache": True, **ids}
  if kind == "gpt2":
    return {**base, "n_embd": m.width, "n_layer": m.num_layers, "n_head": m.num_heads,
            "n_positions": context, "n_ctx": context, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": float(m.norm_eps),
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "scale_attn_weights": True}
  heads = m.num_heads
  head_dim = m.get("head_dim", 0) or m.width // heads
  scaling = dict(rope_scaling_of(m))
  theta = float(m.get("rope_theta", 10000.0))
  d = {**base, "hidden_size": m.width, "intermediate_size": mlp_width(m.mlp, m.width,
                                                                     m.get("mlp_hidden", 0)),
       "num_hidden_layers": m.num_layers, "num_attention_heads": heads,
       "num_key_value_heads": m.get("num_kv_heads", 0) or heads, "head_dim": head_dim,
       "max_position_embeddings": context, "rms_norm_eps": float(m.norm_eps),
       "hidden_act": "gelu_pytorch_tanh" if kind == "gemma" else "silu",
       "attention_dropout": 0.0, "rope_theta": theta,
       "rope_parameters": {"rope_type": "default", "rope_theta": theta, **scaling}}
  if scaling:
    d["rope_scaling"] = {**scaling}
  if kind == "llama":
    d.update(attention_bias=bool(m.use_bias), mlp_bias=bool(m.use_bias))
  if kind in ("qwen3", "gemma"):
    d["attention_bias"] = False
  if kind in ("qwen2", "qwen3"):
    d.update(use_sliding_window=False, sliding_window=None)
  return d


def char_level_tokenizer(tok):
  """A `tokenizers.Tokenizer` giving gen's `char` or `byte` tokenizer's ids (see the module
  docstring), or None for another kind."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers

  if tok.name == "char":
    t = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(tok.vocab)}, merges=[]))
    t.decoder = decoders.Fuse()
    return t
  if tok.name == "byte":
    table = pre_tokenizers.ByteLevel.alphabet()  # GPT-2's 256 byte characters, unordered.
    chars = {ord(c): c for c in table}
    # GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others for
    # 256, 257, ... in byte order.
    printable = [b for b in range(256) if b in chars and chr(b) == chars[b]]
    order, n = {}, 0
    for b in range(256):
      if b in printable:
        order[chr(b)] = b
      else:
        order[chr(256 + n)] = b
        n += 1
    if set(order) != set(table):
      raise InputError("the tokenizers library's byte-level alphabet is not GPT-2's")
    t = Tokenizer(models.BPE(vocab=order, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    t.decoder = decoders.ByteLevel()
    return t
  return None


def write_tokenizer(tok, folder: str) -> list[str]:
  """The tokenizer's transformers files in `folder` (their names; none for a kind without
  them)."""
  if tok is None:
    return []
  char_level = char_level_tokenizer(tok)
  if char_level is not None:
    char_level.save(os.path.join(folder, "tokenizer.json"))
    _write_json(os.path.join(folder, "tokenizer_config.json"),
                {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces":
                 False})
    return ["tokenizer.json", "tokenizer_config.json"]
  if tok.name == "tokenizer_json":
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
      f.write(tok.spec)
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", **tok.special}
    if tok.chat_template:
      tc["chat_template"] = tok.chat_template
    _write_json(os.path.join(folder, "tokenizer_config.json"), tc)
    return ["tokenizer.json", "tokenizer_config.json"]
  if tok.name == "byte_bpe":
    _write_json(os.path.join(folder, "vocab.json"), tok.vocab)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
      f.write("#version: 0.2\n" + "".join(m + "\n" for m in tok.merges))
    special = {t: {"content": t, "special": True} for t in tok.special}
    tc = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
    if "<|endoftext|>" in special:
      tc.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    _write_json(os.path.join(folder, "tokenizer_config.json"), tc)
    return ["vocab.json", "merges.txt", "tokenizer_config.json"]
  return []


def write(config, spec, params, folder: str) -> str:
  """Writes the transformers folder of a run (its config, data spec and sampling params)."""
  import jax

  from gen.lm.data import tokenizer_of

  m = config.model
  vocab_size, context = int(spec.extra["vocab_size"]), int(spec.shape[0])
  kind = kind_of(m)
  params = jax.tree.map(np.asarray, jax.device_get(params))
  tensors = (gpt2_tensors if kind == "gpt2" else
             lambda p, m: llama_tensors(p, m, kind))(params, m)
  dtype = np.dtype(next(iter(tensors.values())).dtype).name
  tok = tokenizer_of(spec)
  start = list(spec.extra.get("start_ids", []))
  ends = list(spec.extra.get("end_ids") or ([spec.extra["end_id"]]
                                            if spec.extra.get("end_id", -1) >= 0 else []))
  ids = {"bos_token_id": start[0] if len(start) == 1 else None,
         "eos_token_id": (ends[0] if len(ends) == 1 else ends) if ends else None}
  if getattr(tok, "pad_id", -1) >= 0:
    ids["pad_token_id"] = tok.pad_id
  _write_json(os.path.join(folder, "config.json"),
              model_config(m, kind, vocab_size, context, dtype, ids))
  _write_json(os.path.join(folder, "generation_config.json"),
              {k: v for k, v in ids.items() if v is not None})
  save_safetensors(os.path.join(folder, "model.safetensors"), tensors)
  written = write_tokenizer(tok, folder)
  n = sum(math.prod(x.shape) for x in tensors.values())
  note = (f"tokenizer: {', '.join(written)}" if written else
          f"no tokenizer file: gen's {tok.name if tok else 'missing'} tokenizer has no "
          "transformers form")
  return f"{ARCHITECTURES[kind]} ({n:,} params, {dtype}); {note}"


EXPORTER = Exporter("a transformers folder (GPT-2, LLaMA, Qwen2, Qwen3 or Gemma)", write)
