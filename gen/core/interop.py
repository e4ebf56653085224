"""Weights from other libraries: the importers families offer, and a workdir written whole.

A family package may list `IMPORTERS`, each an `Importer`: `recognizes(folder)` takes a
cheap look (its config file) and says whether the folder is one it reads; `write(folder,
workdir, overrides)` validates everything it reads, then writes a gen workdir (config,
data spec, a checkpoint) that `gen sample`, `gen eval` and `init_from` use like a trained
run's. `gen import --from=DIR --workdir=W` finds the importer among the families without
naming any (`find`) and runs it through `write_new_workdir`, so bad input leaves nothing:
the workdir appears, complete, only once every file is written. The other way, a family may
list `EXPORTERS` (`Exporter`: `write(config, spec, params, folder)`); `gen export
--workdir=W --to=DIR` runs the first that can express the run (`export`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import pkgutil
import shutil
import uuid
from collections.abc import Callable, Sequence

import numpy as np

# Packages of gen that are not families.
NOT_FAMILIES = ("core", "nn", "eval")


class InputError(ValueError):
  """The folder to import is not what its importer reads (a missing file, an unsupported
  setting, a tensor missing, extra or ill-shaped); the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Importer:
  name: str  # What it reads, for messages.
  recognizes: Callable[[str], bool]
  # (folder, new workdir, config overrides `a.b=VALUE`) -> a one-line summary.
  write: Callable[[str, str, Sequence[str]], str]


@dataclasses.dataclass(frozen=True)
class Exporter:
  name: str  # What it writes, for messages.
  # (config, data spec, sampling params, new folder) -> a one-line summary; an InputError
  # naming the config key when the run's model has no form there.
  write: Callable[[object, object, object, str], str]


@dataclasses.dataclass(frozen=True)
class LoraFormat:
  """A family's LoRA adapter files (its package's `LORA_FORMATS`, see `gen.core.lora`)."""

  name: str  # What it reads and writes, for messages.
  # (config, data spec, params as numpy, adapter folder, scale) -> (params with the adapter
  # merged, a one-line summary); an InputError for an adapter it does not read.
  merge: Callable[..., tuple[object, str]]
  # (config, data spec, base params, lora.Plan, factors, new folder, base folder name) ->
  # a one-line summary.
  write: Callable[..., str]


def lora_formats(family: str) -> tuple[LoraFormat, ...]:
  return tuple(getattr(importlib.import_module(f"gen.{family}"), "LORA_FORMATS", ()))


def import_lora(adapter: str, source: str, workdir: str, scale: float = 1.0) -> str:
  """Writes the new `workdir`: the run in `source` (its sampling params) with the adapter in
  `adapter` (a folder, or a file where the family's format reads one) merged (times `scale`)
  by its family's `LORA_FORMATS`, whole or not at all."""
  import jax

  from gen.core.runs import build, load_workdir

  if not os.path.exists(adapter):
    raise InputError(f"{adapter}: missing")
  config, spec, pipeline, state, _ = load_workdir(source)
  formats = lora_formats(config.family)
  if not formats:
    raise InputError(f"{source}: the {config.family} family reads no LoRA adapters")
  params = jax.tree.map(np.asarray, jax.device_get(pipeline.sample_params(state)))
  errors = []
  for fmt in formats:
    try:
      merged, summary = fmt.merge(config, spec, params, adapter, scale)
      break
    except InputError as e:
      errors.append(str(e))
  else:
    raise InputError("; ".join(errors))
  config = copy.deepcopy(config)
  config.unlock()
  if config.optim.get("lora", None) is not None:
    config.optim.lora.rank = 0  # The adapter is in the params now.
  config.lock()
  plain = build(config, spec)
  return write_new_workdir(workdir, lambda tmp: (save_workdir(tmp, config, spec, plain, merged),
                                                 f"{source} with {summary}")[1])


def export(workdir: str, folder: str, step: int | None = None, lora: str = "") -> str:
  """Writes the run in `workdir` (its newest checkpoint, or `step`) into the new `folder` with
  its family's exporter (its package's `EXPORTERS`), whole or not at all. With `lora` (a LoRA
  run), the new folder `lora` gets the adapter (the family's `LORA_FORMATS`) and `folder`, if
  given, the frozen base; without `folder` only the adapter is written (its base is the run the
  LoRA run started from, e.g. an imported Stable Diffusion workdir, for families that export
  nothing). Without `lora` a LoRA run is written merged."""
  import jax

  from gen.core.lora import LoraState
  from gen.core.runs import load_workdir

  if not folder and not lora:
    raise InputError("give --to=FOLDER (the run), --lora=FOLDER (a LoRA run's adapter) or both")
  for out, flag in ((folder, "--to"), (lora, "--lora")):
    if out and os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
      raise InputError(f"{out} already exists and is not empty: give a new {flag}")
  config, spec, pipeline, state, step = load_workdir(workdir, step=step)
  exporters = getattr(importlib.import_module(f"gen.{config.family}"), "EXPORTERS", ())
  if folder and not exporters:
    raise InputError(f"{workdir}: the {config.family} family exports nothing"
                     + (" (no folder for --to): give --lora alone to write the adapter"
                        if lora and lora_formats(config.family) else ""))
  params = jax.device_get(pipeline.sample_params(state))
  if lora:
    if not isinstance(state, LoraState):
      raise InputError(f"{workdir}: --lora exports a LoRA run's adapter; this run trained every "
                       "param (optim.lora.rank=0)")
    formats = lora_formats(config.family)
    if not formats:
      raise InputError(f"{workdir}: the {config.family} family writes no LoRA adapters")
    factors = state.factors if state.factors_ema is None else state.factors_ema
    base = jax.tree.map(np.asarray, jax.device_get(state.base_params))
    factors = jax.device_get(factors)
    source = folder or config.get("init_from", "")  # What the adapter's base is called.
    name = os.path.basename(os.path.abspath(source)) if source else ""
    adapter_summary = write_new_workdir(lora, lambda tmp: formats[0].write(
        config, spec, base, state.plan, factors, tmp, name))
    if not folder:
      return f"step {step}: {adapter_summary} in {lora}"
    try:
      summary = export_params(config, spec, base, folder, exporters, workdir)
    except BaseException:
      shutil.rmtree(lora, ignore_errors=True)
      raise
    return f"step {step}: the base as {summary}; {adapter_summary} in {lora}"
  return f"step {step} as {export_params(config, spec, params, folder, exporters, workdir)}"


def export_params(config, spec, params, folder: str, exporters, workdir: str) -> str:
  """`params` written into the new `folder` by the first of `exporters` that can."""
  errors = []
  for exporter in exporters:
    try:
      return write_new_workdir(folder, lambda tmp, e=exporter: e.write(config, spec, params,
                                                                       tmp))
    except InputError as e:
      errors.append(str(e))
  raise InputError(f"{workdir}: {'; '.join(errors)}")


def family_packages() -> list[str]:
  """The family packages of gen (every subpackage but the shared ones)."""
  import gen

  return sorted(m.name for m in pkgutil.iter_modules(gen.__path__)
                if m.ispkg and m.name not in NOT_FAMILIES)


def importers() -> list[Importer]:
  found = []
  for name in family_packages():
    found.extend(getattr(importlib.import_module(f"gen.{name}"), "IMPORTERS", ()))
  return found


def find(folder: str) -> Importer:
  """The importer that reads `folder`; an InputError when it is not a folder or none does."""
  if not os.path.isdir(folder):
    raise InputError(f"{folder}: not a folder")
  candidates = importers()
  for imp in candidates:
    if imp.recognizes(folder):
      return imp
  names = "; ".join(imp.name for imp in candidates) or "none"
  raise InputError(f"{folder}: no importer reads this folder (they read: {names})")


def write_new_workdir(workdir: str, fill: Callable[[str], str]) -> str:
  """Runs `fill(tmp)` on a temporary folder beside `workdir`, then renames it to `workdir`.

  `workdir` must not exist or be empty. Whatever `fill` raises, the temporary folder is
  removed and `workdir` is left as it was. Returns what `fill` returned.
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise InputError(f"{workdir} already exists and is not empty: give a new --workdir")
  parent = os.path.dirname(workdir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(workdir)}.importing-{uuid.uuid4().hex[:8]}")
  os.mkdir(tmp)  # (Not mkdtemp: the workdir gets the usual permissions.)
  try:
    summary = fill(tmp)
    if os.path.isdir(workdir):
      os.rmdir(workdir)  # Empty (checked above).
    os.rename(tmp, workdir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return summary


def frozen_run(c) -> None:
  """Sets `c`'s optimizer and trainer for weights that are sampled, evaluated and started
  from (`init_from`), not trained in place: a stateless optimizer keeps the checkpoint to the
  params alone."""
  c.optim.name = "sgd"
  c.optim.lr = 0.0
  c.optim.b1 = 0.0
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.optim.grad_clip = 0.0
  c.optim.ema_decay = 0.0
  c.train.num_steps = 0


def finish_config(config, overrides: Sequence[str]):
  """`config` with the user's `--config.a.b=VALUE` overrides, validated and locked."""
  from gen.core import config as config_lib

  config_lib.apply_overrides(config, overrides)
  config_lib.validate(config)
  config.lock()
  return config


def save_workdir(workdir: str, config, spec, pipeline, params) -> int:
  """Writes a workdir as a training run leaves it at step 0 (config.json, the data spec, a
  checkpoint of `pipeline.init`'s state holding `params`); returns the number of params.
  `params` must have the tree and shapes `pipeline.init` makes (the importer checks)."""
  import jax

  from gen.core import config as config_lib
  from gen.core.checkpoint import Checkpointer
  from gen.core.runs import CONFIG_FILE

  example = spec.example_batch(1)

  def with_params(p):  # The random params that init makes are dead code: XLA drops them.
    return pipeline.init(jax.random.key(config.seed), example).replace(params=p)

  # One device copy of the params, made leaf by leaf from the host ones and then donated: the
  # import holds at most the host params and one device copy of them (measured in README).
  state = jax.jit(with_params, donate_argnums=0)(jax.tree.map(jax.numpy.asarray, params))
  config_lib.save_json(config, os.path.join(workdir, CONFIG_FILE))
  spec.save(workdir)
  ckpt = Checkpointer(workdir, keep=1, async_save=False)
  try:
    ckpt.save(0, state, {"step": 0})
    ckpt.wait()
  finally:
    ckpt.close()
  return sum(x.size for x in jax.tree.leaves(params))


def load_safetensors(path: str) -> dict[str, np.ndarray]:
  """The tensors of a safetensors file (numpy arrays), or an InputError naming it."""
  from safetensors.numpy import load_file

  if not os.path.isfile(path):
    raise InputError(f"{path}: missing")
  try:
    return load_file(path)
  except Exception as e:  # noqa: BLE001  A bad header, a truncated file, bf16 (not in numpy).
    raise InputError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''})") from None


def load_torch(path: str, safetensors_name: str) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch state dict (float32 numpy arrays; needs torch), or an
  InputError naming it; the message suggests saving `safetensors_name` instead."""
  try:
    import torch
  except ImportError:
    raise InputError(f"{path}: reading it needs torch (pip install torch), or save the model "
                     f"with safetensors ({safetensors_name})") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001  Whatever the unpickler raises.
    raise InputError(f"{path}: not a readable PyTorch state dict ({type(e).__name__})") from None
  if not isinstance(state, dict):
    raise InputError(f"{path}: expected a state dict, got a {type(state).__name__}")
  return {k: v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items()}


def read_json(path: str) -> dict:
  """A JSON object from `path`, or an InputError naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
  except FileNotFoundError:
    raise InputError(f"{path}: missing") from None
  except (OSError, ValueError, UnicodeDecodeError) as e:
    raise InputError(f"{path}: not readable JSON ({e})") from None
  if not isinstance(d, dict):
    raise InputError(f"{path}: expected a JSON object")
  return d
