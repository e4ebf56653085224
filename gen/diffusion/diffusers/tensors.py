"""Tensor names and checks shared by the diffusers / transformers layouts of this package.

The Flax modules here name their parameters after the reference's tensors: a module path
component is the reference's path with the dots before an index written `_`
(`down_blocks.1.attentions.0` is `down_blocks_1_attentions_0`, `to_out.0` is `to_out_0`,
`mid_block.resnets.1` is `mid_block_resnets_1`),
nesting is nesting, and a leaf is `kernel` (a convolution [O, I, kh, kw] stored as
[kh, kw, I, O], a linear layer [O, I] as [I, O]), `scale` (a norm's weight), `embedding` (an
embedding table, as stored) or `bias`. `torch_name` maps a params path back, `to_params`
builds the params tree from a state dict with one-line errors, `Fields` checks a config.json.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from gen.core.interop import InputError, load_safetensors, load_torch

_INDEX = re.compile(r"_(\d+)(_|$)")
# Components whose "_N" is part of the reference's own name (TimestepEmbedding.linear_1).
KEEP = frozenset({"linear_1", "linear_2"})
LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def _component(name: str) -> str:
  if name in KEEP:
    return name
  if name.startswith("mid_block_"):  # mid_block_resnets_0: mid_block.resnets.0.
    return "mid_block." + _component(name[len("mid_block_"):])
  return _INDEX.sub(lambda m: "." + m[1] + ("." if m[2] else ""), name)


def torch_name(path: tuple[str, ...]) -> str:
  """The reference's tensor name of a params path: ("down_blocks_0_attentions_1",
  "transformer_blocks_0", "attn1", "to_out_0", "kernel") ->
  "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0.weight"."""
  *modules, leaf = path
  return ".".join([_component(m) for m in modules] + [LEAVES[leaf]])


def torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """A params leaf's shape as the reference stores it (HWIO -> OIHW, [I, O] -> [O, I])."""
  if path[-1] != "kernel":
    return tuple(shape)
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape))


def from_torch(path: tuple[str, ...], x: np.ndarray) -> np.ndarray:
  """A reference tensor as the params leaf at `path`, float32."""
  x = np.asarray(x, np.float32)
  if path[-1] == "kernel":
    x = x.transpose(2, 3, 1, 0) if x.ndim == 4 else x.T
  return np.ascontiguousarray(x)


def read_weights(folder: str, safetensors: str, torch_bin: str) -> tuple[dict, str]:
  """The state dict of `folder` (`safetensors`, or `torch_bin` when torch is installed) and
  the file it came from."""
  path = os.path.join(folder, safetensors)
  if os.path.isfile(path):
    return load_safetensors(path), path
  path = os.path.join(folder, torch_bin)
  if os.path.isfile(path):
    return load_torch(path, safetensors), path
  raise InputError(f"{folder}: no weights ({safetensors} or {torch_bin})")


def to_params(tensors: dict, path: str, abstract, what: str, *, rename=None,
              ignore: tuple[str, ...] = ()) -> dict:
  """The params tree shaped like `abstract` (from jax.eval_shape) from a state dict; an
  InputError naming the file and the tensor for one missing, extra, ill-shaped or not floating
  point. `rename(name)` gives a stored name's current one (None: as stored); names in `ignore`
  (buffers some checkpoints carry) are skipped. `what` names the model in messages."""
  import jax

  named = {}
  for name, x in tensors.items():
    if name in ignore:
      continue
    current = rename(name) if rename else name
    if current in named:
      raise InputError(f"{path}: tensor {name} appears twice (also as {named[current][0]})")
    named[current] = (name, x)
  want = {}
  for keys, leaf in jax.tree_util.tree_leaves_with_path(abstract):
    keys = tuple(k.key for k in keys)
    want[torch_name(keys)] = (keys, torch_shape(keys, leaf.shape))
  for name, (_, shape) in want.items():
    if name not in named:
      raise InputError(f"{path}: tensor {name} is missing (shape {shape} expected)")
  params = {}
  for current, (name, x) in named.items():
    if current not in want:
      raise InputError(f"{path}: tensor {name} {tuple(x.shape)} is not a weight of {what}")
    keys, shape = want[current]
    if tuple(x.shape) != shape:
      raise InputError(f"{path}: tensor {name} has shape {tuple(x.shape)}, the config implies "
                       f"{shape}")
    if not np.issubdtype(np.asarray(x).dtype, np.floating):
      raise InputError(f"{path}: tensor {name} is {np.asarray(x).dtype}, not floating point")
    node = params
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = from_torch(keys, x)
  return params


class Fields:
  """Checks of one config.json: `refuse(field, why)` raises the one-line InputError naming the
  file and the field; `fixed` fields must hold gen's value; unknown fields are refused."""

  def __init__(self, path: str, d: dict):
    self.path, self.d = path, d

  def refuse(self, field: str, why: str):
    raise InputError(f"{self.path}: {field}={json.dumps(self.d.get(field))} is not supported "
                     f"({why})")

  def known(self, fixed: dict, read: tuple[str, ...], ignored: tuple[str, ...], what: str):
    for field in self.d:
      if field.startswith("_") or field in ignored:
        continue
      if field not in fixed and field not in read:
        self.refuse(field, f"a field {what} does not know")
    for field, want in fixed.items():
      if field in self.d and self.d[field] != want and not (
          isinstance(want, tuple) and self.d[field] in want):
        shown = " or ".join(json.dumps(w) for w in want) if isinstance(want, tuple) else \
            json.dumps(want)
        self.refuse(field, f"{what} has {field}={shown}")

  def positive_int(self, field: str, default=None) -> int:
    v = self.d.get(field, default)
    if type(v) is not int or v <= 0:
      self.refuse(field, "expected a positive integer")
    return v

  def positive(self, field: str, default=None) -> float:
    v = self.d.get(field, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
      self.refuse(field, "expected a positive number")
    return float(v)

  def number(self, field: str, default=None) -> float:
    v = self.d.get(field, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      self.refuse(field, "expected a number")
    return float(v)

  def boolean(self, field: str, default=None) -> bool:
    v = self.d.get(field, default)
    if not isinstance(v, bool):
      self.refuse(field, "expected true or false")
    return v

  def int_list(self, field: str, n: int | None = None, default=None) -> tuple[int, ...]:
    return self._ints(field, self.d.get(field, default), n)

  def per_block(self, field: str, n: int, default=None) -> tuple[int, ...]:
    """A positive integer or a list of `n` of them, as a tuple of `n`."""
    v = self.d.get(field, default)
    return self._ints(field, [v] * n if type(v) is int else v, n)

  def _ints(self, field, v, n):
    if not isinstance(v, (list, tuple)) or not v or not all(type(c) is int and c > 0 for c in v):
      self.refuse(field, "expected a positive integer or a list of them" if n else
                  "expected a list of positive integers")
    if n is not None and len(v) != n:
      self.refuse(field, f"expected {n} entries, one per block")
    return tuple(v)
