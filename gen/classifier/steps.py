"""The classifier family: cross-entropy training, test accuracy, and penultimate features.

It exists to give each dataset a feature space of its own for `gen eval --metric=fd` (see
`gen.eval`): the pipeline's `features(params, images) -> [B, model.features]`, images in
the model's data space. `eval_step` reports per-example `accuracy` and `loss` (nats). A
classifier draws no samples: its `sample` is None.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from gen.classifier.models import CNN
from gen.core import xla
from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer


def parts(config, spec: DataSpec) -> CNN:
  """The network of `config.model` for `spec`'s classes, once the data suits a classifier."""
  m = config.model
  if spec.kind != "image" or spec.num_classes < 2:
    raise ConfigError("the classifier needs labelled images (a dataset with classes)")
  if spec.preprocess not in ("scale", "unit"):
    raise ConfigError("the classifier needs deterministic inputs: data.preprocess must be "
                      f"'scale' or 'unit', got '{spec.preprocess}'")
  return CNN(tuple(m.channels), m.features, spec.num_classes)


def logits(model: CNN, params, x):
  """Class logits: [B, num_classes]."""
  return model.apply({"params": params}, x)


def features(model: CNN, params, x):
  """Penultimate activations: [B, model.features]."""
  return model.apply({"params": params}, x, method=CNN.embed)


def init(model: CNN, tx: optax.GradientTransformation, ema_decay: float, rng, batch):
  params = model.init(rng, batch["image"][:1])["params"]
  return TrainState.create(params, tx, ema_decay)


def per_example(model: CNN, params, batch):
  """Cross-entropy (nats) and correctness (0 or 1) per example: ([B], [B])."""
  out = logits(model, params, batch["image"])
  labels = batch["label"].astype(jnp.int32)
  loss = optax.softmax_cross_entropy_with_integer_labels(out, labels)
  return loss, (jnp.argmax(out, -1) == labels).astype(jnp.float32)


def train_step(model: CNN, state, batch, rng):
  del rng  # Deterministic; the data pipeline shuffles.

  def loss_fn(params):
    loss, correct = per_example(model, params, batch)
    return jnp.mean(loss), correct

  (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads), {"loss": loss, "accuracy": jnp.mean(correct),
                                        "grad_norm": optax.global_norm(grads)}


def eval_step(model: CNN, state, batch, rng):
  del rng
  loss, correct = per_example(model, state.sample_params, batch)
  return {"loss": loss, "accuracy": correct}


def make(config, spec: DataSpec) -> Pipeline:
  model = parts(config, spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(init=functools.partial(init, model, tx, config.optim.ema_decay),
                  train_step=functools.partial(train_step, model),
                  eval_step=functools.partial(eval_step, model),
                  features=functools.partial(features, model),
                  compiler_options=xla.CONVNET_CPU)
