"""The diffusion family: one objective, one backbone, any sampler, two kinds of guidance.

`diffusion.objective` (eps | v | x0 | edm | flow) fixes what the network predicts and, with
`diffusion.schedule` (linear | cosine, for eps / v / x0), the noising process; see
`gen.diffusion.objectives`. `model.arch` picks the backbone (`unet` or `dit`, settings in
`model.unet` / `model.dit`; or `unet2d`, diffusers' UNet2DModel with its config fields in
`model.unet2d`, which `gen import` writes: see `gen.diffusion.hf`); `model.dtype` (float32 |
bfloat16) its compute dtype, with float32 parameters, loss and sampler state (see `gen.diffusion.models`). A training step
draws a time t per example from the process's training distribution, noises the batch and
regresses the network's raw output on its target (mean squared error per dimension, the
`loss` metric). `eval_step` reports, per test image, that loss and `x0_mse`, the squared
error of the denoised estimate, both with the EMA parameters and the eval key's (fixed)
times and noise, so evals are comparable.

Class-conditional models (`model.conditional`) replace the label by a null label with
probability `model.label_dropout` during training, so one network is both conditional and
unconditional; sampling with guidance w uses D_u + w (D_c - D_u), where w = 1 is the plain
conditional model and w = 0 the unconditional one (Ho & Salimans 2022).

`model.kind = "classifier"` trains a noise-conditional classifier p_t(y | x) instead: the
backbone's encoder (`models.UNetClassifier`, `models.DiTClassifier`) on x_t = alpha x0 +
sigma eps at the process's training times, with the objective's input scaling, by
cross-entropy. Its run guides any model of the same process, image shape and classes:
`sample(..., classifier=clf, classifier_scale=w)` with the run's `NoisyClassifier` adds
w grad_x log p_t(y | x) to the score (Dhariwal & Nichol 2021; see `gen.diffusion.guidance`).
`gen sample --classifier=WORKDIR` loads it before compiling (the pipeline's `sample_options`,
`load_classifier`). Guidance scales, the step count and a classifier's params are traced:
changing them does not recompile the sampler.

Every step is a module-level function of its parts (network, process, objective and a
`Settings` / `ClassifierSettings` record of the config values it reads); `make` binds them
(`denoiser_parts`, `classifier_parts` build the parts of a config).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen.core import config as config_lib
from gen.core import train as train_lib
from gen.core import xla
from gen.core.config import ConfigError
from gen.core.pipeline import DataSpec, Pipeline, TrainState, make_optimizer
from gen.diffusion import autoencoder as autoencoder_lib
from gen.diffusion import latent as latent_lib
from gen.diffusion import samplers as samplers_lib
from gen.diffusion.discrete import DiscreteProcess, check_grid
from gen.diffusion.guidance import NoisyClassifier, classifier_guided, guided
from gen.diffusion.models import DTYPES, DiT, DiTClassifier, UNet, UNetClassifier
from gen.diffusion.objectives import (OBJECTIVES, OWN_PROCESS, Objective, Process,
                                      make_objective, make_process)
from gen.diffusion.unet2d import DOWN_BLOCKS, UP_BLOCKS, UNet2D

SCHEDULES = ("linear", "cosine", "discrete")  # discrete: diffusion.discrete (a diffusers table).
ARCHS = ("unet", "dit", "unet2d")  # unet2d: diffusers' UNet2DModel (gen.diffusion.unet2d).
DIT_POSITIONS = ("sincos", "learned")
KINDS = ("denoiser", "classifier", "autoencoder")
# Noise levels s = sigma / alpha at which a classifier's eval reports its accuracy.
EVAL_LEVELS = (0.1, 0.5, 1.0, 2.0, 5.0)
DEFAULT_NUM = 64  # Images `gen sample` draws without --num.


def process_name(d) -> str:
  return OWN_PROCESS.get(d.objective, d.schedule)


def _bcast(v, x):
  """[B] -> [B, 1, ..., 1], to broadcast against x."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


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
    a, s = (_bcast(v, x) for v in process.alpha_sigma(t))
    raw = apply_raw(objective.c_in(a, s) * x, process.cond(t), labels)
    x0 = objective.to_x0(x, raw, a, s)
    x0 = jnp.clip(x0, -1.0, 1.0) if clip else x0
    return (x0, objective.to_eps(x, raw, a, s)) if with_eps else x0
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


def _check(config, spec: DataSpec, shape=None):
  """Checks what denoisers and classifiers share: the process, the data, the backbone
  (for inputs of `shape`: the latent shape of a latent run; default: the images')."""
  d, m = config.diffusion, config.model
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
  if m.get("dtype", "float32") not in DTYPES:
    raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{m.dtype}'")
  h, w, _ = spec.shape if shape is None else shape
  if m.arch == "unet2d":
    _check_unet2d(m, h, w)
  elif m.arch == "unet":
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


def _check_unet2d(m, h: int, w: int):
  """model.unet2d: the diffusers UNet2DModel fields gen.diffusion.unet2d builds."""
  u = m.unet2d
  boc, down, up = tuple(u.block_out_channels), tuple(u.down_block_types), tuple(u.up_block_types)
  if m.get("kind", "denoiser") != "denoiser":
    raise ConfigError("model.arch='unet2d' (diffusers' UNet2DModel) is a denoiser: "
                      "model.kind must be 'denoiser'")
  if m.get("conditional", False):
    raise ConfigError("model.arch='unet2d' is unconditional: model.conditional must be False")
  if not boc or len(down) != len(boc) or len(up) != len(boc):
    raise ConfigError("model.unet2d.block_out_channels, down_block_types and up_block_types "
                      f"must have the same (nonzero) length, got {len(boc)}, {len(down)}, "
                      f"{len(up)}")
  for name, types, known in (("down_block_types", down, DOWN_BLOCKS),
                             ("up_block_types", up, UP_BLOCKS)):
    if any(t not in known for t in types):
      raise ConfigError(f"model.unet2d.{name} must be of {', '.join(known)}, got {types}")
  groups = [u.norm_num_groups] + ([u.attn_norm_num_groups] if u.attn_norm_num_groups else [])
  if any(g < 1 or c % g for c in boc for g in groups):
    raise ConfigError(f"model.unet2d.norm_num_groups = {u.norm_num_groups} (and "
                      f"attn_norm_num_groups = {u.attn_norm_num_groups}) must divide every "
                      f"block_out_channels {boc}")
  if u.attention_head_dim < 0 or (u.attention_head_dim and any(
      c % u.attention_head_dim for c in boc)):
    raise ConfigError(f"model.unet2d.attention_head_dim = {u.attention_head_dim} must divide "
                      f"every block_out_channels {boc} (0: one head)")
  if u.layers_per_block < 1 or u.downsample_padding not in (0, 1):
    raise ConfigError("model.unet2d.layers_per_block must be >= 1 and downsample_padding 0 or "
                      f"1, got {u.layers_per_block}, {u.downsample_padding}")
  f = 2 ** (len(boc) - 1)
  if h % f or w % f:
    raise ConfigError(f"image size {h}x{w} must be divisible by {f}: the UNet halves it "
                      f"{len(boc) - 1} times (len(model.unet2d.block_out_channels) - 1)")


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
  with `out` classes, computing in `model.dtype` (float32 params and outputs either way)."""
  dtype = DTYPES[m.get("dtype", "float32")]
  if m.arch == "unet2d":
    u = m.unet2d
    return UNet2D(out, tuple(u.block_out_channels),
                  tuple(DOWN_BLOCKS[b] for b in u.down_block_types),
                  tuple(UP_BLOCKS[b] for b in u.up_block_types), u.layers_per_block,
                  u.attention_head_dim, u.norm_num_groups, u.attn_norm_num_groups, u.norm_eps,
                  u.flip_sin_to_cos, u.freq_shift, u.downsample_padding,
                  u.mid_block_scale_factor, m.dropout, dtype=dtype)
  if m.arch == "unet":
    u = m.unet
    cls = UNetClassifier if classifier else UNet
    return cls(out, u.channels, tuple(u.channel_mult), u.num_res_blocks,
               tuple(u.attn_resolutions), u.heads, m.dropout, u.groups, num_classes,
               dtype=dtype)
  t = m.dit
  cls = DiTClassifier if classifier else DiT
  return cls(out, t.patch, t.dim, t.depth, t.heads, t.mlp_ratio, m.dropout, num_classes,
             t.get("positions", "sincos"), dtype=dtype)


def _concrete(v) -> bool:
  return isinstance(v, (int, float))


def _sampler(sampler, steps, **options):
  """The sampler function and the options it takes; errors for bad steps and options."""
  fn = samplers_lib.get(sampler)
  if _concrete(steps) and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
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


# ------------------------------------------------------------------------- denoisers


@dataclasses.dataclass(frozen=True)
class Settings:
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
  def of(cls, config, spec: DataSpec, codec: latent_lib.Codec | None = None) -> Settings:
    d, m = config.diffusion, config.model
    shape = tuple(spec.shape) if codec is None else tuple(codec.shape)
    return cls(shape, spec.num_classes if m.conditional else 0, process_name(d),
               m.label_dropout, d.guidance, d.clip_denoised, d.sampler, d.sample_steps,
               config.optim.ema_decay, codec)

  def to_canvas(self, images, rng=None):
    """What the network denoises: the images, or a latent run's normalized latents."""
    return images if self.codec is None else self.codec.encode(images, rng)

  def to_images(self, x):
    return x if self.codec is None else self.codec.decode(x)


def denoiser_parts(config, spec: DataSpec, codec: latent_lib.Codec | None = None
                   ) -> tuple[nn.Module, Process, Objective, Settings]:
  """The network, process, objective and settings of `config`'s denoiser (unchecked), on
  images, or with `codec` on its latents."""
  d = config.diffusion
  cfg = Settings.of(config, spec, codec)
  net = _network(config.model, cfg.shape[-1], cfg.num_classes, classifier=False)
  return (net, make_process(cfg.process, d.p_mean, d.p_std, d.get("discrete")),
          make_objective(d.objective, d.sigma_data), cfg)


def labels_of(num_classes: int, batch):
  """The batch's labels for a conditional model; zeros for an unconditional one."""
  if num_classes:
    return batch["label"].astype(jnp.int32)
  return jnp.zeros(batch["image"].shape[:1], jnp.int32)


def apply_fn(net: nn.Module, params, train: bool = False, rng=None) -> Callable:
  """The network as `apply_raw(x_in, cond, labels)`."""
  rngs = {"dropout": rng} if train else {}
  return lambda x, cond, y: net.apply({"params": params}, x, cond, y, train, rngs=rngs)


def init(net: nn.Module, tx: optax.GradientTransformation, cfg: Settings, rng, batch):
  x = jnp.zeros((1,) + tuple(cfg.shape))
  params = net.init(rng, x, jnp.zeros((1,)), labels_of(cfg.num_classes, batch)[:1])["params"]
  return TrainState.create(params, tx, cfg.ema_decay)


def noise_batch(process: Process, rng, x0):
  """Training-distribution times [B] and standard normal noise for a batch x0."""
  k_t, k_e = jax.random.split(rng)
  t = process.sample_t(k_t, x0.shape[:1])
  return t, jax.random.normal(k_e, x0.shape)


def train_step(net: nn.Module, process: Process, objective: Objective, cfg: Settings, state,
               batch, rng):
  nc = cfg.num_classes
  k_noise, k_drop, k_label, k_enc = jax.random.split(rng, 4)
  x0 = cfg.to_canvas(batch["image"], k_enc)
  t, eps = noise_batch(process, k_noise, x0)
  labels = labels_of(nc, batch)
  if nc and cfg.label_dropout > 0:
    drop = jax.random.bernoulli(k_label, cfg.label_dropout, labels.shape)
    labels = jnp.where(drop, nc, labels)

  def loss_fn(params):
    loss, x0_mse = per_example_loss(apply_fn(net, params, True, k_drop), process, objective,
                                    x0, t, eps, labels)
    return jnp.mean(loss), x0_mse

  (loss, x0_mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads), {"loss": loss, "x0_mse": jnp.mean(x0_mse),
                                        "grad_norm": optax.global_norm(grads)}


def eval_step(net: nn.Module, process: Process, objective: Objective, cfg: Settings, state,
              batch, rng):
  k_noise, k_enc = jax.random.split(rng)
  x0 = cfg.to_canvas(batch["image"], k_enc)
  t, eps = noise_batch(process, k_noise, x0)
  loss, x0_mse = per_example_loss(apply_fn(net, state.sample_params), process, objective,
                                  x0, t, eps, labels_of(cfg.num_classes, batch))
  return {"loss": loss, "x0_mse": x0_mse}


def check_fit(cfg: Settings, clf: NoisyClassifier, name: str = "the classifier"):
  """Errors unless `clf` can guide the model of `cfg`: same process, images and classes."""
  problems = []
  if clf.process != cfg.process:
    problems.append(f"it was trained on the '{clf.process}' process, this model samples the "
                    f"'{cfg.process}' process")
  if tuple(clf.shape) != tuple(cfg.shape):
    problems.append(f"it classifies {clf.shape} images, this model makes {cfg.shape}")
  if cfg.num_classes and clf.num_classes != cfg.num_classes:
    problems.append(f"it has {clf.num_classes} classes, this model {cfg.num_classes}")
  if problems:
    raise ValueError(f"{name} does not fit this model: " + "; ".join(problems))


def _fitting(cfg: Settings, classifier, scale) -> NoisyClassifier | None:
  """The classifier, checked against this model (None: no classifier guidance)."""
  if classifier is None:
    if scale is not None:
      raise ValueError(f"--classifier_scale={scale} needs --classifier=WORKDIR, the run of a "
                       "noise-conditional classifier (model.kind='classifier')")
    return None
  if not isinstance(classifier, NoisyClassifier):
    raise ValueError(f"classifier={classifier!r}: the sampler takes a NoisyClassifier; the "
                     "pipeline's sample_options loads one from a workdir (load_classifier)")
  check_fit(cfg, classifier)
  return classifier


def sample(net: nn.Module, process: Process, objective: Objective, cfg: Settings, params, rng,
           num, sampler=None, steps=None, guidance=None, eta=0.0, churn=0.0, label=-1,
           classifier=None, classifier_scale=None, decode=True, timesteps=None, sigmas=None):
  """`num` images from the (EMA) network.

  sampler: one of samplers.SAMPLERS (None: diffusion.sampler). steps: number of steps (may
    be traced; None: diffusion.sample_steps).
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
  nc = cfg.num_classes
  sampler = cfg.sampler if sampler is None else sampler
  fixed = {k: v for k, v in (("timesteps", timesteps), ("sigmas", sigmas)) if v is not None}
  if fixed:
    if not isinstance(process, DiscreteProcess):
      raise ValueError(f"--{' --'.join(fixed)}: a fixed grid applies to a discrete process "
                       f"(diffusion.schedule='discrete', as diffusers models import); this "
                       f"model's process is '{cfg.process}', whose grid --steps sets")
    n = check_grid(process, sampler, timesteps, sigmas)
    if steps is not None and _concrete(steps) and steps != n:
      raise ValueError(f"--steps={steps} disagrees with the fixed grid's {n} steps; leave "
                       "--steps out")
    steps = n
  steps = cfg.sample_steps if steps is None else steps
  fn, opts = _sampler(sampler, steps, eta=eta, churn=churn)
  opts.update(fixed)
  label = int(label)
  clf = _fitting(cfg, classifier, classifier_scale)
  if not nc and (guidance is not None or (label != -1 and clf is None)):
    raise ValueError(f"--guidance and --label need a class-conditional model "
                     f"(model.conditional=True), or for --label a classifier "
                     f"(--classifier=WORKDIR); got guidance={guidance}, label={label}")
  classes = nc or (clf.num_classes if clf is not None else 0)
  if classes and not -1 <= label < classes:
    raise ValueError(f"--label must be in [0, {classes}) or -1 (all classes), got {label}")
  if guidance is not None and not cfg.label_dropout:
    raise ValueError("--guidance needs a model trained with label dropout "
                     "(model.label_dropout > 0): it has no unconditional mode")
  guidance = cfg.guidance if guidance is None else guidance
  scale = 1.0 if classifier_scale is None else classifier_scale
  k_noise, k_run = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (num,) + tuple(cfg.shape))
  labels = _labels(num, label, classes)
  denoise = make_denoiser(apply_fn(net, params), process, objective, cfg.clip_denoised,
                          with_eps=isinstance(process, DiscreteProcess))
  if nc and not (_concrete(guidance) and guidance == 1.0):
    denoise = guided(denoise, nc, guidance)
  if clf is not None and not (_concrete(scale) and scale == 0.0):
    denoise = classifier_guided(denoise, process.alpha_sigma, clf.log_prob, scale)
  x = fn(lambda x, t: denoise(x, t, labels), process, noise, k_run, steps, **opts)
  if not decode:
    return x
  return jnp.clip(cfg.to_images(x), -1.0, 1.0)  # A latent run decodes in the same program.


def sample_options(cfg: Settings, num: int, flags: dict, process: Process | None = None
                   ) -> tuple[int, dict]:
  """`gen sample`'s flags as `sample`'s arguments, eagerly: `classifier` (a workdir) becomes
  the `NoisyClassifier` trained there, checked against this model; `timesteps` / `sigmas`
  (lists) are checked against `process` and become float32 arrays (traced); the rest pass
  through. `num` = 0 (not given) is DEFAULT_NUM images."""
  kwargs = dict(flags)
  for name in ("timesteps", "sigmas"):
    if kwargs.get(name) is not None and isinstance(process, DiscreteProcess):
      check_grid(process, kwargs.get("sampler") or cfg.sampler, **{name: kwargs[name]})
      kwargs[name] = np.asarray(kwargs[name], np.float32)
  classifier = kwargs.get("classifier")
  if classifier is not None and not isinstance(classifier, NoisyClassifier):
    kwargs["classifier"] = load_classifier(str(classifier))
    check_fit(cfg, kwargs["classifier"], f"--classifier={classifier}")
  return num or DEFAULT_NUM, kwargs


def make(config, spec: DataSpec) -> Pipeline:
  """The pipeline of `config`: a denoiser (on images, or with `latent.autoencoder` on an
  autoencoder's latents), or with model.kind='classifier' a classifier, 'autoencoder' the
  autoencoder of latent runs (`gen.diffusion.autoencoder`)."""
  kind = config.model.get("kind", "denoiser")
  if kind not in KINDS:
    raise ConfigError(f"model.kind must be one of {', '.join(KINDS)}, got '{kind}'")
  if kind != "denoiser" and latent_lib.enabled(config):
    raise ConfigError(f"latent.autoencoder trains a denoiser on latents; model.kind='{kind}' "
                      "works on images: leave latent.autoencoder empty")
  if kind == "autoencoder":
    return autoencoder_lib.make_autoencoder(config, spec)
  if kind == "classifier":
    _check(config, spec)
    return make_classifier(config, spec)
  codec = latent_lib.codec(config, spec)  # Loads a latent run's autoencoder, eagerly.
  _check(config, spec, None if codec is None else codec.shape)
  _check_denoiser(config, spec)
  net, process, objective, cfg = denoiser_parts(config, spec, codec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  parts = (net, process, objective, cfg)
  return Pipeline(init=functools.partial(init, net, tx, cfg),
                  train_step=functools.partial(train_step, *parts),
                  eval_step=functools.partial(eval_step, *parts),
                  sample=functools.partial(sample, *parts),
                  sample_options=functools.partial(sample_options, cfg, process=process),
                  compiler_options=_compiler_options(config.model))


# ----------------------------------------------------------------------- classifiers


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
    return cls(tuple(spec.shape), spec.num_classes, process_name(d), d.sampler,
               d.sample_steps, d.classifier_scale, d.sigma_data, config.optim.ema_decay)


def classifier_parts(config, spec: DataSpec
                     ) -> tuple[nn.Module, Process, Objective, ClassifierSettings]:
  """The network, process, objective and settings of `config`'s classifier (unchecked)."""
  d = config.diffusion
  cfg = ClassifierSettings.of(config, spec)
  net = _network(config.model, cfg.num_classes, 0, classifier=True)
  return (net, make_process(cfg.process, d.p_mean, d.p_std, d.get("discrete")),
          make_objective(d.objective, d.sigma_data), cfg)


def logits(net: nn.Module, process: Process, objective: Objective, params, x, t,
           train: bool = False, rng=None):
  """[B, classes] for x in the process's coordinates at times t (scalar or [B])."""
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
  a, s = (_bcast(v, x) for v in process.alpha_sigma(t))
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
  if config.model.get("kind", "denoiser") != "classifier":
    raise ValueError(f"model.kind='{config.model.get('kind', 'denoiser')}' is not a "
                     "noise-conditional classifier (model.kind='classifier')")
  return as_noisy_classifier(*classifier_parts(config, spec), params)


def load_classifier(workdir: str) -> NoisyClassifier:
  """The classifier trained in `workdir` (a diffusion run with model.kind='classifier'), with
  its newest checkpoint's (EMA) params. Reads files: call it eagerly, not while tracing."""
  path = os.path.join(workdir, train_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"--classifier={workdir}: no training run there "
                     f"({train_lib.CONFIG_FILE} not found)")
  config = config_lib.load_json(path)
  if config.get("family") != "diffusion" or config.model.get("kind", "denoiser") != "classifier":
    raise ValueError(f"--classifier={workdir} holds a {config.get('family')} model, not a "
                     "noise-conditional classifier (diffusion with model.kind='classifier')")
  config, spec, pipeline, state, _ = train_lib.load_workdir(workdir)
  return noisy_classifier(config, spec, pipeline.sample_params(state))


def classifier_init(net: nn.Module, tx: optax.GradientTransformation, cfg: ClassifierSettings,
                    rng, batch):
  params = net.init(rng, batch["image"][:1], jnp.zeros((1,)))["params"]
  return TrainState.create(params, tx, cfg.ema_decay)


def noised(process: Process, rng, x0, t=None):
  """(x_t, t) at the training times, or at the given ones."""
  k_t, k_e = jax.random.split(rng)
  t = process.sample_t(k_t, x0.shape[:1]) if t is None else jnp.broadcast_to(t, x0.shape[:1])
  a, s = (_bcast(v, x0) for v in process.alpha_sigma(t))
  return a * x0 + s * jax.random.normal(k_e, x0.shape), t


def scores(lg, y):
  """Per-example cross-entropy `loss` and `accuracy` of logits [B, classes] for labels y."""
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(lg, y),
          "accuracy": (jnp.argmax(lg, -1) == y).astype(jnp.float32)}


def classifier_train_step(net: nn.Module, process: Process, objective: Objective, state,
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


def classifier_eval_step(net: nn.Module, process: Process, objective: Objective, state, batch,
                         rng):
  params, x0, y = state.sample_params, batch["image"], batch["label"].astype(jnp.int32)
  out = scores(logits(net, process, objective, params, *noised(process, rng, x0)), y)
  for level in EVAL_LEVELS:
    x, t = noised(process, rng, x0, process.t_of_level(jnp.float32(level)))
    out[f"accuracy_s{level:g}"] = scores(logits(net, process, objective, params, x, t),
                                         y)["accuracy"]
  return out


def classifier_sample(net: nn.Module, process: Process, objective: Objective,
                      cfg: ClassifierSettings, params, rng, num, sampler=None, steps=None,
                      classifier_scale=None, label=-1):
  """`num` draws from N(0, sigma_data^2 I) guided by the classifier; -1 cycles the labels.

  None: the config's sampler, steps and classifier scale (the last two may be traced).
  """
  nc = cfg.num_classes
  sampler = cfg.sampler if sampler is None else sampler
  steps = cfg.sample_steps if steps is None else steps
  classifier_scale = cfg.classifier_scale if classifier_scale is None else classifier_scale
  fn, _ = _sampler(sampler, steps)
  label = int(label)
  if not -1 <= label < nc:
    raise ValueError(f"--label must be in [0, {nc}) or -1 (all classes), got {label}")
  var = cfg.sigma_data ** 2

  def prior(x, t, labels):  # E[x0 | x] for x0 ~ N(0, var I).
    a, s = (_bcast(v, x) for v in process.alpha_sigma(jnp.broadcast_to(t, x.shape[:1])))
    return a * var / (a * a * var + s * s) * x

  clf = as_noisy_classifier(net, process, objective, cfg, params)
  denoise = classifier_guided(prior, process.alpha_sigma, clf.log_prob, classifier_scale)
  k_noise, k_run = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (num,) + tuple(cfg.shape))
  labels = _labels(num, label, nc)
  x = fn(lambda x, t: denoise(x, t, labels), process, noise, k_run, steps)
  return jnp.clip(x, -1.0, 1.0)


def make_classifier(config, spec: DataSpec) -> Pipeline:
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
  net, process, objective, cfg = classifier_parts(config, spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(init=functools.partial(classifier_init, net, tx, cfg),
                  train_step=functools.partial(classifier_train_step, net, process, objective),
                  eval_step=functools.partial(classifier_eval_step, net, process, objective),
                  sample=functools.partial(classifier_sample, net, process, objective, cfg),
                  compiler_options=_compiler_options(config.model))


def _compiler_options(m) -> dict:
  """The UNets are convolutional networks (`gen.core.xla.CONVNET_CPU`); the DiT is not."""
  return dict(xla.CONVNET_CPU) if m.arch in ("unet", "unet2d") else {}
