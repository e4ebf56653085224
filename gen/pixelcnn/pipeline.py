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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gen.core import xla
from gen.core.config import ConfigError
from gen.core.pipeline import DataSpec, Pipeline, TrainState, make_optimizer
from gen.nn import distributions as dist
from gen.pixelcnn.models import GatedPixelCNN

HEAD_DATA = {"bernoulli": ("binarize",), "logistic_mixture": ("scale",)}


def make(config, spec: DataSpec) -> Pipeline:
  m = config.model
  if m.head not in HEAD_DATA:
    raise ConfigError(f"model.head must be one of {sorted(HEAD_DATA)}, got '{m.head}'")
  if spec.preprocess not in HEAD_DATA[m.head]:
    raise ConfigError(f"model.head='{m.head}' needs data.preprocess in {HEAD_DATA[m.head]}, "
                      f"got '{spec.preprocess}'")
  if m.conditional and not spec.num_classes:
    raise ConfigError("model.conditional=True needs a labelled dataset")
  h, w, c = spec.shape
  num_dims = h * w * c
  out = c if m.head == "bernoulli" else dist.mixture_num_params(c, m.num_mix)
  num_classes = spec.num_classes if m.conditional else 0
  model = GatedPixelCNN(m.features, m.num_layers, out, num_classes, m.input_kernel)
  tx = make_optimizer(config.optim, config.train.num_steps)

  def labels_of(batch):
    return batch["label"] if num_classes else None

  def pixel_log_prob(out, x):
    """[B, H, W, P], [B, H, W, C] -> [B, H, W]: log p(x_ij | x_<ij), channels summed."""
    if m.head == "bernoulli":
      return dist.bernoulli_log_prob(out, x).sum(-1)
    return dist.mixture_log_prob(out, x, m.num_mix)

  def nll(params, x, labels):
    """Exact -log p(x) in nats: [B]."""
    out = model.apply({"params": params}, x, labels)
    return -pixel_log_prob(out, x).reshape(x.shape[0], -1).sum(-1)

  def init(rng, batch):
    labels = batch["label"][:1] if num_classes else None
    params = model.init(rng, batch["image"][:1], labels)["params"]
    return TrainState.create(params, tx, config.optim.ema_decay)

  def train_step(state, batch, rng):
    del rng  # Deterministic model; randomness is in the data pipeline.

    def loss_fn(params):
      n = nll(params, batch["image"], labels_of(batch))
      return jnp.mean(n) / num_dims, n  # Nats per dimension: scale-free across datasets.

    (loss, n), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": loss, "nll": jnp.mean(n), "bpd": dist.bits_per_dim(jnp.mean(n), num_dims),
               "grad_norm": jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))}
    return state.apply_gradients(grads), metrics

  def eval_step(state, batch, rng):
    n = nll(state.sample_params, batch["image"], labels_of(batch))
    return {"nll": n, "bpd": dist.bits_per_dim(n, num_dims)}

  def sample_pixel(key, out):
    """[B, P] head outputs -> [B, C] pixel values."""
    if m.head == "bernoulli":
      return (jax.random.uniform(key, out.shape) < jax.nn.sigmoid(out)).astype(jnp.float32)
    return dist.mixture_sample(key, out, c, m.num_mix)

  def sample_naive(params, rng, x, labels, start_row=0):
    """Fills rows >= start_row of x, re-running the whole network at every position."""
    def body(i, x):
      r, col = i // w, i % w
      out = model.apply({"params": params}, x, labels)
      return x.at[:, r, col].set(sample_pixel(jax.random.fold_in(rng, i), out[:, r, col]))
    return jax.lax.fori_loop(start_row * w, h * w, body, x)

  def sample_fast(params, rng, x, labels, start_row=0):
    """Same result as `sample_naive`: vertical stack once per row, horizontal on one row."""
    def row_body(r, x):
      feats = model.apply({"params": params}, x, labels, method=GatedPixelCNN.vertical)
      feats = [jax.lax.dynamic_slice_in_dim(f, r, 1, axis=1) for f in feats]
      row = jax.lax.dynamic_slice_in_dim(x, r, 1, axis=1)

      def col_body(col, row):
        out = model.apply({"params": params}, row, feats, labels, method=GatedPixelCNN.horizontal)
        px = sample_pixel(jax.random.fold_in(rng, r * w + col), out[:, 0, col])
        return row.at[:, 0, col].set(px)

      row = jax.lax.fori_loop(0, w, col_body, row)
      return jax.lax.dynamic_update_slice_in_dim(x, row, r, axis=1)
    return jax.lax.fori_loop(start_row, h, row_body, x)

  def make_labels(num, label):
    if not num_classes:
      return None
    if label >= 0:
      return jnp.full((num,), label, jnp.int32)
    return jnp.arange(num, dtype=jnp.int32) % num_classes  # Cycle through the classes.

  def sample(params, rng, num, label: int = -1, sampler: str = "fast"):
    if sampler not in ("fast", "naive"):
      raise ValueError(f"sampler must be 'fast' or 'naive', got '{sampler}'")
    fn = sample_fast if sampler == "fast" else sample_naive
    x = jnp.zeros((num, h, w, c), jnp.float32)
    return fn(params, rng, x, make_labels(num, label))

  def visualize(state, batch, rng):
    """Completions: each row is an original, its top half, then three sampled bottom halves."""
    n = min(8, batch["image"].shape[0])
    x = batch["image"][:n]
    labels = batch["label"][:n] if num_classes else None
    keep = h // 2
    top = x.at[:, keep:].set(0.0 if m.head == "bernoulli" else -1.0)
    # One batch of three copies: each row of the batch draws its own pixels.
    filled = sample_fast(state.sample_params, rng, jnp.concatenate([top] * 3),
                         None if labels is None else jnp.concatenate([labels] * 3), keep)
    grid = jnp.stack([x, top] + jnp.split(filled, 3), axis=1)  # [n, 5, H, W, C]
    return {"completions": (grid.reshape((-1,) + x.shape[1:]), 5)}

  return Pipeline(init=init, train_step=train_step, eval_step=eval_step, sample=sample,
                  visualize=visualize,
                  functions={"nll": nll, "pixel_log_prob": pixel_log_prob, "model": model,
                             "sample_naive": sample_naive, "sample_fast": sample_fast},
                  compiler_options=xla.CONVNET_CPU)

