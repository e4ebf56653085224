"""GPT-2 from a transformers checkpoint folder, as a gen workdir.

`gen import --from=DIR --workdir=W` reads a folder that transformers' `save_pretrained` wrote
for a `GPT2LMHeadModel` (or `GPT2Model`): `config.json`, the weights (`model.safetensors`,
sharded `model.safetensors.index.json`, or `pytorch_model.bin` when torch is installed) and
the tokenizer (`vocab.json` + `merges.txt`, or `tokenizer.json`). It writes `W/config.json`,
`W/data_spec.json` (with the byte-level BPE tokenizer) and a checkpoint at step 0, so
`gen sample --workdir=W`, `gen eval --workdir=W --config.data.name=text:PATH` and
`--config.init_from=W` work as on a trained run. Nothing downloads.

The weights map one to one (transformers' `Conv1D` stores `[in, out]`, as flax's kernels):

  wte.weight [V, E]               -> embed/embedding (the output layer too: tied)
  wpe.weight [P, E]               -> pos_embed/embedding (learned positions)
  h.i.ln_1.{weight, bias}         -> block{i}/norm1/{scale, bias}
  h.i.attn.c_attn.weight [E, 3E]  -> block{i}/attn/qkv/kernel [E, 3, H, E/H] (q | k | v, heads
                                     in order within each), c_attn.bias [3E] the same way
  h.i.attn.c_proj.weight [E, E]   -> block{i}/attn/out/kernel [H, E/H, E], c_proj.bias -> bias
  h.i.ln_2.{weight, bias}         -> block{i}/norm2/{scale, bias}
  h.i.mlp.c_fc.{weight, bias}     -> block{i}/mlp/fc/{kernel, bias} ([E, 4E])
  h.i.mlp.c_proj.{weight, bias}   -> block{i}/mlp/proj/{kernel, bias} ([4E, E])
  ln_f.{weight, bias}             -> final_norm/{scale, bias}
  lm_head.weight [V, E]           -> head/kernel [E, V] (only with tie_word_embeddings false)

(with or without the `transformer.` prefix; the causal-mask buffers `h.i.attn.bias` /
`masked_bias` of old checkpoints are not weights and are skipped). The model is gen's GPT with
pre-LayerNorm at `layer_norm_epsilon`, the tanh GELU (`gelu_new`), biases, and attention
scaled by 1/sqrt(head_dim). A config.json field gen's GPT cannot express is refused, by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from gen.core.config import ConfigDict
from gen.core.interop import (Importer, InputError, finish_config, frozen_run, load_safetensors,
                              load_torch, read_json, save_workdir)
from gen.lm.config import default_config
from gen.lm.data import bpe, token_spec
from gen.lm.steps import make

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # The same tanh approximation of GELU.
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")


def recognizes(folder: str) -> bool:
  try:
    return read_json(os.path.join(folder, CONFIG)).get("model_type") == "gpt2"
  except InputError:
    return False


# ------------------------------------------------------------------------- config.json


def read_config(folder: str) -> dict:
  """The architecture of `folder/config.json`, each field checked against what gen's GPT does."""
  path = os.path.join(folder, CONFIG)
  d = read_json(path)

  def refuse(field, why):
    raise InputError(f"{path}: {field}={d.get(field)!r} is not supported ({why})")

  def positive_int(field):
    v = d.get(field)
    if type(v) is not int or v <= 0:
      refuse(field, "expected a positive integer")
    return v

  if d.get("model_type") != "gpt2":
    refuse("model_type", "this importer reads GPT-2: 'gpt2'")
  archs = d.get("architectures") or ["GPT2LMHeadModel"]
  if not isinstance(archs, list) or any(a not in ARCHITECTURES for a in archs):
    refuse("architectures", f"supported: {', '.join(ARCHITECTURES)}")
  a = {k: positive_int(k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
  if a["n_embd"] % a["n_head"]:
    refuse("n_head", f"n_embd={a['n_embd']} is not divisible by it")
  if d.get("n_inner") not in (None, 4 * a["n_embd"]):
    refuse("n_inner", f"gen's MLP is 4 * n_embd = {4 * a['n_embd']} wide")
  if d.get("activation_function", "gelu_new") not in ACTIVATIONS:
    refuse("activation_function", f"gen's GPT uses the tanh GELU: {' or '.join(ACTIVATIONS)}")
  for field, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("add_cross_attention", False)):
    if d.get(field, want) is not want:
      refuse(field, f"gen's GPT has {field}={want}")
  eps = d.get("layer_norm_epsilon", 1e-5)
  if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
    refuse("layer_norm_epsilon", "expected a positive number")
  a["norm_eps"] = float(eps)
  tied = d.get("tie_word_embeddings", True)
  if not isinstance(tied, bool):
    refuse("tie_word_embeddings", "expected true or false")
  a["tied"] = tied
  for field in ("bos_token_id", "eos_token_id"):
    v = d.get(field)
    v = v[0] if isinstance(v, list) and v else v
    a[field] = v if type(v) is int and 0 <= v < a["vocab_size"] else None
  return a


# ----------------------------------------------------------------------------- weights


def expected_shapes(a: dict) -> dict[str, tuple[int, ...]]:
  """The tensors a GPT-2 of architecture `a` saves (names without `transformer.`)."""
  e, f = a["n_embd"], 4 * a["n_embd"]
  shapes = {"wte.weight": (a["vocab_size"], e), "wpe.weight": (a["n_positions"], e),
            "ln_f.weight": (e,), "ln_f.bias": (e,)}
  for i in range(a["n_layer"]):
    p = f"h.{i}."
    shapes.update({
        p + "ln_1.weight": (e,), p + "ln_1.bias": (e,),
        p + "attn.c_attn.weight": (e, 3 * e), p + "attn.c_attn.bias": (3 * e,),
        p + "attn.c_proj.weight": (e, e), p + "attn.c_proj.bias": (e,),
        p + "ln_2.weight": (e,), p + "ln_2.bias": (e,),
        p + "mlp.c_fc.weight": (e, f), p + "mlp.c_fc.bias": (f,),
        p + "mlp.c_proj.weight": (f, e), p + "mlp.c_proj.bias": (e,)})
  if not a["tied"]:
    shapes["lm_head.weight"] = (a["vocab_size"], e)
  return shapes


def read_tensors(folder: str) -> dict[str, tuple[np.ndarray, str]]:
  """Every tensor of the folder's weights: `{name: (array, file it came from)}`."""
  index = os.path.join(folder, SAFETENSORS_INDEX)
  if os.path.isfile(os.path.join(folder, SAFETENSORS)):
    files = [os.path.join(folder, SAFETENSORS)]
  elif os.path.isfile(index):
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
      raise InputError(f"{index}: no weight_map")
    files = [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]
  elif os.path.isfile(os.path.join(folder, TORCH_BIN)):
    path = os.path.join(folder, TORCH_BIN)
    return {k: (v, path) for k, v in load_torch(path, SAFETENSORS).items()}
  else:
    raise InputError(f"{folder}: no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN})")
  out = {}
  for path in files:
    for k, v in load_safetensors(path).items():
      if k in out:
        raise InputError(f"{path}: tensor {k} is also in {out[k][1]}")
      out[k] = (v, path)
  return out


def _is_mask_buffer(name: str, x: np.ndarray) -> bool:
  """The causal-mask buffers old GPT-2 checkpoints saved with the weights."""
  parts = name.split(".")
  return (len(parts) == 4 and parts[0] == "h" and parts[2] == "attn"
          and parts[3] in ("bias", "masked_bias") and (x.ndim == 4 or x.ndim == 0))


def to_params(tensors: dict[str, tuple[np.ndarray, str]], a: dict) -> dict:
  """gen's GPT params (float32 numpy) from a GPT-2's tensors; an InputError naming the file and
  tensor for a tensor missing, extra, ill-shaped or not floating point."""
  prefix = "transformer."
  named = {}
  for name, (x, path) in tensors.items():
    short = name.removeprefix(prefix)
    if short in named:
      raise InputError(f"{path}: tensor {name} appears twice (with and without {prefix!r})")
    if _is_mask_buffer(short, x):
      continue
    named[short] = (name, x, path)
  want = expected_shapes(a)
  source = next(iter(tensors.values()))[1] if tensors else "the weights"
  shown = prefix if any(k.startswith(prefix) for k in tensors) else ""
  if a["tied"] and "lm_head.weight" in named:  # Saved anyway by some versions: must be wte.
    name, x, path = named.pop("lm_head.weight")
    wte = named.get("wte.weight")
    if wte is not None and (x.shape != wte[1].shape or not np.array_equal(x, wte[1])):
      raise InputError(f"{path}: tensor {name} differs from {wte[0]}, but config.json ties them "
                       "(tie_word_embeddings=true)")
  for short, shape in want.items():
    if short not in named:
      name = short if short.startswith("lm_head") else shown + short
      raise InputError(f"{source}: tensor {name} is missing (shape {shape} expected)")
  for short, (name, x, path) in named.items():
    if short not in want:
      raise InputError(f"{path}: tensor {name} {tuple(x.shape)} is not a GPT-2 weight of this "
                       "config.json")
    if tuple(x.shape) != want[short]:
      raise InputError(f"{path}: tensor {name} has shape {tuple(x.shape)}, config.json implies "
                       f"{want[short]}")
    if not np.issubdtype(x.dtype, np.floating):
      raise InputError(f"{path}: tensor {name} is {x.dtype}, not floating point")
  w = {k: np.asarray(v[1], np.float32) for k, v in named.items()}
  e, h = a["n_embd"], a["n_head"]
  d = e // h
  params = {"embed": {"embedding": w["wte.weight"]},
            "pos_embed": {"embedding": w["wpe.weight"]},
            "final_norm": {"scale": w["ln_f.weight"], "bias": w["ln_f.bias"]}}
  for i in range(a["n_layer"]):
    p = f"h.{i}."
    params[f"block{i}"] = {
        "norm1": {"scale": w[p + "ln_1.weight"], "bias": w[p + "ln_1.bias"]},
        "attn": {
            "qkv": {"kernel": w[p + "attn.c_attn.weight"].reshape(e, 3, h, d),
                    "bias": w[p + "attn.c_attn.bias"].reshape(3, h, d)},
            "out": {"kernel": w[p + "attn.c_proj.weight"].reshape(h, d, e),
                    "bias": w[p + "attn.c_proj.bias"]}},
        "norm2": {"scale": w[p + "ln_2.weight"], "bias": w[p + "ln_2.bias"]},
        "mlp": {"fc": {"kernel": w[p + "mlp.c_fc.weight"], "bias": w[p + "mlp.c_fc.bias"]},
                "proj": {"kernel": w[p + "mlp.c_proj.weight"], "bias": w[p + "mlp.c_proj.bias"]}}}
  if not a["tied"]:
    params["head"] = {"kernel": np.ascontiguousarray(w["lm_head.weight"].T)}
  return params


# --------------------------------------------------------------------------- tokenizer


def read_tokenizer(folder: str, a: dict) -> bpe.ByteBPETokenizer:
  """The byte-level BPE of `folder` (vocab.json + merges.txt, else tokenizer.json), checked
  against the model's vocabulary."""
  vocab_path, merges_path = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
  tok_json = os.path.join(folder, "tokenizer.json")
  added = os.path.join(folder, "added_tokens.json")
  if os.path.isfile(added) and read_json(added):
    raise InputError(f"{added}: tokens added beyond vocab.json are not supported")
  try:
    if os.path.isfile(vocab_path) or os.path.isfile(merges_path) or not os.path.isfile(tok_json):
      vocab, merges = bpe.read_files(vocab_path, merges_path)
      special, source = [t for t in ("<|endoftext|>",) if t in vocab], vocab_path
    else:
      vocab, merges, special = bpe.read_tokenizer_json(tok_json)
      source = tok_json
  except bpe.BPEFileError as e:
    raise InputError(str(e)) from None
  top = max(vocab.values(), default=-1)
  if top >= a["vocab_size"]:
    token = next(t for t, i in vocab.items() if i == top)
    raise InputError(f"{source}: token {token!r} has id {top}, outside the model's "
                     f"vocab_size={a['vocab_size']} (config.json): not this model's tokenizer")
  start = [a["bos_token_id"]] if a["bos_token_id"] is not None else []
  end = a["eos_token_id"] if a["eos_token_id"] is not None else -1
  return bpe.ByteBPETokenizer(vocab, merges, special, a["vocab_size"], start, end)


# --------------------------------------------------------------------------- workdir


def workdir_config(a: dict) -> ConfigDict:
  """The config of an imported GPT-2: its architecture, GPT-2's sampling defaults, and data
  keys for `gen eval` (set `data.name` to a `text:PATH`)."""
  c = default_config()
  c.data.name = "text:input.txt"  # For `gen eval`: --config.data.name=text:PATH.
  c.data.tokenizer = bpe.ByteBPETokenizer.name  # Kept in data_spec.json.
  c.data.vocab_size = 0
  c.data.seq_len = a["n_positions"]
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.eval_split = "val"

  c.model.num_layers = a["n_layer"]
  c.model.num_heads = a["n_head"]
  c.model.width = a["n_embd"]
  c.model.norm = "layernorm"
  c.model.norm_eps = a["norm_eps"]
  c.model.mlp = "gelu"
  c.model.positions = "learned"
  c.model.tie_embeddings = a["tied"]
  c.model.use_bias = True
  c.model.dropout = 0.0
  c.model.dtype = "float32"
  c.model.remat = False

  c.sample.max_new_tokens = 100
  c.sample.temperature = 1.0
  c.sample.top_k = 50  # transformers' generate default.
  c.sample.top_p = 1.0
  c.sample.stride = 0

  frozen_run(c)  # Weights to sample, evaluate and start from; not trained in place.
  c.train.num_samples = 2
  return c


def write(folder: str, workdir: str, overrides: Sequence[str] = ()) -> str:
  """Reads and checks everything in `folder`, then writes the gen workdir into `workdir`."""
  import jax

  a = read_config(folder)
  tokenizer = read_tokenizer(folder, a)
  params = to_params(read_tensors(folder), a)
  config = finish_config(workdir_config(a), overrides)
  spec = token_spec(a["n_positions"], tokenizer)
  pipeline = make(config, spec)
  example = spec.example_batch(1)
  abstract = jax.eval_shape(pipeline.init, jax.random.key(config.seed), example)
  want = {jax.tree_util.keystr(p): x.shape
          for p, x in jax.tree_util.tree_leaves_with_path(abstract.params)}
  got = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(params)}
  if want != got:  # An override that changes the model (num_layers, tie_embeddings...).
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    raise InputError(f"the config (with its overrides) builds another model than "
                     f"{os.path.join(folder, CONFIG)}: {', '.join(diff[:4])}")
  n = save_workdir(workdir, config, spec, pipeline, params)
  return (f"GPT-2 from {folder}: {a['n_layer']} layers, {a['n_head']} heads, width "
          f"{a['n_embd']}, context {a['n_positions']}, vocabulary {a['vocab_size']} "
          f"({n:,} params)")


IMPORTER = Importer("a transformers GPT-2 folder (config.json with model_type gpt2)",
                    recognizes, write)
