"""The diffusion family: one objective, one backbone, any sampler, two kinds of guidance.

`diffusion.objective` (eps | v | x0 | edm | flow) fixes what the network predicts and, with
`diffusion.schedule` (linear | cosine, for eps / v / x0), the noising process; see
`gen.diffusion.objectives`. `model.arch` picks the backbone (`unet` or `dit`, settings in
`model.unet` / `model.dit`). A training step draws a time t per example from the process's
training distribution, noises the batch and regresses the network's raw output on its
target (mean squared error per dimension, the `loss` metric). `eval_step` reports, per test
image, that loss and `x0_mse`, the squared error of the denoised estimate, both with the
EMA parameters and the eval key's (fixed) times and noise, so evals are comparable.

Class-conditional models (`model.conditional`) replace the label by a null label with
probability `model.label_dropout` during training, so one network is both conditional and
unconditional; sampling with guidance w uses D_u + w (D_c - D_u), where w = 1 is the plain
conditional model and w = 0 the unconditional one (Ho & Salimans 2022).

`model.kind = "classifier"` trains a noise-conditional classifier p_t(y | x) instead: the
backbone's encoder (`models.UNetClassifier`, `models.DiTClassifier`) on x_t = alpha x0 +
sigma eps at the process's training times, with the objective's input scaling, by
cross-entropy. Its run guides any model of the same process, image shape and classes:
`sample(..., classifier=WORKDIR, classifier_scale=w)` adds w grad_x log p_t(y | x) to the
score (Dhariwal & Nichol 2021; see `gen.diffusion.guidance`). Guidance scales and the step
count are traced: changing them does not recompile the sampler.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from gen.core import xla
from gen.core.config import ConfigError
from gen.core.pipeline import DataSpec, Pipeline, TrainState, make_optimizer
from gen.diffusion import samplers as samplers_lib
from gen.diffusion.guidance import NoisyClassifier, classifier_guided, guided, load_classifier
from gen.diffusion.models import DiT, DiTClassifier, UNet, UNetClassifier
from gen.diffusion.objectives import (OBJECTIVES, OWN_PROCESS, Objective, Process,
                                      make_objective, make_process)

SCHEDULES = ("linear", "cosine")
ARCHS = ("unet", "dit")
DIT_POSITIONS = ("sincos", "learned")
KINDS = ("denoiser", "classifier")
# Noise levels s = sigma / alpha at which a classifier's eval reports its accuracy.
EVAL_LEVELS = (0.1, 0.5, 1.0, 2.0, 5.0)


def process_name(d) -> str:
  return OWN_PROCESS.get(d.objective, d.schedule)


def _bcast(v, x):
  """[B] -> [B, 1, ..., 1], to broadcast against x."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def make_denoiser(apply_raw: Callable, process: Process, objective: Objective,
                  clip: bool = False) -> Callable:
  """(x, t, labels) -> x0_hat, from `apply_raw(x_in, cond, labels) -> raw output`.

  `t` is a scalar or [B]; `x` is in the process's coordinates. `clip` clips x0_hat to the
  data range [-1, 1].
  """
  def denoise(x, t, labels):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    a, s = (_bcast(v, x) for v in process.alpha_sigma(t))
    raw = apply_raw(objective.c_in(a, s) * x, process.cond(t), labels)
    x0 = objective.to_x0(x, raw, a, s)
    return jnp.clip(x0, -1.0, 1.0) if clip else x0
  return denoise


def per_example_loss(apply_raw: Callable, process: Process, objective: Objective, x0, t, eps,
                     labels):
  """The objective's loss and the denoised estimate's squared error, per example: [B], [B]."""
  a, s = (_bcast(v, x0) for v in process.alpha_sigma(t))
  x = a * x0 + s * eps
  raw = apply_raw(objective.c_in(a, s) * x, process.cond(t), labels)
  axes = tuple(range(1, x0.ndim))
  loss = jnp.mean(jnp.square(raw - objective.target(x0, eps, a, s)), axis=axes)
  x0_mse = jnp.mean(jnp.square(objective.to_x0(x, raw, a, s) - x0), axis=axes)
  return loss, x0_mse


def _check(config, spec: DataSpec):
  """Checks what denoisers and classifiers share: the process, the data, the backbone."""
  d, m = config.diffusion, config.model
  if m.get("kind", "denoiser") not in KINDS:
    raise ConfigError(f"model.kind must be one of {', '.join(KINDS)}, got '{m.kind}'")
  if d.objective not in OBJECTIVES:
    raise ConfigError(f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, "
                      f"got '{d.objective}'")
  if d.objective not in OWN_PROCESS and d.schedule not in SCHEDULES:
    raise ConfigError(f"diffusion.schedule must be one of {', '.join(SCHEDULES)} for "
                      f"objective '{d.objective}', got '{d.schedule}'")
  if d.sampler not in samplers_lib.SAMPLERS:
    raise ConfigError(f"diffusion.sampler must be one of {', '.join(samplers_lib.SAMPLERS)}, "
                      f"got '{d.sampler}'")
  if d.sample_steps < 1:
    raise ConfigError(f"diffusion.sample_steps must be >= 1, got {d.sample_steps}")
  if spec.preprocess not in ("scale", "dequantize"):
    raise ConfigError("diffusion models data in [-1, 1]: data.preprocess must be 'scale' or "
                      f"'dequantize', got '{spec.preprocess}'")
  if m.arch not in ARCHS:
    raise ConfigError(f"model.arch must be one of {', '.join(ARCHS)}, got '{m.arch}'")
  h, w, _ = spec.shape
  if m.arch == "unet":
    f = 2 ** (len(m.unet.channel_mult) - 1)
    if h % f or w % f:
      raise ConfigError(f"image size {h}x{w} must be divisible by {f}: the UNet halves it "
                        f"{len(m.unet.channel_mult) - 1} times (len(model.unet.channel_mult) "
                        "- 1); use fewer levels")
  else:
    if h % m.dit.patch or w % m.dit.patch:
      raise ConfigError(f"image size {h}x{w} must be divisible by model.dit.patch = "
                        f"{m.dit.patch}")
    if m.dit.get("positions", "sincos") not in DIT_POSITIONS:
      raise ConfigError(f"model.dit.positions must be one of {', '.join(DIT_POSITIONS)}, got "
                        f"'{m.dit.positions}'")
    if m.dit.dim % m.dit.heads:
      raise ConfigError(f"model.dit.dim = {m.dit.dim} must be divisible by model.dit.heads = "
                        f"{m.dit.heads}")


def _check_denoiser(config, spec: DataSpec):
  d, m = config.diffusion, config.model
  if m.conditional and spec.num_classes < 1:
    raise ConfigError("model.conditional=True needs a labelled dataset; this one has no classes")
  if not 0.0 <= m.label_dropout < 1.0:
    raise ConfigError(f"model.label_dropout must be in [0, 1), got {m.label_dropout}")
  if d.guidance != 1.0 and not (m.conditional and m.label_dropout > 0):
    raise ConfigError(f"diffusion.guidance = {d.guidance} needs a class-conditional model "
                      "trained with label dropout (model.conditional=True, "
                      "model.label_dropout > 0); 1.0 means no guidance")


def _network(m, out: int, num_classes: int, classifier: bool):
  """The backbone (`model.arch`): a denoiser with `out` channels, or a classifier's encoder
  with `out` classes."""
  if m.arch == "unet":
    u = m.unet
    cls = UNetClassifier if classifier else UNet
    return cls(out, u.channels, tuple(u.channel_mult), u.num_res_blocks,
               tuple(u.attn_resolutions), u.heads, m.dropout, u.groups, num_classes)
  t = m.dit
  cls = DiTClassifier if classifier else DiT
  return cls(out, t.patch, t.dim, t.depth, t.heads, t.mlp_ratio, m.dropout, num_classes,
             t.get("positions", "sincos"))


def _concrete(v) -> bool:
  return isinstance(v, (int, float))


def _sampler(sampler, steps, **options):
  """The sampler function and the options it takes; errors for bad steps and options."""
  fn = samplers_lib.get(sampler)
  if _concrete(steps) and int(steps) < 1:
    raise ValueError(f"--steps must be a positive integer, got {steps}")
  opts = {}
  for name, value in options.items():
    if name in samplers_lib.OPTIONS[sampler]:
      opts[name] = value
    elif not _concrete(value) or value != 0.0:
      takes = [s for s, o in samplers_lib.OPTIONS.items() if name in o]
      raise ValueError(f"--{name} applies to the {', '.join(takes)} sampler(s), "
                       f"not '{sampler}'")
  return fn, opts


def _labels(num: int, label: int, num_classes: int):
  """`label` for every sample, or with label = -1 the classes in turn."""
  if label >= 0:
    return jnp.full((num,), label, jnp.int32)
  return jnp.arange(num, dtype=jnp.int32) % max(num_classes, 1)


def make(config, spec: DataSpec) -> Pipeline:
  """The pipeline of `config`: a denoiser, or with model.kind='classifier' a classifier."""
  _check(config, spec)
  if config.model.get("kind", "denoiser") == "classifier":
    return make_classifier(config, spec)
  _check_denoiser(config, spec)
  d, m = config.diffusion, config.model
  pname = process_name(d)
  process = make_process(pname, d.p_mean, d.p_std)
  objective = make_objective(d.objective, d.sigma_data)
  h, w, c = spec.shape
  nc = spec.num_classes if m.conditional else 0
  net = _network(m, c, nc, classifier=False)
  tx = make_optimizer(config.optim, config.train.num_steps)

  def labels_of(batch):
    if nc:
      return batch["label"].astype(jnp.int32)
    return jnp.zeros(batch["image"].shape[:1], jnp.int32)

  def apply_fn(params, train=False, rng=None):
    """The network as `apply_raw(x_in, cond, labels)`."""
    rngs = {"dropout": rng} if train else {}
    return lambda x, cond, y: net.apply({"params": params}, x, cond, y, train, rngs=rngs)

  def init(rng, batch):
    x = batch["image"][:1]
    params = net.init(rng, x, jnp.zeros((1,)), labels_of(batch)[:1])["params"]
    return TrainState.create(params, tx, config.optim.ema_decay)

  def noise_batch(rng, batch):
    """Training-distribution times [B] and standard normal noise for a batch."""
    x0 = batch["image"]
    k_t, k_e = jax.random.split(rng)
    t = process.sample_t(k_t, x0.shape[:1])
    return t, jax.random.normal(k_e, x0.shape)

  def train_step(state, batch, rng):
    k_noise, k_drop, k_label = jax.random.split(rng, 3)
    t, eps = noise_batch(k_noise, batch)
    labels = labels_of(batch)
    if nc and m.label_dropout > 0:
      drop = jax.random.bernoulli(k_label, m.label_dropout, labels.shape)
      labels = jnp.where(drop, nc, labels)

    def loss_fn(params):
      loss, x0_mse = per_example_loss(apply_fn(params, True, k_drop), process, objective,
                                      batch["image"], t, eps, labels)
      return jnp.mean(loss), x0_mse

    (loss, x0_mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads), {"loss": loss, "x0_mse": jnp.mean(x0_mse),
                                          "grad_norm": optax.global_norm(grads)}

  def eval_step(state, batch, rng):
    t, eps = noise_batch(rng, batch)
    loss, x0_mse = per_example_loss(apply_fn(state.sample_params), process, objective,
                                    batch["image"], t, eps, labels_of(batch))
    return {"loss": loss, "x0_mse": x0_mse}

  def fitting(classifier, scale) -> NoisyClassifier | None:
    """The classifier (loaded when it is a workdir), checked against this model."""
    if classifier is None:
      if scale is not None:
        raise ValueError(f"--classifier_scale={scale} needs --classifier=WORKDIR, the run of a "
                         "noise-conditional classifier (model.kind='classifier')")
      return None
    clf = (classifier if isinstance(classifier, NoisyClassifier)
           else load_classifier(str(classifier)))
    problems = []
    if clf.process != pname:
      problems.append(f"it was trained on the '{clf.process}' process, this model samples the "
                      f"'{pname}' process")
    if tuple(clf.shape) != tuple(spec.shape):
      problems.append(f"it classifies {clf.shape} images, this model makes {spec.shape}")
    if nc and clf.num_classes != nc:
      problems.append(f"it has {clf.num_classes} classes, this model {nc}")
    if problems:
      raise ValueError(f"--classifier={classifier} does not fit this model: "
                       + "; ".join(problems))
    return clf

  def sample(params, rng, num, sampler=d.sampler, steps=d.sample_steps, guidance=None,
             eta=0.0, churn=0.0, label=-1, classifier=None, classifier_scale=None):
    """`num` images from the (EMA) network.

    sampler: one of samplers.SAMPLERS. steps: number of steps (may be traced).
    guidance: classifier-free guidance scale w (conditional models; may be traced);
      None uses diffusion.guidance. eta: DDIM's noise (ddim only). churn: EDM's S_churn
      (euler, heun only). label: the class to draw (conditional models, or with a
      classifier); -1 cycles through the classes.
    classifier: a noise-conditional classifier's workdir (or a `NoisyClassifier`) for
      classifier guidance with scale `classifier_scale` (default 1; may be traced).
    """
    fn, opts = _sampler(sampler, steps, eta=eta, churn=churn)
    label = int(label)
    clf = fitting(classifier, classifier_scale)
    if not nc and (guidance is not None or (label != -1 and clf is None)):
      raise ValueError(f"--guidance and --label need a class-conditional model "
                       f"(model.conditional=True), or for --label a classifier "
                       f"(--classifier=WORKDIR); got guidance={guidance}, label={label}")
    classes = nc or (clf.num_classes if clf is not None else 0)
    if classes and not -1 <= label < classes:
      raise ValueError(f"--label must be in [0, {classes}) or -1 (all classes), got {label}")
    if guidance is not None and not m.label_dropout:
      raise ValueError("--guidance needs a model trained with label dropout "
                       "(model.label_dropout > 0): it has no unconditional mode")
    guidance = d.guidance if guidance is None else guidance
    scale = 1.0 if classifier_scale is None else classifier_scale
    k_noise, k_run = jax.random.split(rng)
    noise = jax.random.normal(k_noise, (num, h, w, c))
    labels = _labels(num, label, classes)
    denoise = make_denoiser(apply_fn(params), process, objective, d.clip_denoised)
    if nc and not (_concrete(guidance) and guidance == 1.0):
      denoise = guided(denoise, nc, guidance)
    if clf is not None and not (_concrete(scale) and scale == 0.0):
      denoise = classifier_guided(denoise, process.alpha_sigma, clf.log_prob, scale)
    x = fn(lambda x, t: denoise(x, t, labels), process, noise, k_run, steps, **opts)
    return jnp.clip(x, -1.0, 1.0)

  return Pipeline(init=init, train_step=train_step, eval_step=eval_step, sample=sample,
                  functions={"net": net, "process": process, "objective": objective,
                             "apply_fn": apply_fn, "noise_batch": noise_batch},
                  compiler_options=_compiler_options(m))


def make_classifier(config, spec: DataSpec) -> Pipeline:
  """A noise-conditional classifier p_t(y | x) for `config`'s process.

  Training minimizes the cross-entropy -log p_t(y | x_t) with x_t = alpha(t) x0 +
  sigma(t) eps at the process's training times (the `loss` metric; `accuracy`). `eval_step`
  reports both at the eval key's times, and `accuracy_s{level}` on the same images and
  noise at each fixed noise level s = sigma / alpha of EVAL_LEVELS. Its `sample` draws from
  N(0, sigma_data^2 I), whose denoiser is known, guided by the classifier with scale
  `diffusion.classifier_scale`: pictures of what the classifier's gradients ask for.
  `functions["classifier"]` turns params into the `NoisyClassifier` that guides samplers.
  """
  d, m = config.diffusion, config.model
  if spec.num_classes < 1:
    raise ConfigError("a classifier (model.kind='classifier') needs a labelled dataset; this "
                      "one has no classes")
  pname = process_name(d)
  process = make_process(pname, d.p_mean, d.p_std)
  objective = make_objective(d.objective, d.sigma_data)
  nc = spec.num_classes
  net = _network(m, nc, 0, classifier=True)
  tx = make_optimizer(config.optim, config.train.num_steps)

  def logits(params, x, t, train=False, rng=None):
    """[B, classes] for x in the process's coordinates at times t (scalar or [B])."""
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    a, s = (_bcast(v, x) for v in process.alpha_sigma(t))
    rngs = {"dropout": rng} if train else {}
    return net.apply({"params": params}, objective.c_in(a, s) * x, process.cond(t), train,
                     rngs=rngs)

  def classifier(params) -> NoisyClassifier:
    return NoisyClassifier(params, logits, pname, tuple(spec.shape), nc)

  def init(rng, batch):
    params = net.init(rng, batch["image"][:1], jnp.zeros((1,)))["params"]
    return TrainState.create(params, tx, config.optim.ema_decay)

  def noised(rng, x0, t=None):
    """(x_t, t) at the training times, or at the given ones."""
    k_t, k_e = jax.random.split(rng)
    t = process.sample_t(k_t, x0.shape[:1]) if t is None else jnp.broadcast_to(t, x0.shape[:1])
    a, s = (_bcast(v, x0) for v in process.alpha_sigma(t))
    return a * x0 + s * jax.random.normal(k_e, x0.shape), t

  def scores(lg, y):
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(lg, y),
            "accuracy": (jnp.argmax(lg, -1) == y).astype(jnp.float32)}

  def train_step(state, batch, rng):
    k_noise, k_drop = jax.random.split(rng)
    x, t = noised(k_noise, batch["image"])
    y = batch["label"].astype(jnp.int32)

    def loss_fn(params):
      out = scores(logits(params, x, t, True, k_drop), y)
      return jnp.mean(out["loss"]), out["accuracy"]

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads), {"loss": loss, "accuracy": jnp.mean(acc),
                                          "grad_norm": optax.global_norm(grads)}

  def eval_step(state, batch, rng):
    params, x0, y = state.sample_params, batch["image"], batch["label"].astype(jnp.int32)
    out = scores(logits(params, *noised(rng, x0)), y)
    for level in EVAL_LEVELS:
      x, t = noised(rng, x0, process.t_of_level(jnp.float32(level)))
      out[f"accuracy_s{level:g}"] = scores(logits(params, x, t), y)["accuracy"]
    return out

  def sample(params, rng, num, sampler=d.sampler, steps=d.sample_steps,
             classifier_scale=d.classifier_scale, label=-1):
    """`num` draws from N(0, sigma_data^2 I) guided by the classifier; -1 cycles the labels."""
    fn, _ = _sampler(sampler, steps)
    label = int(label)
    if not -1 <= label < nc:
      raise ValueError(f"--label must be in [0, {nc}) or -1 (all classes), got {label}")
    var = d.sigma_data ** 2

    def prior(x, t, labels):  # E[x0 | x] for x0 ~ N(0, var I).
      a, s = (_bcast(v, x) for v in process.alpha_sigma(jnp.broadcast_to(t, x.shape[:1])))
      return a * var / (a * a * var + s * s) * x

    denoise = classifier_guided(prior, process.alpha_sigma, classifier(params).log_prob,
                                classifier_scale)
    k_noise, k_run = jax.random.split(rng)
    noise = jax.random.normal(k_noise, (num,) + tuple(spec.shape))
    labels = _labels(num, label, nc)
    x = fn(lambda x, t: denoise(x, t, labels), process, noise, k_run, steps)
    return jnp.clip(x, -1.0, 1.0)

  return Pipeline(init=init, train_step=train_step, eval_step=eval_step, sample=sample,
                  functions={"net": net, "process": process, "objective": objective,
                             "logits": logits, "classifier": classifier},
                  compiler_options=_compiler_options(m))


def _compiler_options(m) -> dict:
  """The UNet is a convolutional network (`gen.core.xla.CONVNET_CPU`); the DiT is not."""
  return dict(xla.CONVNET_CPU) if m.arch == "unet" else {}
