"""The classifier family: cross-entropy training, test accuracy, and penultimate features.

It exists to give each dataset a feature space of its own for `gen eval --metric=fd` (see
`gen.eval`): the pipeline's `features(params, images) -> [B, model.features]`, images in
the model's data space. `eval_step` reports per-example `accuracy` and `loss` (nats). A
classifier draws no samples: its `sample` is None.

On data whose batches hold `targets` (several labels per image, `spec.extra["targets"]` naming
them with their class counts: the captioned scenes of `gen.core.data.captions`) it is a judge of
those: its logits are split into one head per target, the loss (nats) is the sum of the heads'
cross-entropies, and `eval_step` reports per example, instead of `accuracy`, the scores of
`gen.core.data.captions.scores` (`faithful`: every head right; `identity`, `colour`, `size`,
`position`). `predict(params, images) -> int32[B, H]` is each head's most likely class (one
head, the label, on labelled images).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen.classifier.models import CNN
from gen.core import xla
from gen.core.config import ConfigError
from gen.core.data import captions
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer

POOLS = ("mean", "flatten", "slots")


def heads(spec: DataSpec) -> tuple[str, tuple[int, ...]]:
  """The batch key the classifier learns (`targets` when the data has them, else `label`) and
  the class count of each head."""
  if "targets" in spec.fields:
    return "targets", tuple(int(count) for _, count in spec.extra["targets"])
  return "label", (spec.num_classes,)


def parts(config, spec: DataSpec) -> CNN:
  """The network of `config.model` for `spec`'s classes, once the data suits a classifier."""
  m = config.model
  if spec.kind != "image" or spec.num_classes < 2:
    raise ConfigError("the classifier needs labelled images (a dataset with classes)")
  if spec.preprocess not in ("scale", "unit"):
    raise ConfigError("the classifier needs deterministic inputs: data.preprocess must be "
                      f"'scale' or 'unit', got '{spec.preprocess}'")
  if m.pool not in POOLS:
    raise ConfigError(f"model.pool must be one of {POOLS}, got '{m.pool}'")
  if m.pool != "slots":
    return CNN(tuple(m.channels), m.features, sum(heads(spec)[1]), m.pool)
  if heads(spec)[0] != "targets" or len(spec.extra["targets"]) != captions.NUM_TARGETS:
    raise ConfigError("model.pool='slots' reads the slots of captioned scenes (data.name="
                      f"'captions:...'), not {spec.shape} images of {spec.num_classes} classes")
  h, w = spec.shape[:2]
  regions = tuple((t / h, l / w, b / h, r / w) for t, l, b, r in captions.slot_boxes())
  return CNN(tuple(m.channels), m.features, sum(heads(spec)[1]), "regions", regions)


def logits(model: CNN, params, x):
  """Logits of every head, concatenated: [B, sum of class counts]."""
  return model.apply({"params": params}, x)


def features(model: CNN, params, x):
  """Penultimate activations: [B, model.features]."""
  return model.apply({"params": params}, x, method=CNN.embed)


def split_heads(out, counts: tuple[int, ...]) -> list:
  """Concatenated logits [B, sum(counts)] -> one [B, count] per head."""
  return jnp.split(out, np.cumsum(counts)[:-1].tolist(), axis=-1)


def predict(model: CNN, counts: tuple[int, ...], params, x):
  """Each head's most likely class: int32[B, H]."""
  return jnp.stack([jnp.argmax(h, -1) for h in split_heads(logits(model, params, x), counts)],
                   -1).astype(jnp.int32)


def init(model: CNN, tx: optax.GradientTransformation, ema_decay: float, rng, batch):
  params = model.init(rng, batch["image"][:1])["params"]
  return TrainState.create(params, tx, ema_decay)


def per_example(model: CNN, key: str, counts: tuple[int, ...], params, batch):
  """Cross-entropy summed over the heads (nats) [B], and the predicted and true classes of
  every head: int32[B, H] each."""
  out = split_heads(logits(model, params, batch["image"]), counts)
  labels = batch[key].astype(jnp.int32).reshape(len(batch["image"]), len(counts))
  loss = sum(optax.softmax_cross_entropy_with_integer_labels(h, labels[:, k])
             for k, h in enumerate(out))
  pred = jnp.stack([jnp.argmax(h, -1) for h in out], -1).astype(jnp.int32)
  return loss, pred, labels


def scores(key: str, pred, labels) -> dict:
  """Per example, 1.0 where right: `accuracy` of a label, or captions' `scores` of targets."""
  if key == "label":
    return {"accuracy": (pred[:, 0] == labels[:, 0]).astype(jnp.float32)}
  return captions.scores(pred, labels)


def train_step(model: CNN, key: str, counts: tuple[int, ...], state, batch, rng):
  del rng  # Deterministic; the data pipeline shuffles.

  def loss_fn(params):
    loss, pred, labels = per_example(model, key, counts, params, batch)
    return jnp.mean(loss), scores(key, pred, labels)

  (loss, right), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  main = "accuracy" if key == "label" else "faithful"
  return state.apply_gradients(grads), {"loss": loss, main: jnp.mean(right[main]),
                                        "grad_norm": optax.global_norm(grads)}


def eval_step(model: CNN, key: str, counts: tuple[int, ...], state, batch, rng):
  del rng
  loss, pred, labels = per_example(model, key, counts, state.sample_params, batch)
  return {"loss": loss, **scores(key, pred, labels)}


def make(config, spec: DataSpec) -> Pipeline:
  model = parts(config, spec)
  key, counts = heads(spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(init=functools.partial(init, model, tx, config.optim.ema_decay),
                  train_step=functools.partial(train_step, model, key, counts),
                  eval_step=functools.partial(eval_step, model, key, counts),
                  features=functools.partial(features, model),
                  predict=functools.partial(predict, model, counts),
                  compiler_options=xla.CONVNET_CPU)
