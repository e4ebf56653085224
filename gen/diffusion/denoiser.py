"""The denoiser: what a diffusion model trains, in one file.

`diffusion.objective` (eps | v | x0 | edm | flow) fixes what the network predicts and, with
`diffusion.schedule` (linear | cosine | discrete, for eps / v / x0), the noising process
(`gen.diffusion.objectives`). `model.arch` picks the backbone (`gen.diffusion.networks`). A
training step draws a time t per example from the process's training distribution, noises
the batch and regresses the network's raw output on its target (mean squared error per
dimension, the `loss` metric). `eval_step` reports, per test image, that loss and `x0_mse`,
the squared error of the denoised estimate, both with the EMA parameters and the eval key's
(fixed) times and noise, so evals are comparable.

Class-conditional models (`model.conditional`) replace the label by a null label with
probability `model.label_dropout` during training, so one network is both conditional and
unconditional; sampling with guidance w uses D_u + w (D_c - D_u), where w = 1 is the plain
conditional model and w = 0 the unconditional one (Ho & Salimans 2022). A noise-conditional
classifier's run (`gen.diffusion.noisy_classifier`) can guide it too. `sample` resolves its
flags and picks the process's sampler through `gen.diffusion.sampling`; guidance scales, the
step count and a classifier's params are traced: changing them does not recompile.

With `latent.autoencoder` the canvas is a trained autoencoder's latent space
(`gen.diffusion.latent`): batches are encoded inside the steps, samples decoded inside the
sampler. Every step is a module-level function of its parts (network, process, objective
and a `DenoiserSettings` record of the config values it reads); `make` binds them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.diffusion import latent as latent_lib
from gen.diffusion import networks, noisy_classifier, sampling
from gen.diffusion.guidance import NoisyClassifier
from gen.diffusion.process import Objective, Process, bcast

DEFAULT_NUM = 64  # Images `gen sample` draws without --num.


def make_denoiser(apply_raw: Callable, process: Process, objective: Objective,
                  clip: bool = False, with_eps: bool = False) -> Callable:
  """(x, t, labels) -> x0_hat, from `apply_raw(x_in, cond, labels) -> raw output`.

  `t` is a scalar or [B]; `x` is in the process's coordinates. `clip` clips x0_hat to the
  data range [-1, 1]. `with_eps` returns (x0_hat, eps_hat), eps_hat from the raw output
  (`Objective.to_eps`) and unclipped, as diffusers' schedulers keep the network's eps: the
  discrete samplers take either form (`gen.diffusion.discrete`).
  """
  def denoise(x, t, labels):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    a, s = (bcast(v, x) for v in process.alpha_sigma(t))
    raw = apply_raw(objective.c_in(a, s) * x, process.cond(t), labels)
    x0 = objective.to_x0(x, raw, a, s)
    x0 = jnp.clip(x0, -1.0, 1.0) if clip else x0
    return (x0, objective.to_eps(x, raw, a, s)) if with_eps else x0
  return denoise


def per_example_loss(apply_raw: Callable, process: Process, objective: Objective, x0, t, eps,
                     labels):
  """The objective's loss and the denoised estimate's squared error, per example: [B], [B]."""
  a, s = (bcast(v, x0) for v in process.alpha_sigma(t))
  x = a * x0 + s * eps
  raw = apply_raw(objective.c_in(a, s) * x, process.cond(t), labels)
  axes = tuple(range(1, x0.ndim))
  loss = jnp.mean(jnp.square(raw - objective.target(x0, eps, a, s)), axis=axes)
  x0_mse = jnp.mean(jnp.square(objective.to_x0(x, raw, a, s) - x0), axis=axes)
  return loss, x0_mse


def check(config, spec: DataSpec):
  d, m = config.diffusion, config.model
  if m.conditional and spec.num_classes < 1:
    raise ConfigError("model.conditional=True needs a labelled dataset; this one has no classes")
  if not 0.0 <= m.label_dropout < 1.0:
    raise ConfigError(f"model.label_dropout must be in [0, 1), got {m.label_dropout}")
  if d.guidance != 1.0 and not (m.conditional and m.label_dropout > 0):
    raise ConfigError(f"diffusion.guidance = {d.guidance} needs a class-conditional model "
                      "trained with label dropout (model.conditional=True, "
                      "model.label_dropout > 0); 1.0 means no guidance")


@dataclasses.dataclass(frozen=True)
class DenoiserSettings:
  """The config values a denoiser's steps read."""

  shape: tuple[int, ...]  # (H, W, C) the network sees: the images', or the latents'.
  num_classes: int  # Classes of a conditional model (its null label); 0: unconditional.
  process: str  # The process's name (`process_name`): a guiding classifier's must match.
  label_dropout: float
  guidance: float  # The default classifier-free guidance scale (diffusion.guidance).
  clip_denoised: bool
  sampler: str  # The default sampler and step count.
  sample_steps: int
  ema_decay: float
  # A latent run's frozen autoencoder (`gen.diffusion.latent`): batches are encoded in the
  # steps, samples decoded in the sampler. None: the network works on the images.
  codec: latent_lib.Codec | None = None

  @classmethod
  def of(cls, config, spec: DataSpec, codec: latent_lib.Codec | None = None) -> DenoiserSettings:
    d, m = config.diffusion, config.model
    shape = tuple(spec.shape) if codec is None else tuple(codec.shape)
    return cls(shape, spec.num_classes if m.conditional else 0, networks.process_name(d),
               m.label_dropout, d.guidance, d.clip_denoised, d.sampler, d.sample_steps,
               config.optim.ema_decay, codec)

  def labels(self, batch):
    """What the network is conditioned on: the batch's labels (zeros when unconditional)."""
    return labels_of(self.num_classes, batch)

  def drop_labels(self, labels, rng):
    """`labels` with each replaced by the null label with probability label_dropout."""
    if not (self.num_classes and self.label_dropout > 0):
      return labels
    drop = jax.random.bernoulli(rng, self.label_dropout, labels.shape)
    return jnp.where(drop, self.num_classes, labels)

  def to_canvas(self, images, rng=None):
    """What the network denoises: the images, or a latent run's normalized latents."""
    return images if self.codec is None else self.codec.encode(images, rng)

  def to_images(self, x):
    return x if self.codec is None else self.codec.decode(x)


def parts(config, spec: DataSpec, codec: latent_lib.Codec | None = None
          ) -> tuple[nn.Module, Process, Objective, DenoiserSettings]:
  """The network, process, objective and settings of `config`'s denoiser (unchecked), on
  images, or with `codec` on its latents."""
  cfg = DenoiserSettings.of(config, spec, codec)
  net = networks.network(config.model, cfg.shape[-1], cfg.num_classes, classifier=False)
  return (net, *networks.process_and_objective(config.diffusion), cfg)


def labels_of(num_classes: int, batch):
  """The batch's labels for a conditional model; zeros for an unconditional one."""
  if num_classes:
    return batch["label"].astype(jnp.int32)
  return jnp.zeros(batch["image"].shape[:1], jnp.int32)


def apply_fn(net: nn.Module, params, train: bool = False, rng=None) -> Callable:
  """The network as `apply_raw(x_in, cond, labels)`."""
  rngs = {"dropout": rng} if train else {}
  return lambda x, cond, y: net.apply({"params": params}, x, cond, y, train, rngs=rngs)


def init(net: nn.Module, tx: optax.GradientTransformation, cfg: DenoiserSettings, rng, batch):
  x = jnp.zeros((1,) + tuple(cfg.shape))
  params = net.init(rng, x, jnp.zeros((1,)), cfg.labels(batch)[:1])["params"]
  return TrainState.create(params, tx, cfg.ema_decay)


def noise_batch(process: Process, rng, x0):
  """Training-distribution times [B] and standard normal noise for a batch x0."""
  k_t, k_e = jax.random.split(rng)
  t = process.sample_t(k_t, x0.shape[:1])
  return t, jax.random.normal(k_e, x0.shape)


def train_step(net: nn.Module, process: Process, objective: Objective, cfg: DenoiserSettings, state,
               batch, rng, aux: Callable | None = None):
  """One optimizer step on the denoising loss; `aux(params, batch) -> (loss, metrics)` (a
  family's auxiliary term, e.g. the text denoiser's caption parsing) adds its loss to the
  objective and its metrics to the step's (the logged `loss` stays the denoising loss)."""
  k_noise, k_drop, k_label, k_enc = jax.random.split(rng, 4)
  x0 = cfg.to_canvas(batch["image"], k_enc)
  t, eps = noise_batch(process, k_noise, x0)
  labels = cfg.drop_labels(cfg.labels(batch), k_label)

  def loss_fn(params):
    loss, x0_mse = per_example_loss(apply_fn(net, params, True, k_drop), process, objective,
                                    x0, t, eps, labels)
    extra, metrics = (0.0, {}) if aux is None else aux(params, batch)
    return jnp.mean(loss) + extra, (jnp.mean(loss), x0_mse, metrics)

  (_, (loss, x0_mse, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  return state.apply_gradients(grads), {"loss": loss, "x0_mse": jnp.mean(x0_mse),
                                        "grad_norm": optax.global_norm(grads), **metrics}


def eval_step(net: nn.Module, process: Process, objective: Objective, cfg: DenoiserSettings, state,
              batch, rng):
  k_noise, k_enc = jax.random.split(rng)
  x0 = cfg.to_canvas(batch["image"], k_enc)
  t, eps = noise_batch(process, k_noise, x0)
  loss, x0_mse = per_example_loss(apply_fn(net, state.sample_params), process, objective,
                                  x0, t, eps, cfg.labels(batch))
  return {"loss": loss, "x0_mse": x0_mse}


def sample(net: nn.Module, process: Process, objective: Objective, cfg: DenoiserSettings,
           params, rng, num, sampler=None, steps=None, guidance=None, eta=0.0, churn=0.0,
           label=-1, classifier=None, classifier_scale=None, decode=True, timesteps=None,
           sigmas=None):
  """`num` images from the (EMA) network.

  sampler: one of the process's samplers (`gen.diffusion.sampling`; None: diffusion.sampler).
    steps: number of steps (may be traced; None: diffusion.sample_steps).
  guidance: classifier-free guidance scale w (conditional models; may be traced);
    None uses diffusion.guidance. eta: DDIM's noise (ddim only). churn: EDM's S_churn
    (euler, heun only). label: the class to draw (conditional models, or with a
    classifier); -1 cycles through the classes.
  classifier: a `NoisyClassifier` (a pytree: may be a traced argument; `sample_options`
    loads one from a workdir) for classifier guidance with scale `classifier_scale`
    (default 1; may be traced).
  decode: False returns what the sampler made, unclipped: a latent run's normalized latents.
  timesteps / sigmas: a fixed grid for a discrete process (diffusers' `timesteps=` and
    `sigmas=`; sigmas for euler, heun, dpmpp_2m, ending with the final level, usually 0):
    the step count is its length (`steps`, if given, must agree). A list of Python numbers is
    fixed in the program; an array may be traced (new values of the same length reuse it).
  """
  sampler = cfg.sampler if sampler is None else sampler
  steps = cfg.sample_steps if steps is None and timesteps is None and sigmas is None else steps
  fn, steps, opts = sampling.resolve(process, sampler, steps, eta=eta, churn=churn,
                                     timesteps=timesteps, sigmas=sigmas)
  w, clf, scale, classes = sampling.guidance(cfg, guidance, int(label), classifier,
                                             classifier_scale)
  k_noise, k_run = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (num,) + tuple(cfg.shape))
  labels = sampling.labels(num, int(label), classes)
  denoise = make_denoiser(apply_fn(net, params), process, objective, cfg.clip_denoised,
                          with_eps=sampling.table(process).WITH_EPS)
  denoise = sampling.guide(denoise, process, cfg.num_classes, w, clf, scale)
  x = fn(lambda x, t: denoise(x, t, labels), process, noise, k_run, steps, **opts)
  if not decode:
    return x
  return jnp.clip(cfg.to_images(x), -1.0, 1.0)  # A latent run decodes in the same program.


def sample_options(cfg: DenoiserSettings, num: int, flags: dict,
                   process: Process | None = None) -> tuple[int, dict]:
  """`gen sample`'s flags as `sample`'s arguments, eagerly: `classifier` (a workdir) becomes
  the `NoisyClassifier` trained there, checked against this model; `timesteps` / `sigmas`
  (lists) are checked against `process` and become float32 arrays (traced); the rest pass
  through. `num` = 0 (not given) is DEFAULT_NUM images."""
  kwargs = dict(flags)
  tab = sampling.table(process) if process is not None else None
  for name in ("timesteps", "sigmas"):
    if kwargs.get(name) is not None and hasattr(tab, "check_grid"):
      tab.check_grid(process, kwargs.get("sampler") or cfg.sampler, **{name: kwargs[name]})
      kwargs[name] = np.asarray(kwargs[name], np.float32)
  classifier = kwargs.get("classifier")
  if classifier is not None and not isinstance(classifier, NoisyClassifier):
    kwargs["classifier"] = noisy_classifier.load_classifier(str(classifier))
    sampling.check_fit(cfg, kwargs["classifier"], f"--classifier={classifier}")
  return num or DEFAULT_NUM, kwargs


def make(config, spec: DataSpec) -> Pipeline:
  """A denoiser on images, or with `latent.autoencoder` on an autoencoder's latents."""
  codec = latent_lib.codec(config, spec)  # Loads a latent run's autoencoder, eagerly.
  networks.check(config, spec, None if codec is None else codec.shape)
  check(config, spec)
  net, process, objective, cfg = parts(config, spec, codec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  bound = (net, process, objective, cfg)
  return Pipeline(init=functools.partial(init, net, tx, cfg),
                  train_step=functools.partial(train_step, *bound),
                  eval_step=functools.partial(eval_step, *bound),
                  sample=functools.partial(sample, *bound),
                  sample_options=functools.partial(sample_options, cfg, process=process),
                  compiler_options=networks.compiler_options(config.model))
