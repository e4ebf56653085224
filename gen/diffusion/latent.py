"""Latent diffusion: a trained autoencoder's latent space as the canvas (Rombach et al. 2022).

A denoiser config with `latent.autoencoder = DIR` (a diffusion run with
`model.kind = "autoencoder"`) learns on the latents of its images instead of the pixels:

- `LatentData` opens the images as usual, loads the autoencoder's checkpoint (the newest, or
  `latent.autoencoder_step`), encodes the first `latent.scale_images` training images
  (posterior means, in order) and measures the normalization: `latent.normalize = "scalar"`
  divides by the standard deviation over all latent elements (LDM's scale factor), "channel"
  subtracts each channel's mean and divides by its standard deviation. What it used, the
  autoencoder's path, step, latent shape, scale and shift, is the data spec's
  `extra["latent"]`, saved in the run's `data_spec.json`. A resumed run re-measures and
  refuses an autoencoder that is not the one recorded (another folder, a missing step, a
  latent of another shape, a scale that moved).
- `codec(record)` loads that autoencoder again (eagerly, outside any traced function) as a
  `Codec`: `encode(images, rng)` gives normalized latents (the posterior mean, or a sample with
  `latent.sample_posterior`), `decode(latents)` images. The denoiser's train and eval steps
  encode each batch inside the compiled step; its sampler draws latents and decodes them in
  the same compiled program, so `gen sample` and `gen eval --metric=fd` see images.

The autoencoder's parameters are constants of those programs, never trained here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gen.core import runs
from gen.core.checkpoint import Checkpointer
from gen.core.config import ConfigError
from gen.core.data import ImageData
from gen.core.family import DataSpec
from gen.diffusion import autoencoder as ae_lib

NORMALIZE = ("scalar", "channel")
SCALE_RTOL = 1e-3  # A resumed run's re-measured scale and shift may differ by this much.


def enabled(config) -> bool:
  """Whether `config` trains in an autoencoder's latent space (`latent.autoencoder` set)."""
  return bool(config.latent.autoencoder)


def record_of(spec: DataSpec) -> dict | None:
  return spec.extra.get("latent") if spec.extra else None


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
  """A frozen autoencoder between images and normalized latents."""

  net: ae_lib.Autoencoder
  params: Any
  scale: tuple[float, ...]  # Per latent channel (all equal for "scalar").
  shift: tuple[float, ...]
  shape: tuple[int, ...]  # The latent shape (h, w, c).
  sample_posterior: bool = False

  def encode(self, images, rng=None):
    mean, logvar = self.net.apply({"params": self.params}, images, method="encode")
    z = mean
    if self.sample_posterior and rng is not None:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    return (z - jnp.asarray(self.shift)) * jnp.asarray(self.scale)

  def decode(self, latents):
    z = latents / jnp.asarray(self.scale) + jnp.asarray(self.shift)
    return self.net.apply({"params": self.params}, z, method="decode")


def _load(path: str, step: int | None, image_shape):
  """(latent shape, net, EMA params, step) of the autoencoder run in `path`; ConfigErrors
  name it."""
  if not os.path.isfile(os.path.join(path, runs.CONFIG_FILE)):
    raise ConfigError(f"latent.autoencoder={path}: no training run there "
                      f"({runs.CONFIG_FILE} not found)")
  config = runs.load_config(path)
  if config.get("family") != "diffusion" or config.model.get("kind") != "autoencoder":
    raise ConfigError(f"latent.autoencoder={path} holds a {config.get('family')} "
                      f"{config.model.get('kind', 'model')}, not an autoencoder (diffusion with "
                      "model.kind='autoencoder')")
  steps = []
  if os.path.isdir(os.path.join(path, "checkpoints")):
    ckpt = Checkpointer(path, async_save=False, create=False)
    try:
      steps = ckpt.all_steps()
    finally:
      ckpt.close()
  if not steps:
    raise ConfigError(f"latent.autoencoder={path} has no checkpoint: train it first")
  if step is not None and step not in steps:
    raise ConfigError(f"latent.autoencoder={path} has no checkpoint of step {step} (it has "
                      f"{', '.join(map(str, steps))})")
  step = steps[-1] if step is None else step
  folder = os.path.join(path, "checkpoints", str(step))
  when = os.path.getmtime(folder) if os.path.exists(folder) else 0.0
  spec, params = _restore(os.path.abspath(path), step, when)
  if tuple(spec.shape) != tuple(image_shape):
    raise ConfigError(f"latent.autoencoder={path} encodes {tuple(spec.shape)} images, this "
                      f"data has {tuple(image_shape)}")
  net, _ = ae_lib.parts(config, spec)
  return ae_lib.latent_shape(config.model.autoencoder, spec.shape), net, params, int(step)


@functools.lru_cache(maxsize=4)
def _restore(path: str, step: int, mtime: float):
  """(data spec, EMA params) of the autoencoder's checkpoint `step`, restored once: opening
  the data and building the pipeline of a run both need it (`mtime` tells a rewritten
  checkpoint from the one in the cache)."""
  del mtime
  _, spec, pipeline, state, _ = runs.load_workdir(path, step=step)
  return spec, jax.device_get(pipeline.sample_params(state))["ae"]


def measure(net, params, images, normalize: str) -> tuple[list[float], list[float]]:
  """(scale, shift) per channel that make the posterior means of `images` unit variance."""
  mean, _ = jax.jit(lambda p, x: net.apply({"params": p}, x, method="encode"))(params, images)
  z = np.asarray(mean, np.float64).reshape(-1, mean.shape[-1])
  c = z.shape[-1]
  if normalize == "scalar":
    return [float(1.0 / z.std())] * c, [0.0] * c
  return [float(v) for v in 1.0 / z.std(0)], [float(v) for v in z.mean(0)]


def _differs(a, b) -> bool:
  return not np.allclose(a, b, rtol=SCALE_RTOL, atol=SCALE_RTOL * 1e-2)


class LatentData(ImageData):
  """Labelled images whose spec carries the autoencoder record (`extra["latent"]`)."""

  def __init__(self, config, process_index=None, process_count=None, reuse=()):
    super().__init__(config, process_index, process_count, reuse)
    lat = config.latent
    if lat.normalize not in NORMALIZE:
      raise ConfigError(f"latent.normalize must be one of {', '.join(NORMALIZE)}, got "
                        f"'{lat.normalize}'")
    n = int(lat.scale_images)
    if n < 2:
      raise ConfigError(f"latent.scale_images must be >= 2, got {n}")
    path = os.path.abspath(lat.autoencoder)
    before = self._recorded()
    step = lat.autoencoder_step or None
    if before is not None:
      if before["autoencoder"] != path:
        raise ConfigError(f"this run was trained on the latents of {before['autoencoder']}; "
                          f"latent.autoencoder={lat.autoencoder} is another folder")
      step = before["step"]
    shape, net, params, step = _load(path, step, self.shape)
    shape = list(shape)
    first = [self.train_source[i] for i in range(min(n, len(self.train_source)))]
    images = self.prepare_eval({"image": np.stack([r["image"] for r in first]),
                                "label": np.stack([r["label"] for r in first])}, 0)["image"]
    scale, shift = measure(net, params, images, lat.normalize)
    record = {"autoencoder": path, "step": step, "shape": shape, "scale": scale,
              "shift": shift, "normalize": lat.normalize,
              "scale_images": len(first)}
    if before is not None:
      problems = []
      if list(before["shape"]) != shape:
        problems.append(f"latent shape {tuple(before['shape'])} -> {tuple(shape)}")
      for k in ("scale", "shift"):
        if _differs(before[k], record[k]):
          problems.append(f"{k} {_fmt(before[k])} -> {_fmt(record[k])}")
      for k in ("normalize", "scale_images"):
        if before.get(k) != record[k]:
          problems.append(f"latent.{k} {before.get(k)!r} -> {record[k]!r}")
      if problems:
        raise ConfigError(f"the autoencoder {path} (step {step}) is not the one this run was "
                          f"trained with: {'; '.join(problems)}")
      record = dict(before)
    self.spec = dataclasses.replace(self.spec, extra={**self.spec.extra, "latent": record})

  def _recorded(self) -> dict | None:
    """The record of this run's own earlier start (its workdir's data spec), if any."""
    if not self.reuse:
      return None
    spec = DataSpec.load(self.reuse[0])
    return None if spec is None else record_of(spec)


def _fmt(v) -> str:
  return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"


def make_data(config, process_index=None, process_count=None, reuse=()):
  """The family's data: `LatentData` for a latent run, else the core's labelled images."""
  cls = LatentData if enabled(config) else ImageData
  return cls(config, process_index=process_index, process_count=process_count, reuse=reuse)


def codec(config, spec: DataSpec) -> Codec | None:
  """The `Codec` a latent run's `spec` records (None for a pixel run). Reads files: call it
  eagerly, before anything is traced."""
  record = record_of(spec)
  if record is None:
    if enabled(config):
      raise ConfigError("latent.autoencoder is set but the data spec has no latent record: "
                        "open the data with gen.diffusion.make_data")
    return None
  if config.diffusion.clip_denoised:
    raise ConfigError("diffusion.clip_denoised clips to the pixel range [-1, 1]; a latent run "
                      "(latent.autoencoder) must leave it False")
  shape, net, params, step = _load(record["autoencoder"], record["step"], spec.shape)
  if list(shape) != list(record["shape"]):
    raise ConfigError(f"the autoencoder {record['autoencoder']} (step {step}) makes "
                      f"{shape} latents, this run was trained on {tuple(record['shape'])}")
  sample = bool(config.latent.sample_posterior)
  return Codec(net, params, tuple(record["scale"]), tuple(record["shift"]), tuple(shape),
               sample)


def latent_shape(spec: DataSpec) -> tuple[int, ...]:
  """The shape the denoiser works in: the recorded latent shape, else the image shape."""
  record = record_of(spec)
  return tuple(record["shape"]) if record is not None else tuple(spec.shape)
