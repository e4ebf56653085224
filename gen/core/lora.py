"""LoRA: low-rank adapters on any family's params, the base frozen and stored once.

`optim.lora.rank = r > 0` turns a run into a LoRA run, whatever its family: every param whose
'/'-joined path (`block0/attn/qkv/kernel`) matches the regular expression `optim.lora.targets`
(`re.search`) and has two or more dims gets factors A [n_in, r] and B [r, n_out], and the
network sees the merged weight

    W = W0 + s * reshape(A @ B),    s = alpha / r  (alpha / sqrt(r) with `rslora`, PEFT's
                                                    `use_rslora`)

B starts at zero and A as PEFT draws it (`kaiming_uniform_(a=sqrt(5))`: uniform in
+-1/sqrt(n_in)), so a fresh LoRA run computes exactly what its base does. In PyTorch terms
(`Linear.weight` is [out, in]) A is PEFT's `lora_A.weight` transposed and B its `lora_B.weight`
transposed: W_torch + s * B_torch @ A_torch is the same matrix.

How it is done: `wrap` turns a family's pipeline into a LoRA one without touching the family's
code. Its state is a `LoraState`, a `TrainState` (or a subclass of the family's own state class,
e.g. with a frozen reference) that stores the base (`base`, never updated, in
`optim.lora.base_dtype` when set), the factors (`factors`, their EMA in `factors_ema`) and the
optimizer state of the factors only. Inside every compiled step the wrapper fills `params` with
the merged view (and empties it again before the state is returned), so family code that calls
`jax.value_and_grad(loss)(state.params)` and `state.apply_gradients(grads)` is unchanged:
`apply_gradients` pulls the merged weights' gradients back to A and B by the chain rule
(`jax.vjp` of the merge) and updates only them. `sample_params` is the merged view of the
factors' EMA when EMA is on. The base is also what the run started from: the fields a family's
state class names in `frozen_copies` (a frozen reference) are left None, and the family reads
`base_params` instead of a second copy.

Kernels with more than two dims: which leading axes are the layer's inputs is the family's
to say (`Pipeline.lora_in_axes(path, shape) -> n`); the core's default is every axis but the
last (a Dense kernel [in, out], a convolution [kh, kw, in, out], a DenseGeneral that contracts
several axes, e.g. an attention output [heads, head_dim, width]). A = [prod(shape[:n]), r],
B = [r, prod(shape[n:])].

Why there is no `optim.lora.dropout`: PEFT drops the adapter's input (dropout(x) @ A @ B beside
the base's x @ W0); with A @ B merged into one weight there is no separate adapter input to
drop, so a dropout > 0 is refused (the model's own dropout still applies).

The cost of merging: the gradient with respect to each adapted weight is formed in full
(as in full fine-tuning) before it is pulled back to A and B; the saving is in what is stored
and updated: the optimizer state and the gradient of the factors only, and one base.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from gen.core import parallel
from gen.core.config import ConfigError
from gen.core.family import Pipeline, TrainState

BASE_DTYPES = {"": None, "float32": jnp.float32, "bfloat16": jnp.bfloat16,
               "float16": jnp.float16}
KNOWN_KEYS = ("rank", "alpha", "targets", "base_dtype", "dropout", "rslora")


def path_name(path) -> str:
  """A pytree path as '/'-joined keys: `block0/attn/qkv/kernel`."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def named_leaves(tree) -> dict[str, Any]:
  return {path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def default_in_axes(path: str, shape: tuple[int, ...]) -> int:
  """Every axis but the last is an input (Dense, Conv, a DenseGeneral contracting several)."""
  del path
  return len(shape) - 1


@dataclasses.dataclass(frozen=True)
class Target:
  path: str
  shape: tuple[int, ...]
  n_in: int  # Leading axes that are the layer's inputs.

  @property
  def dims(self) -> tuple[int, int]:
    return math.prod(self.shape[:self.n_in]), math.prod(self.shape[self.n_in:])


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the config asks, checked against the params: static, hashable."""

  rank: int
  scale: float
  targets: tuple[Target, ...]
  dtypes: tuple[tuple[str, str], ...]  # Each param's own dtype (the merged view's).
  base_dtype: str

  def target(self, path: str) -> Target | None:
    return self._by_path.get(path)

  @functools.cached_property
  def _by_path(self):
    return {t.path: t for t in self.targets}

  @functools.cached_property
  def dtype_of(self):
    return dict(self.dtypes)


def settings(config) -> dict | None:
  """`config.optim.lora` as a dict, None when off (rank 0 or no such section); ConfigError for
  what this formulation does not do."""
  lc = config.optim.get("lora", None) if config.get("optim", None) is not None else None
  if lc is None or not lc.get("rank", 0):
    return None
  s = {k: lc.get(k) for k in KNOWN_KEYS}
  rank, alpha = s["rank"], s["alpha"]
  if not isinstance(rank, int) or rank < 0:
    raise ConfigError(f"optim.lora.rank must be an integer >= 0 (0: off), got {rank!r}")
  if not isinstance(alpha, (int, float)) or alpha <= 0:
    raise ConfigError(f"optim.lora.alpha must be > 0, got {alpha!r}")
  if s["dropout"]:
    raise ConfigError(f"optim.lora.dropout={s['dropout']}: unsupported, this LoRA merges A·B "
                      "into the weights, so there is no separate adapter input to drop; use 0 "
                      "(model dropout still applies)")
  if s["base_dtype"] not in BASE_DTYPES:
    raise ConfigError(f"optim.lora.base_dtype must be one of "
                      f"{', '.join(repr(k) for k in BASE_DTYPES)}, got {s['base_dtype']!r}")
  try:
    re.compile(s["targets"])
  except (re.error, TypeError) as e:
    raise ConfigError(f"optim.lora.targets={s['targets']!r} is not a regular expression: "
                      f"{e}") from None
  return s


def scale_of(rank: int, alpha: float, rslora: bool = False) -> float:
  """PEFT's scaling: alpha / r, or alpha / sqrt(r) with `use_rslora`."""
  return alpha / math.sqrt(rank) if rslora else alpha / rank


def make_plan(s: dict, params, in_axes: Callable[[str, tuple], int] = default_in_axes) -> Plan:
  """The targets of `s` among `params` (arrays or shapes); ConfigError when there are none or
  the rank does not fit a matrix."""
  leaves = named_leaves(params)
  pattern = re.compile(s["targets"])
  targets = []
  for name, x in leaves.items():
    if not pattern.search(name) or len(x.shape) < 2:
      continue
    t = Target(name, tuple(x.shape), int(in_axes(name, tuple(x.shape))))
    if not 0 < t.n_in < len(t.shape):
      raise ConfigError(f"optim.lora: {name} {t.shape}: {t.n_in} input axes leave no output")
    if s["rank"] > min(t.dims):
      raise ConfigError(f"optim.lora.rank={s['rank']} is larger than {name} allows: "
                        f"{t.shape} is a {t.dims[0]} x {t.dims[1]} matrix")
    targets.append(t)
  if not targets:
    names = [f"{k} {tuple(v.shape)}" for k, v in leaves.items()]
    shown = ", ".join(names[:40]) + (f" ... ({len(names) - 40} more)" if len(names) > 40 else "")
    raise ConfigError(f"optim.lora.targets={s['targets']!r} matches no matrix among the "
                      f"params: {shown}")
  dtypes = tuple((k, np.dtype(v.dtype).name) for k, v in leaves.items())
  return Plan(s["rank"], scale_of(s["rank"], s["alpha"], bool(s["rslora"])), tuple(targets),
              dtypes, s["base_dtype"] or "")


def _set_path(tree: dict, path: str, value) -> None:
  *parents, last = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[last] = value


def _get_path(tree, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def init_factors(plan: Plan, rng) -> dict:
  """B zero, A uniform in +-1/sqrt(n_in) (PEFT's kaiming_uniform_(a=sqrt(5))), float32."""
  factors: dict = {}
  for i, t in enumerate(plan.targets):
    n_in, n_out = t.dims
    bound = 1.0 / math.sqrt(n_in)
    a = jax.random.uniform(jax.random.fold_in(rng, i), (n_in, plan.rank), jnp.float32,
                           -bound, bound)
    _set_path(factors, t.path, {"a": a, "b": jnp.zeros((plan.rank, n_out), jnp.float32)})
  return factors


def delta(plan: Plan, t: Target, f) -> jax.Array:
  """s * A @ B in the target's shape, float32."""
  return (plan.scale * (f["a"] @ f["b"])).reshape(t.shape)


def merge(plan: Plan, base, factors):
  """base + s * A @ B on every target, each param in its own dtype (the base may be stored in
  another)."""
  def one(path, w):
    name = path_name(path)
    dtype = plan.dtype_of[name]
    t = plan.target(name)
    if t is None:
      return w.astype(dtype)
    return (w.astype(jnp.float32) + delta(plan, t, _get_path(factors, name))).astype(dtype)
  return jax.tree_util.tree_map_with_path(one, base)


def store_base(plan: Plan, params):
  dtype = BASE_DTYPES[plan.base_dtype]
  return params if dtype is None else jax.tree.map(lambda x: x.astype(dtype), params)


_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainState)}


class LoraState(TrainState):
  """A TrainState that trains LoRA factors on a frozen base (see the module).

  Stored: `base`, `factors`, `factors_ema`, `opt_state` (of the factors); `params` and
  `ema_params` are None except inside a compiled step, where `params` is the merged view.
  """

  base: Any = None
  factors: Any = None
  factors_ema: Any = None
  plan: Plan = struct.field(pytree_node=False, default=None)
  # The family's own optimizer state's bytes, what full fine-tuning keeps (for `summary`): a
  # family may train only part of its params without LoRA (text_to_image: the UNet).
  full_opt_bytes: int = struct.field(pytree_node=False, default=0)

  def merged(self, factors=None):
    return merge(self.plan, self.base, self.factors if factors is None else factors)

  @property
  def base_params(self):
    """The frozen base in the params' own dtypes: what the run started from."""
    return jax.tree_util.tree_map_with_path(
        lambda p, w: w.astype(self.plan.dtype_of[path_name(p)]), self.base)

  def view(self) -> LoraState:
    return self.replace(params=self.merged(), ema_params=None)

  def stored(self) -> LoraState:
    return self.replace(params=None, ema_params=None)

  def apply_gradients(self, grads) -> LoraState:
    """Maps the merged weights' gradients to A and B (chain rule) and updates only those."""
    _, pull = jax.vjp(self.merged, self.factors)
    (fgrads,) = pull(grads)
    fgrads = parallel.mean_over_devices(fgrads)
    updates, opt_state = self.tx.update(fgrads, self.opt_state, self.factors)
    factors = optax.apply_updates(self.factors, updates)
    ema = self.factors_ema
    if self.ema_decay > 0:
      ema = self.ema_update(factors, ema, opt_state)
    return self.replace(step=self.step + 1, factors=factors, factors_ema=ema, opt_state=opt_state,
                        params=self.merged(factors), ema_params=None)

  @property
  def sample_params(self):
    return self.merged(self.factors if self.factors_ema is None else self.factors_ema)


@functools.cache
def state_class(cls: type) -> type:
  """`LoraState`, or the LoRA form of a family's own TrainState subclass (its extra fields kept)."""
  if issubclass(cls, LoraState):
    return cls
  if cls is TrainState:
    return LoraState
  return type(f"Lora{cls.__name__}", (LoraState, cls), {"__module__": __name__})


def from_state(state: TrainState, plan: Plan, rng) -> LoraState:
  """The LoRA state of a family's fresh state: its params become the base."""
  factors = init_factors(plan, rng)
  extra = {f.name: None if f.name in state.frozen_copies else getattr(state, f.name)
           for f in dataclasses.fields(state) if f.name not in _TRAIN_FIELDS}
  ema = jax.tree.map(jnp.copy, factors) if state.ema_decay > 0 else None
  return state_class(type(state))(
      step=state.step, params=None, ema_params=None, opt_state=state.tx.init(factors),
      tx=state.tx, ema_decay=state.ema_decay, base=store_base(plan, state.params),
      factors=factors, factors_ema=ema, plan=plan, full_opt_bytes=_nbytes(state.opt_state),
      **extra)


def _nbytes(tree) -> int:
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _mib(n: int) -> str:
  return f"{n / 2**20:,.2f} MiB"


def summary(state: LoraState) -> str:
  """Trainable params and optimizer-state bytes against full fine-tuning (shapes only): the
  family's own optimizer state, over the params it trains without LoRA."""
  full_params = jax.eval_shape(lambda s: s.base_params, state)
  n_full = sum(math.prod(x.shape) for x in jax.tree.leaves(full_params))
  n_lora = sum(math.prod(x.shape) for x in jax.tree.leaves(state.factors))
  p = state.plan
  return (f"LoRA rank {p.rank} (scale {p.scale:g}) on {len(p.targets)} matrices: "
          f"{n_lora:,} trainable params of {n_full:,} ({100 * n_lora / max(n_full, 1):.3g}%), "
          f"optimizer state {_mib(_nbytes(state.opt_state))} (full fine-tuning: "
          f"{_mib(state.full_opt_bytes)}), base stored once "
          f"({p.base_dtype or 'as the params'}, {_mib(_nbytes(state.base))})")


# ---------------------------------------------------------------------------- pipeline


def _init(family_init, plan: Plan, rng, batch):
  state = family_init(rng, batch)
  return from_state(state, plan, jax.random.fold_in(rng, 0x10A))


def _train_step(step, state, batch, rng):
  new, metrics = step(state.view(), batch, rng)
  return new.stored(), metrics


def _viewed(fn, state, *args):
  return fn(state.view(), *args)


def _load_pretrained(state, params):
  """`init_from`: the pre-trained params become the base; the factors start afresh. (A
  family's own `load_pretrained` is not called: the copies it keeps are `frozen_copies`.)"""
  return state.replace(base=store_base(state.plan, params))


def wrap(pipeline: Pipeline, config, example_batch) -> Pipeline:
  """The LoRA form of `pipeline` when `config.optim.lora.rank > 0`, else `pipeline`.

  Checks the settings against the family's params (shapes only, nothing is computed) and
  raises a ConfigError for a family whose state is not a TrainState.
  """
  s = settings(config)
  if s is None:
    return pipeline
  abstract = jax.eval_shape(pipeline.init, jax.random.key(0), example_batch)
  if not isinstance(abstract, TrainState):
    raise ConfigError(f"optim.lora: the {config.family} family keeps its own state "
                      f"({type(abstract).__name__}, not one TrainState): LoRA is not supported "
                      "there; set optim.lora.rank=0")
  in_axes = pipeline.lora_in_axes or default_in_axes
  plan = make_plan(s, abstract.params, in_axes)
  init = functools.partial(_init, pipeline.init, plan)
  view = lambda fn: None if fn is None else functools.partial(_viewed, fn)  # noqa: E731
  return dataclasses.replace(
      pipeline, init=init, train_step=functools.partial(_train_step, pipeline.train_step),
      eval_step=view(pipeline.eval_step), final_eval_step=view(pipeline.final_eval_step),
      visualize=view(pipeline.visualize), load_pretrained=_load_pretrained,
      sample_params=lambda state: state.sample_params)

