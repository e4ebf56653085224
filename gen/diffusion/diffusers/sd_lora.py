"""Stable Diffusion LoRA files, as `StableDiffusionPipeline.load_lora_weights` reads them, merged
into a `text_to_image` run (`gen import --lora`), and written as `save_lora_weights` writes them.

Two layouts are read, from a folder (its `pytorch_lora_weights.safetensors`, else its one
`.safetensors` file, else `pytorch_lora_weights.bin` with torch) or from a `.safetensors` file:

- **diffusers** (`save_lora_weights`): `unet.<module>.lora_A.weight` [r, in] (a convolution's
  [r, in, kh, kw]) and `unet.<module>.lora_B.weight` [out, r] ([out, r, 1, 1]), the same under
  `text_encoder.` (a `text_model.` after it is dropped, as older transformers named the CLIP
  modules); the names diffusers' training scripts and older versions wrote are read as
  diffusers converts them (`lora.down` / `lora.up`, `lora_linear_layer.down` / `.up`,
  `.processor.`, the attention processors' `to_q_lora` ... `to_out_lora`). The file's
  `lora_adapter_metadata` (PEFT's `LoraConfig` of each part, `unet.r`, `unet.lora_alpha`,
  `unet.rank_pattern`, ...) sets each module's rank and alpha as PEFT does (a pattern matches a
  module name ending in it, the first that matches wins; `use_rslora`: alpha / sqrt(r)). Without
  metadata, diffusers gives every module alpha = its rank: scale 1.
- **kohya** (sd-scripts, A1111): `lora_unet_<module with _ for .>.lora_down.weight`,
  `.lora_up.weight` and `.alpha`, `lora_te_` (or `lora_te1_`) for the text encoder, module names
  of diffusers' UNet and of CLIPTextModel (`text_model_encoder_layers_0_self_attn_q_proj`). A
  module's scale is its own `.alpha` / its rank; a file without any `.alpha` has scale 1. (A file
  where some modules lack the alpha is refused: kohya gives those scale 1, diffusers the most
  common alpha.)

A module is any linear layer or convolution of the UNet or the text encoder: attention q / k / v
/ out, proj_in / proj_out (a 1x1 convolution in Stable Diffusion 1.x), the feed-forward, the
resnets' conv1 / conv2 / conv_shortcut and time_emb_proj, time_embedding, conv_in / conv_out,
the down- and upsamplers; in the text encoder q_proj / k_proj / v_proj / out_proj and fc1 /
fc2. `merge` adds scale * (alpha / r) * B @ A to each weight (for a convolution, B's 1x1 kernel
times A's kh x kw one, as PEFT's and kohya's Conv2d LoRA compute), in float64, rounded once to
the param's dtype: diffusers' `fuse_lora(lora_scale=scale)`, or its unfused adapter at
`cross_attention_kwargs={"scale": scale}`.

Refused by name, one line each, before anything is written: DoRA (`lora_magnitude_vector`,
`dora_scale`, `use_dora`), LoHa, LoKr, LoCon's Tucker middle (`lora_mid`), full weight
differences (`diff`), biases on lora_B, LoRA on embeddings, the PEFT fields that change what the
adapter computes (`alora_invocation_tokens`, `use_bdlora`, `kasa_config`, ...), SDXL's second
text encoder, an alpha <= 0 or missing on some modules only, keys of no LoRA layout; an adapter
for another base names the key and the shapes (or the module this model lacks).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from gen.core import lora as lora_lib
from gen.core.interop import InputError, LoraFormat, load_torch
from gen.diffusion.diffusers import tensors as tensors_lib

WEIGHTS = "pytorch_lora_weights.safetensors"
TORCH_BIN = "pytorch_lora_weights.bin"
METADATA_KEY = "lora_adapter_metadata"
PARTS = ("unet", "text_encoder")
NAMES = {"unet": "UNet", "text_encoder": "text encoder"}
KOHYA_PARTS = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder"}
TEXT_MODEL = "text_model."

# PEFT LoraConfig fields with no effect on the merged weights (bookkeeping, initialization,
# training, which modules got an adapter: the file's tensors say that).
HARMLESS = frozenset({
    "peft_type", "peft_version", "task_type", "base_model_name_or_path", "revision",
    "inference_mode", "auto_mapping", "init_lora_weights", "lora_dropout", "loftq_config",
    "eva_config", "corda_config", "lora_ga_config", "velora_config", "megatron_config",
    "megatron_core", "target_modules", "exclude_modules", "layers_to_transform",
    "layers_pattern", "qalora_group_size", "ensure_weight_tying", "runtime_config"})
READ = frozenset({"r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "bias"})
REFUSED = {
    "use_dora": "DoRA (weight-decomposed LoRA) is not supported",
    "lora_bias": "biases on lora_B are not supported",
    "modules_to_save": "full copies of modules are not supported",
    "fan_in_fan_out": "transposed (Conv1D-style) weights are not supported",
    "use_qalora": "QA-LoRA is not supported",
    "layer_replication": "replicated layers are not supported",
    "trainable_token_indices": "trained embedding rows are not supported",
    "target_parameters": "LoRA on bare parameters is not supported",
    "alora_invocation_tokens": "activated LoRA (aLoRA) is not supported",
    "arrow_config": "Arrow routing is not supported",
    "kasa_config": "KaSA is not supported",
    "monteclora_config": "MonteCLoRA is not supported",
    "use_bdlora": "block-diagonal LoRA (BD-LoRA) is not supported",
}
OTHER_TYPES = {"LOHA": "LoHa", "LOKR": "LoKr", "ADALORA": "AdaLoRA", "IA3": "IA3", "OFT": "OFT",
               "BOFT": "BOFT", "VERA": "VeRA", "HRA": "HRA", "BONE": "Bone"}
# Keys of other adapter kinds, by a piece of their name: what to call them.
OTHER_KEYS = (("lora_magnitude_vector", "DoRA's magnitude vector (DoRA is not supported)"),
              ("dora_scale", "DoRA's magnitude (DoRA is not supported)"),
              ("hada_", "a LoHa weight (LoHa is not supported)"),
              ("lokr_", "a LoKr weight (LoKr is not supported)"),
              ("lora_mid", "LoCon's Tucker middle weight (not supported)"),
              ("lora_embedding_", "LoRA on an embedding (not supported)"),
              ("lora_B.bias", "a bias on lora_B (lora_bias is not supported)"),
              ("lora_up.bias", "a bias on lora_up (not supported)"))
# diffusers' spellings of A and B (after the module name), as its converters read them.
_AB = re.compile(r"^(?P<module>.+)\.(?:lora_(?P<peft>[AB])|lora\.(?P<old>down|up)"
                 r"|lora_linear_layer\.(?P<layer>down|up))\.weight$")
# Attention processors' LoRA (diffusers before PEFT): `attn1.to_q_lora.down.weight`.
_PROCESSOR = re.compile(r"^(?P<parent>.+)\.(?P<proj>to_q|to_k|to_v|to_out)_lora\."
                        r"(?P<ab>down|up)\.weight$")
_PROCESSOR_MODULES = {"unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v",
                               "to_out": "to_out.0"},
                      "text_encoder": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj",
                                       "to_out": "out_proj"}}


def layers(params) -> dict[str, dict[str, tuple[tuple[str, ...], tuple[int, ...]]]]:
  """Per part, {diffusers / transformers module name: (its kernel's params path, the torch
  weight's shape)} of every linear layer and convolution, and (shape None) the embeddings."""
  import jax

  out = {}
  for part in PARTS:
    found = {}
    for keys, leaf in jax.tree_util.tree_leaves_with_path(params[part]):
      keys = tuple(k.key for k in keys)
      if keys[-1] in ("kernel", "embedding"):
        name = tensors_lib.torch_name(keys).removesuffix(".weight")
        found[name] = (keys, tensors_lib.torch_shape(keys, np.shape(leaf))
                       if keys[-1] == "kernel" else None)
    out[part] = found
  return out


def kohya_names(table) -> dict[str, tuple[str, str]]:
  """{kohya module name: (part, module)}: `lora_unet_down_blocks_0_..._to_q`,
  `lora_te_text_model_encoder_layers_0_self_attn_q_proj` (also `lora_te1_`, and without
  `text_model_`)."""
  out = {}
  for name in table["unet"]:
    out["lora_unet_" + name.replace(".", "_")] = ("unet", name)
  for name in table["text_encoder"]:
    for prefix in ("lora_te_", "lora_te1_"):
      for full in (TEXT_MODEL + name, name):
        out[prefix + full.replace(".", "_")] = ("text_encoder", name)
  return out


# ------------------------------------------------------------------------------ reading


def find_file(adapter: str) -> str:
  """The weights file of `adapter` (a file, or a folder as diffusers looks in one)."""
  if os.path.isfile(adapter):
    return adapter
  for name in (WEIGHTS, TORCH_BIN):
    if os.path.isfile(os.path.join(adapter, name)):
      return os.path.join(adapter, name)
  found = sorted(f for f in os.listdir(adapter) if f.endswith(".safetensors"))
  if len(found) == 1:
    return os.path.join(adapter, found[0])
  if found:
    raise InputError(f"{adapter}: {len(found)} .safetensors files ({', '.join(found[:4])}): "
                     "give the LoRA file itself")
  raise InputError(f"{adapter}: no LoRA weights ({WEIGHTS}, {TORCH_BIN} or a .safetensors file)")


def read_file(path: str) -> tuple[dict[str, np.ndarray], dict | None]:
  """(tensors as float32 numpy, the parsed lora_adapter_metadata or None) of a LoRA file;
  bfloat16 and float16 tensors are read too."""
  if not path.endswith(".safetensors"):
    return load_torch(path, WEIGHTS), None
  from safetensors import safe_open

  try:
    with safe_open(path, framework="flax") as f:
      header = f.metadata() or {}
      tensors = {k: np.asarray(f.get_tensor(k)).astype(np.float32) for k in f.keys()}
  except Exception as e:  # noqa: BLE001  A bad header, a truncated file.
    raise InputError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
  raw = header.get(METADATA_KEY)
  if not raw:
    return tensors, None
  try:
    metadata = json.loads(raw)
  except ValueError as e:
    raise InputError(f"{path}: {METADATA_KEY} is not JSON ({e})") from None
  if not isinstance(metadata, dict):
    raise InputError(f"{path}: {METADATA_KEY} is not a JSON object")
  return tensors, metadata


def part_config(path: str, metadata: dict | None, part: str) -> dict | None:
  """The LoraConfig fields of `part` in the metadata (None: no metadata), checked."""
  if metadata is None:
    return None
  c = {k[len(part) + 1:]: v for k, v in metadata.items() if k.startswith(part + ".")}
  where = f"{path}: {METADATA_KEY}"
  if not c:
    raise InputError(f"{where} has no {part}.* fields, but the file holds {NAMES[part]} "
                     "weights (diffusers would build its LoRA from PEFT's defaults)")
  kind = str(c.get("peft_type", "LORA"))
  if kind.upper() != "LORA":
    name = OTHER_TYPES.get(kind.upper(), kind)
    raise InputError(f"{where}: {part}.peft_type={kind!r}: {name} adapters are not supported "
                     "(LoRA only)")
  for field, value in c.items():
    if field in REFUSED and value:
      raise InputError(f"{where}: {part}.{field}={value!r}: {REFUSED[field]}")
    if field not in HARMLESS | READ | set(REFUSED) and value not in (None, False, {}, [], ""):
      raise InputError(f"{where}: {part}.{field}={value!r}: a LoraConfig field gen does not "
                       "know (it may change what the adapter computes)")
  if c.get("bias", "none") != "none":
    raise InputError(f"{where}: {part}.bias={c['bias']!r}: trained biases are not supported")
  r, alpha = c.get("r", 8), c.get("lora_alpha", 8)
  if type(r) is not int or r <= 0 or isinstance(alpha, bool) or not isinstance(
      alpha, (int, float)) or alpha <= 0:
    raise InputError(f"{where}: {part}.r must be a positive integer and {part}.lora_alpha a "
                     f"positive number, got r={r!r}, lora_alpha={alpha!r}")
  for field in ("rank_pattern", "alpha_pattern"):
    p = c.get(field) or {}
    if not isinstance(p, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in p.values()):
      raise InputError(f"{where}: {part}.{field} must map module patterns to positive numbers")
    for k in p:
      try:
        re.compile(k)
      except re.error as e:
        raise InputError(f"{where}: {part}.{field} key {k!r} is not a regular expression "
                         f"({e})") from None
  return c


def pattern_value(patterns: dict, module: str, default):
  """PEFT's `get_pattern_key`: the value of the first pattern that matches the end of the
  module name (at a dot), else `default`."""
  for key, value in patterns.items():
    if re.match(rf"(.*\.)?({key})$", module):
      return value
  return default


def _other_kind(key: str) -> str | None:
  for piece, what in OTHER_KEYS:
    if piece in key:
      return what
  return None


def _parse_diffusers(key: str, part: str, rest: str) -> tuple[str, str]:
  """(module, "A" or "B") of a diffusers-layout key (its part prefix removed)."""
  rest = rest.replace(".processor.", ".")
  if part == "text_encoder":
    rest = rest.removeprefix(TEXT_MODEL)
  m = _AB.match(rest)
  if m:
    ab = m["peft"] or {"down": "A", "up": "B"}[m["old"] or m["layer"]]
    return m["module"], ab
  m = _PROCESSOR.match(rest)
  if m:
    return (f"{m['parent']}.{_PROCESSOR_MODULES[part][m['proj']]}",
            {"down": "A", "up": "B"}[m["ab"]])
  raise InputError(f"{key}: {_other_kind(key) or 'not a LoRA A/B weight of a layout gen reads'}")


def read(adapter: str, params) -> tuple[str, str, dict[tuple[str, str], dict]]:
  """(the file, its layout "diffusers" or "kohya", {(part, module): {"A", "B", "alpha", "r"}})
  of a LoRA for the networks `params` (gen's text_to_image params: their modules and shapes),
  every module's A and B checked; alpha is the module's (scale = alpha / r, or alpha /
  sqrt(r) with rslora: `scale_of`)."""
  path = find_file(adapter)
  tensors, metadata = read_file(path)
  if not tensors:
    raise InputError(f"{path}: no tensors")
  table = layers(params)
  kohya = [k for k in tensors if k.startswith(("lora_unet_", "lora_te"))]
  layout = "kohya" if kohya else "diffusers"
  if kohya and len(kohya) != len(tensors):
    other = next(k for k in tensors if k not in set(kohya))
    raise InputError(f"{path}: {other}: kohya keys (lora_unet_..., lora_te_...) mixed with "
                     "others")
  found: dict[tuple[str, str], dict] = {}

  def put(part, module, what, x, key, name):
    entry = found.setdefault((part, module), {"key": key, "name": name})
    if what in entry:
      raise InputError(f"{path}: {key}: {entry['name']}'s {what} appears twice (also in "
                       f"{entry['key']})")
    entry[what] = x

  if layout == "kohya":
    names = kohya_names(table)
    for key, x in tensors.items():
      name, _, rest = key.partition(".")
      if name.startswith("lora_te2_"):
        raise InputError(f"{path}: {key}: a second text encoder's LoRA (SDXL): Stable "
                         "Diffusion 1.x / 2.x have one")
      what = {"lora_down.weight": "A", "lora_up.weight": "B", "alpha": "alpha"}.get(rest)
      if what is None:
        raise InputError(f"{path}: {key}: {_other_kind(key) or 'not a kohya LoRA weight'}")
      if name not in names:
        raise InputError(f"{path}: {key}: this model has no module {name} (an adapter for "
                         "another base, or another UNet's naming?)")
      part, module = names[name]
      put(part, module, what, x, key, name)
  else:
    for key, x in tensors.items():
      part, _, rest = key.partition(".")
      if part not in PARTS:
        what = _other_kind(key)
        raise InputError(f"{path}: {key}: {what or 'not a unet. or text_encoder. LoRA key'}")
      try:
        module, ab = _parse_diffusers(key, part, rest)
      except InputError as e:
        raise InputError(f"{path}: {e}") from None
      if module not in table[part]:
        raise InputError(f"{path}: {key}: the {NAMES[part]} has no module {module} (an adapter "
                         "for another base?)")
      put(part, module, ab, x, key, f"{part}.{module}")
  if not found:
    raise InputError(f"{path}: no LoRA weights")
  missing = [e["name"] for e in found.values() if "alpha" not in e]
  if layout == "kohya" and missing and len(missing) < len(found):
    raise InputError(f"{path}: {missing[0]}.alpha is missing while other modules have one "
                     "(kohya reads it as the rank, scale 1; diffusers as the most common "
                     "alpha)")
  configs = {}
  if layout == "diffusers":
    parts = {p for p, _ in found}
    configs = {part: part_config(path, metadata, part) for part in PARTS if part in parts}
  for (part, module), entry in found.items():
    _check(path, part, module, entry, table[part][module][1], configs.get(part), layout)
  return path, layout, found


def _check(path, part, module, entry, shape, config, layout) -> None:
  """Fills entry's "r" and "alpha" (and "rslora"); an InputError for a missing half, a shape
  that is not this model's, an embedding."""
  key = entry["key"]
  if shape is None:
    raise InputError(f"{path}: {key}: LoRA on an embedding (not supported)")
  for what, name in (("A", "lora_down" if layout == "kohya" else "lora_A"),
                     ("B", "lora_up" if layout == "kohya" else "lora_B")):
    if what not in entry:
      raise InputError(f"{path}: {entry['name']}: its {name}.weight is missing")
  a, b = entry["A"], entry["B"]
  r = a.shape[0] if a.ndim else 0
  if config is not None:
    r = pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8))
  if len(shape) == 2:
    want_a, want_b = (r, shape[1]), (shape[0], r)
  else:
    want_a, want_b = (r, *shape[1:]), (shape[0], r, 1, 1)
  if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
    kind = "linear" if len(shape) == 2 else f"{shape[2]}x{shape[3]} convolution"
    raise InputError(f"{path}: shape mismatch at {entry['name']}: A {tuple(a.shape)}, B "
                     f"{tuple(b.shape)}; this model's {module} ({kind}, weight {tuple(shape)}) "
                     f"takes A {want_a} and B {want_b} (an adapter for another base?)")
  if config is not None:
    alpha = pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
    entry.update(r=r, alpha=float(alpha), rslora=bool(config.get("use_rslora")))
    return
  alpha = entry.get("alpha")
  if alpha is None:  # No metadata / no kohya alphas: alpha = r, scale 1.
    entry.update(r=r, alpha=float(r), rslora=False)
    return
  alpha = np.asarray(alpha)
  if alpha.size != 1 or not float(alpha.reshape(())) > 0:
    raise InputError(f"{path}: {entry['name']}.alpha={alpha.tolist()}: expected one "
                     "positive number (kohya reads 0 as the rank, diffusers as 0)")
  entry.update(r=r, alpha=float(alpha.reshape(())), rslora=False)


def delta(entry) -> np.ndarray:
  """(alpha / r) * B @ A in the torch weight's layout, float64 (a convolution's B is 1x1)."""
  a, b = entry["A"].astype(np.float64), entry["B"].astype(np.float64)
  s = lora_lib.scale_of(entry["r"], entry["alpha"], entry["rslora"])
  if a.ndim == 2:
    return s * (b @ a)
  return s * np.einsum("or,rihw->oihw", b[:, :, 0, 0], a)


def to_gen_layout(d: np.ndarray) -> np.ndarray:
  """A torch weight's layout as gen's kernel: [O, I] -> [I, O], [O, I, kh, kw] -> HWIO."""
  return d.T if d.ndim == 2 else d.transpose(2, 3, 1, 0)


def _dicts(tree):
  """The dicts of `tree` copied, its arrays shared (those merged into are replaced, not
  written to)."""
  return {k: _dicts(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def merge(config, spec, params, adapter: str, scale: float = 1.0):
  """`params` (a text_to_image run's, numpy) with the LoRA in `adapter` merged, times `scale`:
  (params, summary)."""
  del spec
  if config.model.kind != "text_to_image":
    raise InputError(f"Stable Diffusion LoRA files apply to model.kind='text_to_image' runs "
                     f"(gen import of a StableDiffusionPipeline folder); this run is "
                     f"'{config.model.kind}'")
  path, layout, found = read(adapter, params)
  table = layers(params)
  out = _dicts(params)
  for (part, module), entry in found.items():
    keys = table[part][module][0]
    node = out[part]
    for k in keys[:-1]:
      node = node[k]
    w = node[keys[-1]]
    node[keys[-1]] = (w.astype(np.float64) + float(scale) * to_gen_layout(delta(entry))).astype(
        w.dtype)
  return out, f"{layout} LoRA from {path}: {_describe(found)}, times {float(scale):g}"


def _describe(found) -> str:
  parts = []
  for part in PARTS:
    entries = [e for (p, _), e in found.items() if p == part]
    if not entries:
      continue
    ranks = sorted({e["r"] for e in entries})
    scales = sorted({lora_lib.scale_of(e["r"], e["alpha"], e["rslora"]) for e in entries})
    parts.append(f"{NAMES[part]} {len(entries)} modules (rank {'/'.join(map(str, ranks))}, "
                 f"alpha/r {'/'.join(f'{s:g}' for s in scales)})")
  return ", ".join(parts)


# ------------------------------------------------------------------------------ writing


def write(config, spec, params, plan: lora_lib.Plan, factors, folder: str, base: str = "") -> str:
  """Writes the factors of a LoRA run on a text_to_image run's `params` (its base) as
  `save_lora_weights` does: `pytorch_lora_weights.safetensors` with PEFT's names and each
  part's LoraConfig in the file's metadata."""
  from safetensors.numpy import save_file

  del spec
  if config.model.kind != "text_to_image":
    raise InputError(f"Stable Diffusion LoRA files hold text_to_image runs' adapters; this run "
                     f"is '{config.model.kind}'")
  table = layers(params)
  by_path = {"/".join((part, *keys)): (part, module)
             for part in PARTS for module, (keys, shape) in table[part].items()
             if shape is not None}
  named = {k: np.asarray(v, np.float32) for k, v in lora_lib.named_leaves(factors).items()}
  tensors, modules = {}, {p: [] for p in PARTS}
  for t in plan.targets:
    if t.path not in by_path:
      raise InputError(f"optim.lora.targets adapts {t.path}, which no Stable Diffusion LoRA "
                       "file can hold (the UNet's and text encoder's linear layers and "
                       "convolutions only)")
    part, module = by_path[t.path]
    a, b = named[t.path + "/a"], named[t.path + "/b"]  # [prod(shape[:-1]), r], [r, out].
    if len(t.shape) == 4:
      kh, kw, i, _ = t.shape
      a_t = a.reshape(kh, kw, i, plan.rank).transpose(3, 2, 0, 1)
      b_t = b.T[:, :, None, None]
    else:
      a_t, b_t = a.T, b.T
    tensors[f"{part}.{module}.lora_A.weight"] = np.ascontiguousarray(a_t)
    tensors[f"{part}.{module}.lora_B.weight"] = np.ascontiguousarray(b_t)
    modules[part].append(module)
  lc = config.optim.lora
  metadata = {}
  for part in PARTS:
    if modules[part]:
      fields = {"peft_type": "LORA", "r": int(plan.rank), "lora_alpha": float(lc.alpha),
                "use_rslora": bool(lc.rslora), "target_modules": sorted(modules[part]),
                "lora_dropout": 0.0, "bias": "none", "use_dora": False, "rank_pattern": {},
                "alpha_pattern": {}, "init_lora_weights": True, "fan_in_fan_out": False,
                "base_model_name_or_path": base or None}
      metadata.update({f"{part}.{k}": v for k, v in fields.items()})
  save_file(tensors, os.path.join(folder, WEIGHTS), metadata={
      "format": "pt", METADATA_KEY: json.dumps(metadata, indent=2, sort_keys=True)})
  counts = ", ".join(f"{NAMES[p]} {len(modules[p])}" for p in PARTS if modules[p])
  return (f"diffusers LoRA ({WEIGHTS}: r={plan.rank}, lora_alpha={lc.alpha}"
          f"{', rslora' if lc.rslora else ''}; modules: {counts})")


FORMAT = LoraFormat("a Stable Diffusion LoRA (diffusers' pytorch_lora_weights.safetensors or a "
                    "kohya file)", merge, write)

__all__ = ["FORMAT", "layers", "merge", "read", "write"]
