"""The PixelCNN family: exact likelihoods and pixel-by-pixel sampling in one compiled loop.

Heads, chosen by `model.head` to match `data.preprocess`:
- `bernoulli` on binarized data: NLL in nats per image;
- `logistic_mixture` on 8-bit data at bin centres (`scale`): the PixelCNN++ discretized
  logistic mixture, channels autoregressive within a pixel; NLL in bits/dim.

Two samplers give the same pixels for the same key (pixel i always uses fold_in(rng, i)):
- `naive`: a `fori_loop` over the H*W positions, running the whole network each time;
- `fast` (default): a `fori_loop` over rows that runs the vertical stack once per row, and an
  inner `fori_loop` over the row's pixels that runs only the horizontal stack on that one
  row. With both stacks costing about the same, that is 2HW / (H + W) times less work
  (H for a square image): the vertical stack cannot see the current row, and the
  horizontal stack sees nothing but it.

Every function takes the `GatedPixelCNN` module and/or a `PixelCNNSettings` record (image shape and
head) first; `make` binds them with `functools.partial`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from gen.core import xla
from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.nn import distributions as dist
from gen.pixelcnn.models import GatedPixelCNN

HEAD_DATA = {"bernoulli": ("binarize",), "logistic_mixture": ("scale",)}


@dataclasses.dataclass(frozen=True)
class PixelCNNSettings:
  """What the likelihood and the samplers need besides the network."""

  shape: tuple[int, int, int]  # (H, W, C)
  head: str  # bernoulli | logistic_mixture
  num_mix: int  # Mixture components (logistic_mixture).

  @classmethod
  def of(cls, config, spec: DataSpec) -> PixelCNNSettings:
    return cls(tuple(spec.shape), config.model.head, config.model.num_mix)

  @property
  def num_dims(self) -> int:
    h, w, c = self.shape
    return h * w * c


def parts(config, spec: DataSpec) -> GatedPixelCNN:
  """The network of `config.model` for `spec`'s images, once the head fits the data."""
  m = config.model
  if m.head not in HEAD_DATA:
    raise ConfigError(f"model.head must be one of {sorted(HEAD_DATA)}, got '{m.head}'")
  if spec.preprocess not in HEAD_DATA[m.head]:
    raise ConfigError(f"model.head='{m.head}' needs data.preprocess in {HEAD_DATA[m.head]}, "
                      f"got '{spec.preprocess}'")
  if m.conditional and not spec.num_classes:
    raise ConfigError("model.conditional=True needs a labelled dataset")
  c = spec.shape[-1]
  out = c if m.head == "bernoulli" else dist.mixture_num_params(c, m.num_mix)
  num_classes = spec.num_classes if m.conditional else 0
  return GatedPixelCNN(m.features, m.num_layers, out, num_classes, m.input_kernel)


def labels_of(model: GatedPixelCNN, batch):
  return batch["label"] if model.num_classes else None


def pixel_log_prob(s: PixelCNNSettings, out, x):
  """[B, H, W, P], [B, H, W, C] -> [B, H, W]: log p(x_ij | x_<ij), channels summed."""
  if s.head == "bernoulli":
    return dist.bernoulli_log_prob(out, x).sum(-1)
  return dist.mixture_log_prob(out, x, s.num_mix)


def nll(model: GatedPixelCNN, s: PixelCNNSettings, params, x, labels):
  """Exact -log p(x) in nats: [B]."""
  out = model.apply({"params": params}, x, labels)
  return -pixel_log_prob(s, out, x).reshape(x.shape[0], -1).sum(-1)


def init(model: GatedPixelCNN, tx: optax.GradientTransformation, ema_decay: float, rng, batch):
  labels = batch["label"][:1] if model.num_classes else None
  params = model.init(rng, batch["image"][:1], labels)["params"]
  return TrainState.create(params, tx, ema_decay)


def train_step(model: GatedPixelCNN, s: PixelCNNSettings, state, batch, rng):
  del rng  # Deterministic model; randomness is in the data pipeline.

  def loss_fn(params):
    n = nll(model, s, params, batch["image"], labels_of(model, batch))
    return jnp.mean(n) / s.num_dims, n  # Nats per dimension: scale-free across datasets.

  (loss, n), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {"loss": loss, "nll": jnp.mean(n),
             "bpd": dist.bits_per_dim(jnp.mean(n), s.num_dims),
             "grad_norm": jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))}
  return state.apply_gradients(grads), metrics


def eval_step(model: GatedPixelCNN, s: PixelCNNSettings, state, batch, rng):
  del rng
  n = nll(model, s, state.sample_params, batch["image"], labels_of(model, batch))
  return {"nll": n, "bpd": dist.bits_per_dim(n, s.num_dims)}


def sample_pixel(s: PixelCNNSettings, key, out):
  """[B, P] head outputs -> [B, C] pixel values."""
  if s.head == "bernoulli":
    return (jax.random.uniform(key, out.shape) < jax.nn.sigmoid(out)).astype(jnp.float32)
  return dist.mixture_sample(key, out, s.shape[-1], s.num_mix)


def sample_naive(model: GatedPixelCNN, s: PixelCNNSettings, params, rng, x, labels, start_row=0):
  """Fills rows >= start_row of x, re-running the whole network at every position."""
  h, w, _ = s.shape

  def body(i, x):
    r, col = i // w, i % w
    out = model.apply({"params": params}, x, labels)
    return x.at[:, r, col].set(sample_pixel(s, jax.random.fold_in(rng, i), out[:, r, col]))
  return jax.lax.fori_loop(start_row * w, h * w, body, x)


def sample_fast(model: GatedPixelCNN, s: PixelCNNSettings, params, rng, x, labels, start_row=0):
  """Same result as `sample_naive`: vertical stack once per row, horizontal on one row."""
  h, w, _ = s.shape

  def row_body(r, x):
    feats = model.apply({"params": params}, x, labels, method=GatedPixelCNN.vertical)
    feats = [jax.lax.dynamic_slice_in_dim(f, r, 1, axis=1) for f in feats]
    row = jax.lax.dynamic_slice_in_dim(x, r, 1, axis=1)

    def col_body(col, row):
      out = model.apply({"params": params}, row, feats, labels, method=GatedPixelCNN.horizontal)
      px = sample_pixel(s, jax.random.fold_in(rng, r * w + col), out[:, 0, col])
      return row.at[:, 0, col].set(px)

    row = jax.lax.fori_loop(0, w, col_body, row)
    return jax.lax.dynamic_update_slice_in_dim(x, row, r, axis=1)
  return jax.lax.fori_loop(start_row, h, row_body, x)


def make_labels(model: GatedPixelCNN, num: int, label: int):
  """`num` copies of `label`, or with label < 0 the classes in turn; None if unconditional."""
  if not model.num_classes:
    return None
  if label >= 0:
    return jnp.full((num,), label, jnp.int32)
  return jnp.arange(num, dtype=jnp.int32) % model.num_classes  # Cycle through the classes.


def sample(model: GatedPixelCNN, s: PixelCNNSettings, params, rng, num, label: int = -1,
           sampler: str = "fast"):
  """`num` images drawn pixel by pixel with the `fast` or `naive` sampler: [num, H, W, C]."""
  if sampler not in ("fast", "naive"):
    raise ValueError(f"sampler must be 'fast' or 'naive', got '{sampler}'")
  fn = sample_fast if sampler == "fast" else sample_naive
  x = jnp.zeros((num,) + s.shape, jnp.float32)
  return fn(model, s, params, rng, x, make_labels(model, num, label))


def visualize(model: GatedPixelCNN, s: PixelCNNSettings, state, batch, rng):
  """Completions, [n, 5, H, W, C]: each row is an original, its top half, then three sampled
  bottom halves."""
  n = min(8, batch["image"].shape[0])
  x = batch["image"][:n]
  labels = batch["label"][:n] if model.num_classes else None
  keep = s.shape[0] // 2
  top = x.at[:, keep:].set(0.0 if s.head == "bernoulli" else -1.0)
  # One batch of three copies: each row of the batch draws its own pixels.
  filled = sample_fast(model, s, state.sample_params, rng, jnp.concatenate([top] * 3),
                       None if labels is None else jnp.concatenate([labels] * 3), keep)
  return {"completions": jnp.stack([x, top] + jnp.split(filled, 3), axis=1)}


def make(config, spec: DataSpec) -> Pipeline:
  model = parts(config, spec)
  s = PixelCNNSettings.of(config, spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(init=functools.partial(init, model, tx, config.optim.ema_decay),
                  train_step=functools.partial(train_step, model, s),
                  eval_step=functools.partial(eval_step, model, s),
                  sample=functools.partial(sample, model, s),
                  visualize=functools.partial(visualize, model, s),
                  compiler_options=xla.CONVNET_CPU)
