"""The contract between a family and the core.

A family package `gen.<family>` exposes `make(config, spec) -> Pipeline`: a record of pure
functions, module-level functions of the family bound to its model with `functools.partial`.
The core compiles them, feeds them data, checkpoints their state and writes their outputs.
A family that reads other than labelled images also exposes `make_data(config, ...)`
(see `gen.core.data.Data`); one without it reads the core's image sources.

| field            | signature                                          |
|------------------|----------------------------------------------------|
| `init`           | `(rng, batch) -> state`                            |
| `train_step`     | `(state, batch, rng) -> (state, metrics)`          |
| `eval_step`      | `(state, batch, rng) -> {name: float[B]}`          |
| `sample`         | `(params, rng, num, **kw) -> samples` (optional)   |
| `final_eval_step`| like `eval_step`, for `gen eval` (e.g. more IWAE samples) |
| `visualize`      | `(state, batch, rng) -> {name: images}`            |
| `load_pretrained`| `(state, params) -> state`, for `config.init_from`  |
| `features`       | `(params, images) -> float[B, D]`: a feature map (`gen eval --metric=fd`) |
| `predict`        | `(params, images) -> int32[B, H]`: each head's class (`--metric=captions`) |
| `sample_options` | `(num, flags) -> (num, kwargs)`: `gen sample`'s extra flags as sampler arguments |
| `write_samples`  | `(samples, stem) -> [paths]`: the family's own files (text, MIDI...) |
| `preview`        | `(samples) -> str`: a short text form of samples, for logs |
| `compiler_options` | XLA options for the programs compiled from these (`gen.core.xla`) |
| `lora_in_axes`   | `(path, shape) -> n`: a kernel's leading input axes, for LoRA (`gen.core.lora`) |

`eval_step` returns per-example values; the core averages them over the eval split
with the padding `mask`. Images (samples and `visualize`'s pictures) are in the model's
data space (see `DataSpec`): `[N, H, W, C]`, or `[rows, cols, H, W, C]` for a grid laid out
by the family. Without `write_samples` the core writes samples as an image grid.
`sample_options` runs eagerly before anything is compiled (it may read files, e.g. a
classifier's checkpoint); the arrays and pytrees it returns are passed to the compiled
sampler as traced arguments.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from gen.core import parallel

SPEC_FILE = "data_spec.json"


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a family needs to know about the data, without loading it.

  `shape` is one example's shape (images: (H, W, C)); `fields` names the arrays of one
  training example, `{name: (shape, dtype)}`, for example batches and abstract shapes;
  `kind` is the modality (`image`, or a family's own, e.g. `tokens`); `preprocess` says how
  uint8 pixels became model inputs (see `gen.core.data.preprocess`). `extra` holds the
  facts a family's data adds (JSON-able, e.g. a vocabulary); the core never reads it.
  """

  shape: tuple[int, ...]
  num_classes: int = 0
  preprocess: str = ""
  kind: str = "image"
  fields: Mapping[str, tuple[tuple[int, ...], str]] = dataclasses.field(default_factory=dict)
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(self.shape))
    if not self.fields:  # Labelled images.
      object.__setattr__(self, "fields", {"image": (self.shape, "float32"),
                                          "label": ((), "int32")})
    object.__setattr__(self, "fields", {k: (tuple(s), str(d)) for k, (s, d) in
                                        self.fields.items()})

  @classmethod
  def images(cls, shape, num_classes: int, preprocess: str) -> DataSpec:
    return cls(tuple(shape), num_classes, preprocess)

  def example_batch(self, n: int) -> dict[str, jnp.ndarray]:
    """Zeros shaped like a batch of `n` examples (for init and abstract shapes)."""
    return {k: jnp.zeros((n,) + s, d) for k, (s, d) in self.fields.items()}

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> DataSpec:
    return cls(**json.loads(text))

  @classmethod
  def load(cls, workdir: str) -> DataSpec | None:
    """The spec a run saved in `workdir`, or None when there is none."""
    path = os.path.join(workdir, SPEC_FILE)
    if not os.path.isfile(path):
      return None
    with open(path) as f:
      return cls.from_json(f.read())

  def save(self, workdir: str) -> None:
    with open(os.path.join(workdir, SPEC_FILE), "w") as f:
      f.write(self.to_json() + "\n")


@dataclasses.dataclass(frozen=True)
class Pipeline:
  init: Callable[..., Any]
  train_step: Callable[..., tuple[Any, dict]]
  eval_step: Callable[..., dict]
  sample: Callable[..., Any] | None = None  # None: the family draws no samples.
  final_eval_step: Callable[..., dict] | None = None
  visualize: Callable[..., dict] | None = None
  # Params used for sampling and eval: the EMA copy when there is one.
  sample_params: Callable[[Any], Any] = lambda state: state.sample_params
  # `(state, params) -> state` for `config.init_from`: puts pre-trained params into a
  # fresh state (default: params and their EMA copy; a family may also keep a frozen copy).
  load_pretrained: Callable[[Any, Any], Any] | None = None
  # `(params, images) -> float[B, D]`: features of images in the data space.
  features: Callable[[Any, Any], Any] | None = None
  # `(params, images) -> int32[B, H]`: the most likely class of each of a model's H heads
  # (e.g. a classifier of the targets of `gen.core.data.captions`), images in the data space.
  predict: Callable[[Any, Any], Any] | None = None
  # `(params, images) -> images`: an autoencoder's round trip through its latents (the
  # posterior mean), images in the data space.
  reconstruct: Callable[[Any, Any], Any] | None = None
  # `(num, flags) -> (num, kwargs)`: `gen sample`'s extra flags as sampler arguments (eager).
  sample_options: Callable[[int, dict], tuple[int, dict]] | None = None
  # `(host samples, path stem) -> written paths`; None: an image grid.
  write_samples: Callable[[Any, str], list[str]] | None = None
  # `(host samples) -> str`: a short text form for the log (e.g. decoded tokens).
  preview: Callable[[Any], str] | None = None
  # XLA options for every program compiled from these functions (see `gen.core.xla`).
  compiler_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # `(path, shape) -> n`: how many leading axes of a kernel are its layer's inputs, for LoRA
  # (`gen.core.lora`); None: every axis but the last.
  lora_in_axes: Callable[[str, tuple[int, ...]], int] | None = None


class TrainState(struct.PyTreeNode):
  """Step, params, their EMA and the optimizer state of one network."""

  step: jax.Array
  params: Any
  ema_params: Any  # None when EMA is off.
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  ema_decay: float = struct.field(pytree_node=False, default=0.0)
  # Names of a subclass's fields that hold a frozen copy of the initial params (a reference):
  # a LoRA state (gen.core.lora) stores None there, its frozen base being that copy.
  frozen_copies = ()

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, ema_decay: float = 0.0):
    ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
    return cls(step=jnp.zeros((), jnp.int32), params=params, ema_params=ema,
               opt_state=tx.init(params), tx=tx, ema_decay=ema_decay)

  def apply_gradients(self, grads) -> TrainState:
    grads = parallel.mean_over_devices(grads)  # pmap: average over devices; jit: as is.
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if self.ema_decay > 0:
      ema = self.ema_update(params, ema, opt_state)
    return self.replace(step=self.step + 1, params=params, ema_params=ema, opt_state=opt_state)

  def ema_update(self, params, ema, opt_state):
    """The EMA of `params` after this update (`opt_state` is the new optimizer state)."""
    # Warm the EMA up so early samples are not dominated by the random init.
    updated = (opt_state.gradient_step if isinstance(opt_state, optax.MultiStepsState)
               else self.step + 1)
    decay = jnp.minimum(self.ema_decay, updated / (9.0 + updated))
    new_ema = optax.incremental_update(params, ema, 1.0 - decay)
    if isinstance(opt_state, optax.MultiStepsState):  # Accumulating: move with the params.
      new_ema = optax.tree.where(opt_state.mini_step == 0, new_ema, ema)
    return new_ema

  @property
  def sample_params(self):
    return self.params if self.ema_params is None else self.ema_params


def make_schedule(optim, num_steps: int) -> optax.Schedule:
  warmup = min(optim.warmup_steps, max(num_steps - 1, 0))
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, optim.lr, warmup, max(num_steps, warmup + 1), end_value=optim.lr * optim.min_lr_ratio)
  if optim.schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, optim.lr, warmup), optax.constant_schedule(optim.lr)], [warmup])
  raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got '{optim.schedule}'")


def make_optimizer(optim, num_steps: int) -> optax.GradientTransformation:
  """Clipping + Adam(W)/SGD on a warmup schedule, from the config's `optim` section.

  `optim.grad_accum_steps = k > 1` averages the gradients of k consecutive batches
  (`optax.MultiSteps`) before one update: k times the batch in the same memory. Steps
  still count batches; the schedule counts updates.
  """
  k = getattr(optim, "grad_accum_steps", 1)
  if k < 1:
    raise ValueError(f"optim.grad_accum_steps must be >= 1, got {k}")
  tx = _make_update(optim, max(num_steps // k, 1))
  return optax.MultiSteps(tx, every_k_schedule=k) if k > 1 else tx


def _make_update(optim, num_steps: int) -> optax.GradientTransformation:
  lr = make_schedule(optim, num_steps)
  if optim.name == "adamw":
    # Decay weight matrices and embeddings only, not biases and norm scales (as GPT-2 does).
    opt = optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay,
                      mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params))
  elif optim.name == "adam":
    opt = optax.adam(lr, b1=optim.b1, b2=optim.b2)
  elif optim.name == "sgd":
    opt = optax.sgd(lr, momentum=optim.b1 or None)
  else:
    raise ValueError(f"optim.name must be adam, adamw or sgd, got '{optim.name}'")
  if optim.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip), opt)
  return opt
