"""A saved run, loaded outside the trainer: its family, config, data, pipeline and state.

`gen sample`, `gen eval`, importers, families that build on another run (a latent run's
autoencoder, a guiding classifier, a fine-tuning reference) and benchmarks all load runs
here; only `gen.core.train` trains them. A workdir holds `config.json` (the full config),
`data_spec.json` (the `DataSpec`) and `checkpoints/`.

A run saved before a family added a config key loads with the value such runs had (the
family's `KEYS_ADDED`: key -> old value), and otherwise with the family's default
(`default_config()`), so old workdirs keep loading as the defaults grow.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os

import jax

from gen.core import config as config_lib
from gen.core import lora, parallel, xla
from gen.core.checkpoint import Checkpointer, CheckpointError, abstract_like
from gen.core.data import Data, ImageData
from gen.core.family import SPEC_FILE, DataSpec, Pipeline

CONFIG_FILE = "config.json"


def family_of(config):
  """The module `gen.<config.family>`."""
  return importlib.import_module(f"gen.{config.family}")


@contextlib.contextmanager
def config_errors():
  """A ValueError while building from a config (`model.arch must be ...`) is a ConfigError:
  a usage error, exit code 2. Data errors (DataError) are not ValueErrors: they stay what
  they are."""
  try:
    yield
  except config_lib.ConfigError:
    raise
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from e


def build(config, spec: DataSpec) -> Pipeline:
  """Imports `gen.<config.family>` and calls its `make(config, spec)`; with
  `optim.lora.rank > 0`, the LoRA form of that pipeline (`gen.core.lora`)."""
  with config_errors():
    pipeline = family_of(config).make(config, spec)
    return lora.wrap(pipeline, config, spec.example_batch(1))


def open_data(config, *, reuse=(), process_index: int | None = None,
              process_count: int | None = None) -> Data:
  """The data of `config`: its family's `make_data`, else the core's labelled images."""
  make_data = getattr(family_of(config), "make_data", ImageData)
  with config_errors():
    return make_data(config, process_index=process_index, process_count=process_count,
                     reuse=reuse)


def keys(seed: int) -> dict[str, jax.Array]:
  """The run's four keys: init, train, eval and sample."""
  init, train, evaluate, sample = jax.random.split(jax.random.key(seed), 4)
  return {"init": init, "train": train, "eval": evaluate, "sample": sample}


def _set(d: dict, dotted: str, value, only_missing: bool) -> None:
  *parents, last = dotted.split(".")
  for part in parents:
    if not isinstance(d.get(part), dict):
      return
    d = d[part]
  if not (only_missing and last in d):
    d[last] = value


def _merge(base: dict, over: dict) -> dict:
  """`base` with `over`'s values (recursively): what a saved run had wins."""
  out = dict(base)
  for k, v in over.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def complete(saved: dict) -> dict:
  """A saved config (as JSON data) with the keys its family added since: `KEYS_ADDED`'s old
  values first, then the family's `default_config()`."""
  saved = copy.deepcopy(saved)
  try:
    family = importlib.import_module(f"gen.{saved.get('family', '')}")
  except ImportError:
    return saved
  for key, old in getattr(family, "KEYS_ADDED", {}).items():
    _set(saved, key, old, only_missing=True)
  defaults = getattr(family, "default_config", None)
  if defaults is None:
    return saved
  return _merge(json.loads(config_lib.to_json(defaults())), saved)


def load_config(workdir: str, overrides=()) -> config_lib.ConfigDict:
  """The config of the run in `workdir` (completed as `complete` says), with overrides."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f"no {CONFIG_FILE} at {path}: is this a gen workdir?")
  with open(path) as f:
    config = config_lib.from_dict(complete(json.load(f)))
  if overrides:
    config.unlock()
    config_lib.apply_overrides(config, overrides)
    config.lock()
  return config


def load_workdir(workdir: str, overrides=(), step: int | None = None):
  """(config, data spec, pipeline, restored state, step) of a training run's workdir."""
  config = load_config(workdir, overrides)
  spec = DataSpec.load(workdir)
  if spec is None:
    raise CheckpointError(f"no {SPEC_FILE} in {workdir}: is this a gen workdir?")
  pipeline = build(config, spec)
  mesh = parallel.make_mesh()
  repl = parallel.replicated(mesh)
  example = spec.example_batch(jax.device_count())
  abstract = jax.eval_shape(pipeline.init, keys(config.seed)["init"], example)
  folder = os.path.join(workdir, "checkpoints")
  if not (os.path.isdir(folder) and any(d.isdigit() for d in os.listdir(folder))):
    raise CheckpointError(f"no checkpoint in {folder}: train first")
  ckpt = Checkpointer(workdir, async_save=False, create=False)
  try:
    restored = ckpt.restore(abstract_like(abstract, repl), step)
  finally:
    ckpt.close()
  if restored is None:
    raise CheckpointError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first")
  return config, spec, pipeline, restored[1], restored[0]


def compile_sampler(pipeline: Pipeline, num: int, kwargs: dict):
  """`(params, rng) -> samples`: `pipeline.sample` for `num` samples, jitted once. Python
  values among `kwargs` (sampler names, step counts) are fixed in the program; arrays and
  pytrees (prompts, a classifier's params) are traced arguments."""
  plain = (bool, int, float, str, type(None))
  static = {k: v for k, v in kwargs.items() if isinstance(v, plain)}
  traced = {k: v for k, v in kwargs.items() if k not in static}
  fn = xla.jit(lambda p, rng, t: pipeline.sample(p, rng, num, **static, **t),
               pipeline.compiler_options)
  return lambda params, rng: fn(params, rng, traced)
