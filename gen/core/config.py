"""Config files: load `get_config()`, apply `--config.a.b=VALUE` overrides, validate.

A config file is a Python module with a `get_config(arg=None)` function returning an
`ml_collections.ConfigDict`. `FILE:ARG` passes `ARG` to `get_config`. Overrides use
the absl/ml_collections syntax (`--config.optim.lr=3e-4`) and are checked against the
keys and types the file defines: an unknown key or a value of the wrong type is a
`ConfigError` that names the key (with the closest valid key as a suggestion).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from gen.core.data import sources

ConfigDict = ml_collections.ConfigDict


class ConfigError(ValueError):
  """A config file, key or value is wrong. The CLI prints it and exits with code 2."""


def base_config() -> ConfigDict:
  """The keys every family shares: seed, data, optimizer, trainer cadence.

  Family config files start from this and add `model` (and anything else they need).
  """
  c = ConfigDict()
  c.family = ""
  c.seed = 0
  # A workdir whose newest checkpoint gives the initial params (its EMA copy when it has
  # one); optimizer state and step start fresh, the data's saved files (e.g. a vocabulary)
  # are kept. Ignored on resume.
  c.init_from = ""

  c.data = ConfigDict()
  c.data.name = sources.DEFAULT  # A registered source (gen.core.data.sources, or a family's).
  c.data.dir = ""  # IDX/TFDS files; falls back to $GEN_DATA_DIR.
  c.data.batch_size = 128  # Global batch size, split over all devices.
  c.data.eval_batch_size = 500
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.preprocess = "scale"  # scale | dequantize | binarize | unit
  c.data.random_flip = False  # Horizontal flips at training time.
  c.data.num_threads = 2  # Grain read threads.
  c.data.prefetch = 4  # Batches prefetched by grain.

  c.optim = ConfigDict()
  c.optim.name = "adamw"  # adam | adamw | sgd
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"  # cosine | constant
  c.optim.min_lr_ratio = 0.1  # Final lr of the cosine decay, as a fraction of lr.
  c.optim.grad_clip = 1.0  # Global-norm clipping; 0 disables it.
  c.optim.grad_accum_steps = 1  # Average the gradients of k batches per update.
  c.optim.ema_decay = 0.999  # EMA of params used for sampling and eval; 0 disables.
  # LoRA (gen.core.lora): train low-rank factors of the matching kernels, the base frozen.
  c.optim.lora = ConfigDict()
  c.optim.lora.rank = 0  # 0: off (every param trained).
  c.optim.lora.alpha = 16.0  # Scale alpha / rank (PEFT's lora_alpha).
  c.optim.lora.rslora = False  # Scale alpha / sqrt(rank) (PEFT's use_rslora).
  # A regular expression searched in each '/'-joined param path (block0/attn/qkv/kernel).
  c.optim.lora.targets = "kernel$"
  c.optim.lora.base_dtype = ""  # The frozen base as stored: '' (as the params) | bfloat16 | ...
  c.optim.lora.dropout = 0.0  # Only 0: the adapters are merged into the weights.

  c.parallel = ConfigDict()
  c.parallel.mode = "jit"  # jit (one program over a data x fsdp mesh) | pmap
  c.parallel.fsdp = 1  # Devices each state leaf is split over (1 = replicated).
  c.parallel.fsdp_min_size = 2**14  # Smaller leaves stay replicated.

  c.train = ConfigDict()
  c.train.num_steps = 1000
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.eval_batches = 0  # Batches per periodic eval; 0 = the whole eval split.
  c.train.sample_every = 500
  c.train.num_samples = 64  # Images in each periodic sample grid.
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.async_checkpoints = True
  c.train.progress = True  # tqdm progress bar.
  return c


# --------------------------------------------------------------------------- loading


def _module_file(name: str) -> str | None:
  """The file of config module `name` (`gen.classifier.configs.mnist`), if it is one."""
  if os.sep in name or name.endswith(".py") or "." not in name:
    return None
  try:
    spec = importlib.util.find_spec(name)
  except (ImportError, ValueError):
    return None
  return spec.origin if spec is not None and spec.origin else None


def _load_module(path: str):
  if not os.path.isfile(path):
    path = _module_file(path) or path
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path}")
  name = "gen_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # Show the user's error, not ours.
    raise ConfigError(f"error while importing config file {path}: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config() function")
  return module


def load_file(spec: str) -> ConfigDict:
  """Loads `FILE` or `FILE:ARG` (the argument is passed to `get_config`). FILE may also be
  the dotted name of a module that a package ships, like `gen.classifier.configs.mnist`."""
  path, arg = spec, None
  if ":" in spec and not os.path.isfile(spec) and not _module_file(spec):
    path, arg = spec.split(":", 1)
  module = _load_module(path)
  try:
    takes = len(inspect.signature(module.get_config).parameters)
  except (TypeError, ValueError):  # (Not introspectable: let the call decide.)
    takes = None
  if arg is not None and takes == 0:
    raise ConfigError(f"get_config() in {path} takes no argument: drop ':{arg}' from --config")
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except ConfigError:
    raise
  except Exception as e:  # The config's own error, in one line.
    first = (str(e).strip().splitlines() or [""])[0]
    raise ConfigError(f"get_config({'' if arg is None else repr(arg)}) in {path} raised "
                      f"{type(e).__name__}{': ' + first if first else ''}") from e
  if not isinstance(config, ConfigDict):
    raise ConfigError(f"get_config() in {path} must return an ml_collections.ConfigDict")
  return config


def flat_keys(config: ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    key = f"{prefix}{k}"
    if isinstance(v, ConfigDict):
      keys.extend(flat_keys(v, key + "."))
    else:
      keys.append(key)
  return keys


def _suggest(key: str, config: ConfigDict) -> str:
  keys = flat_keys(config)
  close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
  if not close:  # Try the last component alone (e.g. `lr` for `optim.learning_rate`).
    last = key.rsplit(".", 1)[-1]
    by_last = {k.rsplit(".", 1)[-1]: k for k in keys}
    hit = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.6)
    close = [by_last[hit[0]]] if hit else []
  return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_value(key: str, text: str, current: Any) -> Any:
  """Parses `text` into the type of `current`, like absl's config flags."""
  if isinstance(current, bool):
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"config key '{key}' expects a bool (true/false), got '{text}'")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text  # A None default takes any string.
    raise ConfigError(
        f"config key '{key}' expects {type(current).__name__}, got '{text}'") from None
  if current is None:
    return value
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(current)(value)
  if type(value) is not type(current):
    raise ConfigError(
        f"config key '{key}' expects {type(current).__name__}, got '{text}' "
        f"({type(value).__name__})")
  return value


def apply_overrides(config: ConfigDict, overrides: Mapping[str, Any] | Iterable[str]) -> ConfigDict:
  """Applies `a.b=VALUE` strings (or a `{key: value}` mapping) to `config` in place."""
  if isinstance(overrides, Mapping):
    items = [(k, v, False) for k, v in overrides.items()]
  else:
    items = []
    for ov in overrides:
      ov = ov[2:] if ov.startswith("--") else ov
      ov = ov[len("config."):] if ov.startswith("config.") else ov
      if "=" not in ov:
        raise ConfigError(f"override '{ov}' must look like --config.a.b=VALUE")
      k, v = ov.split("=", 1)
      items.append((k, v, True))
  for key, value, is_text in items:
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ConfigDict) or part not in node:
        raise ConfigError(f"unknown config key '{key}'{_suggest(key, config)}")
      if i < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ConfigDict):
      raise ConfigError(f"config key '{key}' is a section; set one of its keys instead")
    if is_text:
      value = _parse_value(key, value, current)
    elif current is not None and value is not None and not isinstance(value, type(current)):
      if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
      else:
        raise ConfigError(
            f"config key '{key}' expects {type(current).__name__}, got {value!r}")
    with node.unlocked():
      node[parts[-1]] = value
  return config


def validate(config: ConfigDict) -> None:
  """Checks the keys the core relies on. Families check their own in `make()`."""
  for key in ("family", "seed", "data.name", "data.batch_size", "train.num_steps"):
    node = config
    for part in key.split("."):
      if part not in node:
        raise ConfigError(f"config is missing the required key '{key}'")
      node = node[part]
  if not config.family:
    raise ConfigError("config.family is empty: set it to a family package, a folder of gen/")
  try:
    importlib.import_module(f"gen.{config.family}")
  except ModuleNotFoundError as e:
    raise ConfigError(
        f"config.family='{config.family}': no module gen.{config.family} ({e})") from e
  if config.data.batch_size <= 0:
    raise ConfigError(f"data.batch_size must be positive, got {config.data.batch_size}")
  if config.train.num_steps < 0:
    raise ConfigError(f"train.num_steps must be >= 0, got {config.train.num_steps}")


def load(spec: str, overrides: Mapping[str, Any] | Iterable[str] = ()) -> ConfigDict:
  """Loads a config file, applies overrides, validates, and locks it against new keys."""
  config = load_file(spec)
  apply_overrides(config, overrides)
  validate(config)
  config.lock()
  return config


# ------------------------------------------------------------------------ persistence


def to_json(config: ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def save_json(config: ConfigDict, path: str) -> None:
  with open(path, "w") as f:
    f.write(to_json(config) + "\n")


def _tuplify(d):
  # JSON turns tuples into lists; configs use tuples for shapes and channel lists.
  if isinstance(d, dict):
    return {k: _tuplify(v) for k, v in d.items()}
  if isinstance(d, list):
    return tuple(_tuplify(v) for v in d)
  return d


def from_dict(d: Mapping) -> ConfigDict:
  """A locked config from JSON data (lists become tuples, as configs write them)."""
  config = ConfigDict(_tuplify(dict(d)))
  config.lock()
  return config


def load_json(path: str) -> ConfigDict:
  """Loads a `config.json` as it was written (`gen.core.runs.load_config` also fills the
  keys its family added since)."""
  if not os.path.isfile(path):
    raise ConfigError(f"no config.json at {path}: is this a gen workdir?")
  with open(path) as f:
    return from_dict(json.load(f))
