"""InceptionV3 as used for FID (pool3, 2048 features), and a converter for its weights.

The network is the one pytorch-fid builds (`fid_inception_v3`): torchvision's Inception3
with the FID variant's blocks (FIDInceptionA/C/E_1: average pools that ignore the padding;
FIDInceptionE_2: a max pool in the pool branch), batch-norm epsilon 1e-3, inputs in [0, 1]
resized bilinearly to 299x299 and mapped to [-1, 1]. Its weights are TensorFlow's 2015
Inception graph; nothing here downloads them. Give the path of the standard file
(`pt_inception-2015-12-05-6726825d.pth` from pytorch-fid, read with torch when torch is
importable) or of an `.npz` with the same key names; convert once where torch exists with

  python -m gen.eval.inception pt_inception-2015-12-05-6726825d.pth inception_fid.npz

Key names are pytorch-fid's (`Mixed_5b.branch1x1.conv.weight`, `...bn.running_var`);
`fc.*` (the 1008-way logits) and `num_batches_tracked` are not needed for pool3 features
and are skipped.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURES = 2048
NUM_CONVS = 94  # BasicConv2d layers up to pool3.
SKIPPED = ("fc.weight", "fc.bias")


class BasicConv2d(nn.Module):
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, strides=self.stride, use_bias=False, name="conv",
                padding=[(p, p) for p in self.padding])(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool(x):
  """3x3 stride-1 average over the valid neighbours (TensorFlow's pool, FID's patch)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride=2, pad=0):
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):  # FIDInceptionA.
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, name="branch1x1")(x)
    b5 = BasicConv2d(48, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):  # torchvision's InceptionB (Mixed_6a).
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], -1)


class InceptionC(nn.Module):  # FIDInceptionC.
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = BasicConv2d(192, name="branch1x1")(x)
    b7 = BasicConv2d(c7, name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, **row, name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, **col, name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, **col, name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, **row, name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, **col, name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, **row, name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):  # torchvision's InceptionD (Mixed_7a).
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], -1)


class InceptionE(nn.Module):  # FIDInceptionE_1 (avg pool) or FIDInceptionE_2 (max pool).
  max_pool: bool

  @nn.compact
  def __call__(self, x):
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = BasicConv2d(320, name="branch1x1")(x)
    b3 = BasicConv2d(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, **row, name="branch3x3_2a")(b3),
                          BasicConv2d(384, **col, name="branch3x3_2b")(b3)], -1)
    bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, **row, name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, **col, name="branch3x3dbl_3b")(bd)], -1)
    pool = _max_pool(x, 1, 1) if self.max_pool else _avg_pool(x)
    bp = BasicConv2d(192, name="branch_pool")(pool)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3(nn.Module):
  """Images [B, H, W, 3] in [0, 1] -> pool3 features [B, 2048].

  `size`: the resolution images are resized to (299 for FID; at least 75).
  """

  size: int = 299

  @nn.compact
  def __call__(self, x):
    b = x.shape[0]
    x = jax.image.resize(x.astype(jnp.float32), (b, self.size, self.size, x.shape[-1]),
                         "bilinear", antialias=False)
    x = 2.0 * x - 1.0
    x = BasicConv2d(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(False, name="Mixed_7b")(x)
    x = InceptionE(True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


# ------------------------------------------------------------------------------ weights

# (collection, Flax leaf) <-> pytorch-fid's leaf name.
_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
           ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}


@functools.cache
def abstract_variables(size: int = 299):
  """Shapes of the network's variables ({"params", "batch_stats"}), without computing them."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda: InceptionV3(size).init(jax.random.key(0), jnp.zeros(x.shape)))


def _torch_name(collection, path) -> str:
  return ".".join(path[:-1] + (_LEAVES[collection, path[-1]],))


def to_torch_names(variables) -> dict[str, np.ndarray]:
  """Flax variables -> {pytorch-fid name: array in PyTorch's layout (conv weights OIHW)}."""
  out = {}
  for collection in ("params", "batch_stats"):
    for path, v in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
      keys = tuple(k.key for k in path)
      v = np.asarray(v)
      out[_torch_name(collection, keys)] = v.transpose(3, 2, 0, 1) if keys[-1] == "kernel" else v
  return out


def from_torch_names(state: Mapping[str, np.ndarray]):
  """{pytorch-fid name: array} -> Flax variables. Every conv/bn key must be there, with its
  shape; `fc.*` and `num_batches_tracked` are skipped; any other key is an error."""
  abstract = abstract_variables()
  state = {k: np.asarray(v) for k, v in state.items()
           if k not in SKIPPED and not k.endswith("num_batches_tracked")}
  used, problems = set(), []

  def leaf(collection):
    def get(path, spec):
      keys = tuple(k.key for k in path)
      name = _torch_name(collection, keys)
      if name not in state:
        problems.append(f"missing {name}")
        return np.zeros(spec.shape, spec.dtype)
      used.add(name)
      v = state[name].astype(np.float32)
      v = v.transpose(2, 3, 1, 0) if keys[-1] == "kernel" else v
      if v.shape != spec.shape:
        problems.append(f"{name}: shape {state[name].shape} does not fit {spec.shape}")
      return v
    return get

  variables = {c: jax.tree_util.tree_map_with_path(leaf(c), abstract[c])
               for c in ("params", "batch_stats")}
  problems += [f"unexpected {k}" for k in sorted(set(state) - used)]
  if problems:
    shown = "; ".join(problems[:8]) + (f"; ... ({len(problems)} in all)" if len(problems) > 8
                                       else "")
    raise ValueError(f"not the FID Inception weights: {shown}")
  return variables


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Arrays by name from pytorch-fid's `.pth` (needs torch) or an `.npz` of the same names."""
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch
  except ImportError:
    raise ValueError(f"reading {path} needs PyTorch, which is not installed: convert it to "
                     ".npz where torch is (python -m gen.eval.inception FILE.pth OUT.npz)"
                     ) from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def load(path: str):
  """The network's variables from a weights file (`.pth` or `.npz`)."""
  return from_torch_names(read_state_dict(path))


@functools.partial(jax.jit, static_argnames="size")
def features(variables, images, size: int = 299):
  """uint8 or [0, 1] float images [B, H, W, C] (C = 1 or 3) -> pool3 features [B, 2048]."""
  x = images.astype(jnp.float32)
  x = x / 255.0 if images.dtype == jnp.uint8 else x
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  return InceptionV3(size).apply(variables, x)


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit("usage: python -m gen.eval.inception WEIGHTS.pth|WEIGHTS.npz OUT.npz")
  state = read_state_dict(sys.argv[1])
  variables = from_torch_names(state)  # Checks names and shapes before writing.
  np.savez(sys.argv[2], **to_torch_names(variables))
  print(f"wrote {sys.argv[2]}: {NUM_CONVS} conv layers")
