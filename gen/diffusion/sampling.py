"""From `gen sample`'s flags to a sampler run: the one place that picks the sampler table.

A process decides its samplers: the continuous processes (linear, cosine, edm, flow) take
`gen.diffusion.samplers`, a `discrete` process (a diffusers table) diffusers' schedulers in
`gen.diffusion.schedulers`. Each name means one algorithm per table:

| name         | continuous process (`samplers`)             | discrete process (`schedulers`) |
|--------------|---------------------------------------------|---------------------------------|
| `ddpm`       | ancestral, posterior of q(x_t | x_s, x0_hat) | DDPMScheduler ("fixed_small")   |
| `ddim`       | DDIM with eta                               | DDIMScheduler with eta          |
| `pndm`       | (not available)                             | PNDMScheduler (PLMS, skip_prk)  |
| `euler`      | Karras Algorithm 2, Euler, churn            | EulerDiscreteScheduler          |
| `euler_a`    | (not available)                             | EulerAncestralDiscreteScheduler |
| `heun`       | Karras Algorithm 2, Heun, churn             | HeunDiscreteScheduler           |
| `dpmpp_2m`   | DPM-Solver++(2M) on the Karras grid         | DPMSolverMultistepScheduler     |
| `flow_euler`, `flow_heun` | probability-flow ODE in t      | (not available)                 |

`table(process)` is that lookup; `resolve` checks a sampler's name, step count and options
against it (a fixed grid of `timesteps` / `sigmas` only on a discrete process, Karras-grid
ranges only on a continuous one); `guidance` checks the guidance flags against the model and
`guide` wraps a denoiser with classifier-free and classifier guidance. Every check raises a
ValueError that names the flag, before anything is compiled or while tracing.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import jax.numpy as jnp

from gen.diffusion import samplers, schedulers
from gen.diffusion.guidance import NoisyClassifier, classifier_guided, guided
from gen.diffusion.process import Process

# Options of one kind of process that the other refuses, and why.
ELSEWHERE = {
    "level_min": "level_min applies to continuous processes; a discrete process's grid is its "
                 "timestep spacing, or a fixed list of timesteps or sigmas",
    "timesteps": "a fixed grid applies to a discrete process (diffusion.schedule='discrete', "
                 "as diffusers models import)",
}
ELSEWHERE["level_max"] = ELSEWHERE["level_min"].replace("level_min", "level_max", 1)
ELSEWHERE["sigmas"] = ELSEWHERE["timesteps"]


def table(process: Process) -> types.ModuleType:
  """The samplers of `process`: a module with SAMPLERS, OPTIONS and WITH_EPS (whether its
  denoiser returns the pair (x0_hat, eps_hat))."""
  return schedulers if process.name == "discrete" else samplers


def concrete(v) -> bool:
  """A Python number (known while tracing), not a traced value."""
  return isinstance(v, (int, float))


def resolve(process: Process, sampler: str, steps, **options) -> tuple[Callable, object, dict]:
  """(sampler function, step count, its options) for `process`. Options left at None (or a
  concrete 0.0) are dropped; `timesteps` / `sigmas` fix the grid (a discrete process) and
  the step count with it."""
  tab = table(process)
  given = {k: v for k, v in options.items() if v is not None}
  fixed = {k: given.pop(k) for k in ("timesteps", "sigmas") if k in given}
  if fixed:
    if not hasattr(tab, "check_grid"):
      raise ValueError(f"--{' --'.join(fixed)}: {ELSEWHERE['timesteps']}; this model's "
                       f"process is '{process.name}', whose grid --steps sets")
    n = tab.check_grid(process, sampler, **fixed)
    if steps is not None and concrete(steps) and steps != n:
      raise ValueError(f"--steps={steps} disagrees with the fixed grid's {n} steps; leave "
                       "--steps out")
    steps = n
  if sampler not in tab.SAMPLERS:
    raise ValueError(f"unknown sampler '{sampler}'; valid: "
                     f"{', '.join(tab.SAMPLERS)}")
  if concrete(steps) and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
    raise ValueError(f"--steps must be a positive integer, got {steps}")
  opts = dict(fixed)
  for name, value in given.items():
    if name in tab.OPTIONS[sampler]:
      opts[name] = value
    elif not concrete(value) or value != 0.0:
      if name in ELSEWHERE and not any(name in o for o in tab.OPTIONS.values()):
        raise ValueError(ELSEWHERE[name])
      takes = [s for s, o in tab.OPTIONS.items() if name in o]
      raise ValueError(f"--{name} applies to the {', '.join(takes)} sampler(s), "
                       f"not '{sampler}'")
  return tab.SAMPLERS[sampler], steps, opts


def labels(num: int, label: int, num_classes: int):
  """`label` for every sample, or with label = -1 the classes in turn."""
  if label >= 0:
    return jnp.full((num,), label, jnp.int32)
  return jnp.arange(num, dtype=jnp.int32) % max(num_classes, 1)


def check_fit(cfg, clf: NoisyClassifier, name: str = "the classifier"):
  """Errors unless `clf` can guide the model of `cfg` (its `process`, `shape` and
  `num_classes`): same process, images and classes."""
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


def guidance(cfg, guidance_scale, label, classifier, classifier_scale):
  """(guidance scale, classifier or None, classifier scale, classes of the labels) after
  checking the flags against the model of `cfg` (`num_classes`, `label_dropout`, the
  default `guidance`; `process` and `shape` for a classifier)."""
  nc = cfg.num_classes
  if classifier is None:
    if classifier_scale is not None:
      raise ValueError(f"--classifier_scale={classifier_scale} needs --classifier=WORKDIR, the "
                       "run of a noise-conditional classifier (model.kind='classifier')")
  elif not isinstance(classifier, NoisyClassifier):
    raise ValueError(f"classifier={classifier!r}: the sampler takes a NoisyClassifier; the "
                     "pipeline's sample_options loads one from a workdir (load_classifier)")
  else:
    check_fit(cfg, classifier)
  if not nc and (guidance_scale is not None or (label != -1 and classifier is None)):
    raise ValueError(f"--guidance and --label need a class-conditional model "
                     f"(model.conditional=True), or for --label a classifier "
                     f"(--classifier=WORKDIR); got guidance={guidance_scale}, label={label}")
  classes = nc or (classifier.num_classes if classifier is not None else 0)
  if classes and not -1 <= label < classes:
    raise ValueError(f"--label must be in [0, {classes}) or -1 (all classes), got {label}")
  if guidance_scale is not None and not cfg.label_dropout:
    raise ValueError("--guidance needs a model trained with label dropout "
                     "(model.label_dropout > 0): it has no unconditional mode")
  w = cfg.guidance if guidance_scale is None else guidance_scale
  scale = 1.0 if classifier_scale is None else classifier_scale
  return w, classifier, scale, classes


def guide(denoise: Callable, process: Process, num_classes: int, w, classifier, scale):
  """`denoise` with classifier-free guidance of scale w (a conditional model; skipped at a
  concrete 1) and classifier guidance of `scale` (skipped without a classifier or at a
  concrete 0). Both scales may be traced."""
  if num_classes and not (concrete(w) and w == 1.0):
    denoise = guided(denoise, num_classes, w)
  if classifier is not None and not (concrete(scale) and scale == 0.0):
    denoise = classifier_guided(denoise, process.alpha_sigma, classifier.log_prob, scale)
  return denoise
