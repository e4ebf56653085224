"""The classifier family: cross-entropy training, test accuracy, and penultimate features.

It exists to give each dataset a feature space of its own for `gen eval --metric=fd` (see
`gen.eval`): `functions["features"](params, images) -> [B, model.features]`, images in the
model's data space. `eval_step` reports per-example `accuracy` and `loss` (nats). A
classifier draws no samples: `sample` returns blank images so the trainer's sample grid
stays defined.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gen.classifier.models import CNN
from gen.core import xla
from gen.core.config import ConfigError
from gen.core.pipeline import DataSpec, Pipeline, TrainState, make_optimizer


def make(config, spec: DataSpec) -> Pipeline:
  m = config.model
  if spec.kind != "image" or spec.num_classes < 2:
    raise ConfigError("the classifier needs labelled images (a dataset with classes)")
  if spec.preprocess not in ("scale", "unit"):
    raise ConfigError("the classifier needs deterministic inputs: data.preprocess must be "
                      f"'scale' or 'unit', got '{spec.preprocess}'")
  model = CNN(tuple(m.channels), m.features, spec.num_classes)
  tx = make_optimizer(config.optim, config.train.num_steps)
  blank = -1.0 if spec.preprocess == "scale" else 0.0

  def logits(params, x):
    return model.apply({"params": params}, x)

  def features(params, x):
    return model.apply({"params": params}, x, method=CNN.embed)

  def init(rng, batch):
    params = model.init(rng, batch["image"][:1])["params"]
    return TrainState.create(params, tx, config.optim.ema_decay)

  def per_example(params, batch):
    out = logits(params, batch["image"])
    labels = batch["label"].astype(jnp.int32)
    loss = optax.softmax_cross_entropy_with_integer_labels(out, labels)
    return loss, (jnp.argmax(out, -1) == labels).astype(jnp.float32)

  def train_step(state, batch, rng):
    del rng  # Deterministic; the data pipeline shuffles.

    def loss_fn(params):
      loss, correct = per_example(params, batch)
      return jnp.mean(loss), correct

    (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads), {"loss": loss, "accuracy": jnp.mean(correct),
                                          "grad_norm": optax.global_norm(grads)}

  def eval_step(state, batch, rng):
    loss, correct = per_example(state.sample_params, batch)
    return {"loss": loss, "accuracy": correct}

  def sample(params, rng, num):
    return jnp.full((num,) + tuple(spec.shape), blank, jnp.float32)

  return Pipeline(init=init, train_step=train_step, eval_step=eval_step, sample=sample,
                  functions={"logits": logits, "features": features},
                  compiler_options=xla.CONVNET_CPU)
