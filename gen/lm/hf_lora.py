"""PEFT LoRA adapters for the LLaMA-kind models (LLaMA, Mistral, Qwen2, Qwen3, Gemma).

A PEFT adapter folder holds `adapter_config.json` (`peft_type: LORA`, `r`, `lora_alpha`,
`use_rslora`, `target_modules`) and `adapter_model.safetensors` with, for each adapted
`torch.nn.Linear` of the transformers model, `base_model.model.<module>.lora_A.weight` [r, in]
and `...lora_B.weight` [out, r]; PEFT computes W + s * B @ A with s = lora_alpha / r
(lora_alpha / sqrt(r) with use_rslora).

gen's kernels fuse some of transformers' Linears (`gen.lm.hf_llama`): q, k, v in `qkv`
[width, 3, heads, head_dim] (or `q` and `kv` with fewer key/value heads), gate and up in `fc`
[width, gate | up]. Each transformers Linear is therefore a column range of one gen kernel
flattened to [inputs, outputs] (`slots`). Reading an adapter adds s * (B @ A)^T to its columns
(exactly PEFT's `merge_and_unload`, in float32); writing one gives each Linear of a fused
kernel the kernel's A and its own columns of B, which is the same matrix.

Refused by name: other adapter types (LoHa, LoKr, AdaLoRA, IA3, ...), DoRA, per-module ranks or
alphas (`rank_pattern`, `alpha_pattern`), `modules_to_save`, biases, `fan_in_fan_out`, LoRA on
embeddings; an adapter for another base (a module this model lacks, a shape that does not fit)
is named.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from gen.core import lora
from gen.core.interop import InputError, LoraFormat, load_safetensors, read_json
from gen.lm import hf_export

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


def slots(params) -> dict[str, tuple[str, int, int]]:
  """transformers Linear name -> (gen kernel path, first column, end column) of the kernel
  flattened to [inputs, outputs] (gen.lm.steps.lora_in_axes)."""
  out = {}
  i = 0
  while f"block{i}" in params:
    b, p, g = params[f"block{i}"], f"model.layers.{i}.", f"block{i}/"
    attn, mlp = b["attn"], b["mlp"]
    if "qkv" in attn:
      _, _, h, d = attn["qkv"]["kernel"].shape
      for j, n in enumerate("qkv"):
        out[p + f"self_attn.{n}_proj"] = (g + "attn/qkv/kernel", j * h * d, (j + 1) * h * d)
    else:
      _, h, d = attn["q"]["kernel"].shape
      _, _, kv, _ = attn["kv"]["kernel"].shape
      out[p + "self_attn.q_proj"] = (g + "attn/q/kernel", 0, h * d)
      out[p + "self_attn.k_proj"] = (g + "attn/kv/kernel", 0, kv * d)
      out[p + "self_attn.v_proj"] = (g + "attn/kv/kernel", kv * d, 2 * kv * d)
    width = attn["out"]["kernel"].shape[-1]
    out[p + "self_attn.o_proj"] = (g + "attn/out/kernel", 0, width)
    f = mlp["fc"]["kernel"].shape[1] // 2
    out[p + "mlp.gate_proj"] = (g + "mlp/fc/kernel", 0, f)
    out[p + "mlp.up_proj"] = (g + "mlp/fc/kernel", f, 2 * f)
    out[p + "mlp.down_proj"] = (g + "mlp/proj/kernel", 0, width)
    i += 1
  if "head" in params:
    out["lm_head"] = ("head/kernel", 0, params["head"]["kernel"].shape[1])
  return out


def _check_model(config) -> None:
  kind = hf_export.kind_of(config.model)
  if kind == "gpt2":
    raise InputError("PEFT adapters are read and written for the LLaMA-kind models (LLaMA, "
                     "Mistral, Qwen2, Qwen3, Gemma); this run is a GPT-2")


OTHER_TYPES = {"LOHA": "LoHa", "LOKR": "LoKr", "ADALORA": "AdaLoRA", "IA3": "IA3",
               "OFT": "OFT", "BOFT": "BOFT", "VERA": "VeRA", "PROMPT_TUNING": "prompt tuning",
               "PREFIX_TUNING": "prefix tuning", "P_TUNING": "P-tuning"}


def read_config(folder: str) -> dict:
  """adapter_config.json, checked: what gen reads exactly, or an InputError naming the field."""
  path = os.path.join(folder, CONFIG)
  c = read_json(path)
  kind = str(c.get("peft_type", ""))
  if kind != "LORA":
    name = OTHER_TYPES.get(kind.upper(), kind or "(none)")
    raise InputError(f"{path}: peft_type={kind!r}: {name} adapters are not supported (LoRA "
                     "only)")
  refusals = (("use_dora", "DoRA (weight-decomposed LoRA) is not supported"),
              ("rank_pattern", "per-module ranks are not supported"),
              ("alpha_pattern", "per-module alphas are not supported"),
              ("modules_to_save", "full copies of modules are not supported"),
              ("fan_in_fan_out", "Conv1D-style (GPT-2) weights are not supported"),
              ("use_qalora", "QA-LoRA is not supported"),
              ("lora_bias", "biases on lora_B are not supported"),
              ("layer_replication", "replicated layers are not supported"),
              ("trainable_token_indices", "trained token embeddings are not supported"),
              ("target_parameters", "LoRA on bare parameters is not supported"))
  for field, why in refusals:
    if c.get(field):
      raise InputError(f"{path}: {field}={c[field]!r}: {why}")
  if c.get("bias", "none") != "none":
    raise InputError(f"{path}: bias={c['bias']!r}: trained biases are not supported")
  r, alpha = c.get("r"), c.get("lora_alpha")
  if not isinstance(r, int) or r <= 0 or not isinstance(alpha, (int, float)):
    raise InputError(f"{path}: r must be a positive integer and lora_alpha a number, got "
                     f"r={r!r}, lora_alpha={alpha!r}")
  return c


def read(folder: str, params) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """(adapter config, {transformers module: (A [r, in], B [out, r]) float32}), checked
  against `params` (gen's, for the module layout and shapes)."""
  c = read_config(folder)
  path = os.path.join(folder, WEIGHTS)
  tensors = load_safetensors(path)
  where = slots(params)
  leaves = lora.named_leaves(params)
  found: dict[str, dict[str, np.ndarray]] = {}
  for key, x in tensors.items():
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    module, _, part = name.rpartition(".lora_")
    if part not in ("A.weight", "B.weight"):
      what = ("DoRA's magnitude vector" if "lora_magnitude_vector" in key else
              "LoRA on an embedding" if "lora_embedding" in key else "not a LoRA A/B weight")
      raise InputError(f"{path}: {key}: {what}, not supported")
    if module not in where:
      raise InputError(f"{path}: {key}: this model has no module {module} (an adapter for "
                       f"another base?)")
    found.setdefault(module, {})[part[0]] = np.asarray(x, np.float32)
  if not found:
    raise InputError(f"{path}: no LoRA weights")
  out = {}
  for module, ab in found.items():
    if set(ab) != {"A", "B"}:
      raise InputError(f"{path}: {module} has lora_{'A' if 'B' in ab else 'B'}.weight missing")
    gen_path, lo, hi = where[module]
    shape = leaves[gen_path].shape
    n_in = math.prod(shape[:_n_in(gen_path, shape)])
    a, b = ab["A"], ab["B"]
    if a.ndim != 2 or b.ndim != 2 or a.shape != (c["r"], n_in) or b.shape != (hi - lo, c["r"]):
      raise InputError(f"{path}: shape mismatch at {module}: lora_A {a.shape}, lora_B "
                       f"{b.shape}; this model (r={c['r']}) takes lora_A ({c['r']}, {n_in}) "
                       f"and lora_B ({hi - lo}, {c['r']}) (an adapter for another base?)")
    out[module] = (a, b)
  return c, out


def _n_in(path: str, shape) -> int:
  from gen.lm.steps import lora_in_axes

  return lora_in_axes(path, tuple(shape))


def merge(config, spec, params, folder: str, scale: float = 1.0):
  """`params` (numpy) with the adapter in `folder` merged, times `scale`: (params, summary)."""
  del spec
  _check_model(config)
  c, adapters = read(folder, params)
  s = lora.scale_of(c["r"], c["lora_alpha"], bool(c.get("use_rslora"))) * float(scale)
  out = _copy(params)
  where = slots(out)
  leaves = lora.named_leaves(out)
  for module, (a, b) in adapters.items():
    gen_path, lo, hi = where[module]
    kernel = leaves[gen_path]
    n_in = math.prod(kernel.shape[:_n_in(gen_path, kernel.shape)])
    flat = kernel.reshape(n_in, -1)  # A view: the kernel is a fresh float32 array.
    flat[:, lo:hi] += (s * (b @ a)).T
  dtypes = {k: v.dtype for k, v in lora.named_leaves(params).items()}
  out = _cast(out, dtypes)
  return out, (f"PEFT LoRA from {folder}: r={c['r']}, lora_alpha={c['lora_alpha']}"
               f"{', rslora' if c.get('use_rslora') else ''}, scale {s:g} on "
               f"{len(adapters)} modules")


def _copy(tree):
  if isinstance(tree, dict):
    return {k: _copy(v) for k, v in tree.items()}
  return np.array(tree, np.float32)


def _cast(tree, dtypes, prefix=""):
  if isinstance(tree, dict):
    return {k: _cast(v, dtypes, f"{prefix}{k}/") for k, v in tree.items()}
  return tree.astype(dtypes[prefix[:-1]])


def write(config, spec, params, plan: lora.Plan, factors, folder: str, base: str = "") -> str:
  """Writes the factors of a LoRA run (on `params`, its base) as a PEFT adapter folder for its
  exported base (named `base` in the adapter's config)."""
  del spec
  _check_model(config)
  lc = config.optim.lora
  factors = {k: np.asarray(v, np.float32) for k, v in lora.named_leaves(factors).items()}
  by_path: dict[str, list[tuple[str, int, int]]] = {}
  shapes = {t.path for t in plan.targets}
  for module, (gen_path, lo, hi) in slots(params).items():
    if gen_path in shapes:
      by_path.setdefault(gen_path, []).append((module, lo, hi))
  tensors = {}
  for t in plan.targets:
    if t.path not in by_path:
      raise InputError(f"optim.lora.targets adapts {t.path}, which has no PEFT form for a "
                       "transformers model")
    a, b = factors[t.path + "/a"], factors[t.path + "/b"]
    for module, lo, hi in by_path[t.path]:
      tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a.T)
      tensors[f"{PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b[:, lo:hi].T)
  modules = sorted({k[len(PREFIX):].rpartition(".lora_")[0] for k in tensors})
  adapter = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(lc.rank),
             "lora_alpha": float(lc.alpha), "use_rslora": bool(lc.rslora),
             "target_modules": modules, "lora_dropout": 0.0, "bias": "none",
             "fan_in_fan_out": False, "use_dora": False, "modules_to_save": None,
             "init_lora_weights": True, "inference_mode": True,
             "base_model_name_or_path": base or None}
  with open(os.path.join(folder, CONFIG), "w") as f:
    json.dump(adapter, f, indent=2)
    f.write("\n")
  hf_export.save_safetensors(os.path.join(folder, WEIGHTS), tensors)
  return (f"PEFT LoRA adapter (r={lc.rank}, lora_alpha={lc.alpha}"
          f"{', rslora' if lc.rslora else ''}) on {len(modules)} modules")


FORMAT = LoraFormat("a PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors)",
                    merge, write)
