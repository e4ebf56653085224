"""A noise-conditional classifier p_t(y | x) (`model.kind = "classifier"`), for guidance.

The backbone's encoder (`models.UNetClassifier`, `models.DiTClassifier`) learns on
x_t = alpha x0 + sigma eps at the process's training times, with the objective's input
scaling, by cross-entropy. Its run guides any model of the same process, image shape and
classes: `sample(..., classifier=clf, classifier_scale=w)` with the run's `NoisyClassifier`
adds w grad_x log p_t(y | x) to the score (Dhariwal & Nichol 2021; `gen.diffusion.guidance`).
`gen sample --classifier=WORKDIR` loads it (`load_classifier`) before compiling.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gen.core import runs
from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.diffusion import networks, sampling
from gen.diffusion.guidance import NoisyClassifier, classifier_guided
from gen.diffusion.process import Objective, Process, bcast

# Noise levels s = sigma / alpha at which a classifier's eval reports its accuracy.
EVAL_LEVELS = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
  """The config values a noise-conditional classifier's steps read."""

  shape: tuple[int, ...]  # (H, W, C) of the images.
  num_classes: int
  process: str  # The process's name (`process_name`).
  sampler: str  # The default sampler, step count and guidance scale of its `sample`.
  sample_steps: int
  classifier_scale: float
  sigma_data: float  # Its `sample`'s prior is N(0, sigma_data^2 I).
  ema_decay: float

  @classmethod
  def of(cls, config, spec: DataSpec) -> ClassifierSettings:
    d = config.diffusion
    return cls(tuple(spec.shape), spec.num_classes, networks.process_name(d), d.sampler,
               d.sample_steps, d.classifier_scale, d.sigma_data, config.optim.ema_decay)


def parts(config, spec: DataSpec) -> tuple[nn.Module, Process, Objective, ClassifierSettings]:
  """The network, process, objective and settings of `config`'s classifier (unchecked)."""
  cfg = ClassifierSettings.of(config, spec)
  net = networks.network(config.model, cfg.num_classes, 0, classifier=True)
  return (net, *networks.process_and_objective(config.diffusion), cfg)


def logits(net: nn.Module, process: Process, objective: Objective, params, x, t,
           train: bool = False, rng=None):
  """[B, classes] for x in the process's coordinates at times t (scalar or [B])."""
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
  a, s = (bcast(v, x) for v in process.alpha_sigma(t))
  rngs = {"dropout": rng} if train else {}
  return net.apply({"params": params}, objective.c_in(a, s) * x, process.cond(t), train,
                   rngs=rngs)


def as_noisy_classifier(net: nn.Module, process: Process, objective: Objective,
                        cfg: ClassifierSettings, params) -> NoisyClassifier:
  """The `NoisyClassifier` of these parts with `params`, to guide samplers."""
  return NoisyClassifier(params, functools.partial(logits, net, process, objective),
                         cfg.process, tuple(cfg.shape), cfg.num_classes)


def noisy_classifier(config, spec: DataSpec, params) -> NoisyClassifier:
  """The `NoisyClassifier` of a classifier config (model.kind='classifier') with `params`."""
  if config.model.kind != "classifier":
    raise ValueError(f"model.kind='{config.model.kind}' is not a "
                     "noise-conditional classifier (model.kind='classifier')")
  return as_noisy_classifier(*parts(config, spec), params)


def load_classifier(workdir: str) -> NoisyClassifier:
  """The classifier trained in `workdir` (a diffusion run with model.kind='classifier'), with
  its newest checkpoint's (EMA) params. Reads files: call it eagerly, not while tracing."""
  path = os.path.join(workdir, runs.CONFIG_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"--classifier={workdir}: no training run there "
                     f"({runs.CONFIG_FILE} not found)")
  config = runs.load_config(workdir)
  if config.get("family") != "diffusion" or config.model.get("kind") != "classifier":
    raise ValueError(f"--classifier={workdir} holds a {config.get('family')} model, not a "
                     "noise-conditional classifier (diffusion with model.kind='classifier')")
  config, spec, pipeline, state, _ = runs.load_workdir(workdir)
  return noisy_classifier(config, spec, pipeline.sample_params(state))


def init(net: nn.Module, tx: optax.GradientTransformation, cfg: ClassifierSettings,
                    rng, batch):
  params = net.init(rng, batch["image"][:1], jnp.zeros((1,)))["params"]
  return TrainState.create(params, tx, cfg.ema_decay)


def noised(process: Process, rng, x0, t=None):
  """(x_t, t) at the training times, or at the given ones."""
  k_t, k_e = jax.random.split(rng)
  t = process.sample_t(k_t, x0.shape[:1]) if t is None else jnp.broadcast_to(t, x0.shape[:1])
  a, s = (bcast(v, x0) for v in process.alpha_sigma(t))
  return a * x0 + s * jax.random.normal(k_e, x0.shape), t


def scores(lg, y):
  """Per-example cross-entropy `loss` and `accuracy` of logits [B, classes] for labels y."""
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(lg, y),
          "accuracy": (jnp.argmax(lg, -1) == y).astype(jnp.float32)}


def train_step(net: nn.Module, process: Process, objective: Objective, state,
                          batch, rng):
  k_noise, k_drop = jax.random.split(rng)
  x, t = noised(process, k_noise, batch["image"])
  y = batch["label"].astype(jnp.int32)

  def loss_fn(params):
    out = scores(logits(net, process, objective, params, x, t, True, k_drop), y)
    return jnp.mean(out["loss"]), out["accuracy"]

  (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads), {"loss": loss, "accuracy": jnp.mean(acc),
                                        "grad_norm": optax.global_norm(grads)}


def eval_step(net: nn.Module, process: Process, objective: Objective, state, batch,
                         rng):
  params, x0, y = state.sample_params, batch["image"], batch["label"].astype(jnp.int32)
  out = scores(logits(net, process, objective, params, *noised(process, rng, x0)), y)
  for level in EVAL_LEVELS:
    x, t = noised(process, rng, x0, process.t_of_level(jnp.float32(level)))
    out[f"accuracy_s{level:g}"] = scores(logits(net, process, objective, params, x, t),
                                         y)["accuracy"]
  return out


def sample(net: nn.Module, process: Process, objective: Objective,
                      cfg: ClassifierSettings, params, rng, num, sampler=None, steps=None,
                      classifier_scale=None, label=-1):
  """`num` draws from N(0, sigma_data^2 I) guided by the classifier; -1 cycles the labels.

  None: the config's sampler, steps and classifier scale (the last two may be traced).
  """
  nc = cfg.num_classes
  sampler = cfg.sampler if sampler is None else sampler
  steps = cfg.sample_steps if steps is None else steps
  classifier_scale = cfg.classifier_scale if classifier_scale is None else classifier_scale
  fn, steps, _ = sampling.resolve(process, sampler, steps)
  label = int(label)
  if not -1 <= label < nc:
    raise ValueError(f"--label must be in [0, {nc}) or -1 (all classes), got {label}")
  var = cfg.sigma_data ** 2

  def prior(x, t, labels):  # E[x0 | x] for x0 ~ N(0, var I).
    a, s = (bcast(v, x) for v in process.alpha_sigma(jnp.broadcast_to(t, x.shape[:1])))
    return a * var / (a * a * var + s * s) * x

  clf = as_noisy_classifier(net, process, objective, cfg, params)
  denoise = classifier_guided(prior, process.alpha_sigma, clf.log_prob, classifier_scale)
  k_noise, k_run = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (num,) + tuple(cfg.shape))
  labels = sampling.labels(num, label, nc)
  x = fn(lambda x, t: denoise(x, t, labels), process, noise, k_run, steps)
  return jnp.clip(x, -1.0, 1.0)


def make(config, spec: DataSpec) -> Pipeline:
  """A noise-conditional classifier p_t(y | x) for `config`'s process.

  Training minimizes the cross-entropy -log p_t(y | x_t) with x_t = alpha(t) x0 +
  sigma(t) eps at the process's training times (the `loss` metric; `accuracy`). `eval_step`
  reports both at the eval key's times, and `accuracy_s{level}` on the same images and
  noise at each fixed noise level s = sigma / alpha of EVAL_LEVELS. Its `sample` draws from
  N(0, sigma_data^2 I), whose denoiser is known, guided by the classifier with scale
  `diffusion.classifier_scale`: pictures of what the classifier's gradients ask for.
  `noisy_classifier(config, spec, params)` is the `NoisyClassifier` that guides samplers.
  """
  if spec.num_classes < 1:
    raise ConfigError("a classifier (model.kind='classifier') needs a labelled dataset; this "
                      "one has no classes")
  networks.check(config, spec)
  net, process, objective, cfg = parts(config, spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(init=functools.partial(init, net, tx, cfg),
                  train_step=functools.partial(train_step, net, process, objective),
                  eval_step=functools.partial(eval_step, net, process, objective),
                  sample=functools.partial(sample, net, process, objective, cfg),
                  compiler_options=networks.compiler_options(config.model))
