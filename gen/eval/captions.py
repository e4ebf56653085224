"""Does a text-to-image run draw what its captions say? `gen eval --metric=captions`.

  gen eval --workdir=RUN --metric=captions --judge=JUDGE [--guidance=0,1,2,4]
           [--num_samples=N] [--batch_size=B] [--seed=0] [--out=FILE] [sampler flags]
  gen eval --metric=captions --judge=JUDGE --real=test,test_held_out [--num_samples=N]
           [--autoencoder=AE_RUN]

On the captioned scenes of `gen.core.data.captions` (the judge's dataset, e.g. `captions:mnist`),
for N captions of `test` (seen compositions) and N of `test_held_out` (each names at least one
colour-identity pair that training never shows), at each guidance scale: the run draws one image
per caption, the judge (a classifier run on the same dataset whose pipeline has `predict`, e.g.
`gen.classifier.configs.captions_mnist`) reads its 12 targets back, and they are compared with
`targets_of(parse(caption))`. Reported per split and guidance: the share of `faithful` images
(all 12 targets right), of images right in each attribute (`identity`, `colour`, `size`,
`position`), the share of objects drawn as their caption's identity (`object_identity`, the
`objects` column, with the `identity_confusion` counts: captioned identity by identity read),
and the Fréchet distance (with precision/recall) between the judge's features of
the images and those of the split's real scenes (all of them; cached in the judge's workdir as
`gen eval --metric=fd` caches its reference). With `--real=SPLITS` the judge reads the real
scenes of those captions instead: the floor a perfect model would reach (no run is needed; its
FD is the small-sample floor, 0 when N is the whole split). With `--autoencoder=AE_RUN` as well
(a run whose pipeline has `reconstruct`, e.g. `model.kind = "autoencoder"`), the judge reads the
real scenes after a round trip through that run's latents: the most a latent run on them could
score.

The run must take captions as prompts: its pipeline's `sample_options(num, flags)` accepts
`flags["prompt"]` (one caption per image) and `flags["guidance"]` (a float; left out without
`--guidance`, the run's default), and returns `(num, kwargs)` for `sample(params, rng, num,
**kwargs)`, images in the data space. The sampler is compiled once per batch size: arrays among
the kwargs (encoded captions, guidance) are traced, so every batch and guidance scale reuses
the program. Each split draws the same noise at every guidance scale (a key per split and batch
from `--seed`). Sampling speed excludes the first batch (compilation).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gen.core import runs, xla
from gen.core.data import captions, postprocess, preprocess, sources
from gen.eval import fd

SPLITS = ("test", "test_held_out")
COLUMNS = ("faithful", "identity", "colour", "size", "position")
JUDGE_CONFIG = "gen.classifier.configs.captions_mnist"
_PLAIN = (bool, int, float, str, type(None))  # Sampler arguments fixed in the program.


@dataclasses.dataclass
class Judge:
  """A classifier of captioned scenes: `predict_fn(uint8 [B, H, W, C]) -> int32[B, 12]` at a
  fixed batch `batch`, its features (`fd.Features`) and where and on what it was trained."""

  workdir: str
  dataset: str
  data_dir: str
  shape: tuple[int, ...]
  predict_fn: Callable[[np.ndarray], np.ndarray]
  features: fd.Features
  batch: int = 500
  info: dict = dataclasses.field(default_factory=dict)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """int32[N, 12]: the targets the judge reads in uint8 images [N, H, W, C]."""
    out = []
    for i in range(0, len(images), self.batch):
      chunk = images[i:i + self.batch]
      pad = np.zeros((self.batch - len(chunk),) + chunk.shape[1:], chunk.dtype)  # One shape.
      out.append(np.asarray(self.predict_fn(np.concatenate([chunk, pad])))[:len(chunk)])
    return np.concatenate(out).astype(np.int32)


@dataclasses.dataclass
class Run:
  """What the eval needs of a text-to-image run: its pipeline and params, and what it draws."""

  workdir: str
  family: str
  step: int
  dataset: str
  shape: tuple[int, ...]
  preprocess: str
  pipeline: Any
  params: Any


@dataclasses.dataclass
class RoundTrip:
  """An autoencoder run's round trip: `fn(images in the data space) -> images`, at a fixed
  batch `batch`."""

  workdir: str
  step: int
  shape: tuple[int, ...]
  preprocess: str
  fn: Callable[[Any], Any]
  batch: int = 500

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] through the latents and back, as uint8."""
    x = preprocess(images, self.preprocess, None)
    out = []
    for i in range(0, len(x), self.batch):
      chunk = x[i:i + self.batch]
      pad = np.zeros((self.batch - len(chunk),) + chunk.shape[1:], chunk.dtype)  # One shape.
      out.append(np.asarray(self.fn(np.concatenate([chunk, pad])))[:len(chunk)])
    return fd.to_uint8(postprocess(np.concatenate(out), self.preprocess))


def load_autoencoder(workdir: str, batch: int = 500) -> RoundTrip:
  """The round trip of the autoencoder run in `workdir` (one-line errors when there is none)."""
  if not fd._trained_step(workdir):
    raise ValueError(f"--autoencoder={workdir} holds no checkpoint: train one, e.g. `gen train "
                     "--config=configs/diffusion/autoencoder_captions_mnist.py`")
  config, spec, pipeline, state, step = runs.load_workdir(workdir)
  if pipeline.reconstruct is None:
    raise ValueError(f"--autoencoder={workdir} is a {config.family} run on {config.data.name} "
                     "that has no round trip (its pipeline has no `reconstruct`): give an "
                     "autoencoder run")
  params = pipeline.sample_params(state)
  fn = xla.jit(pipeline.reconstruct, pipeline.compiler_options)
  return RoundTrip(workdir, step, tuple(spec.shape), spec.preprocess, lambda x: fn(params, x),
                   batch)


def load_judge(workdir: str, batch: int = 500) -> Judge:
  """The judge trained in `workdir` (one-line errors when there is none, or it is no judge)."""
  if not fd._trained_step(workdir):
    raise ValueError(f"--judge={workdir} holds no checkpoint: train a judge with `gen train "
                     f"--config={JUDGE_CONFIG} --workdir={workdir} --config.data.dir=DIR`")
  config, spec, pipeline, state, step = runs.load_workdir(workdir)
  if (pipeline.predict is None or pipeline.features is None or "targets" not in spec.fields
      or not config.data.name.startswith(captions.PREFIX)):
    raise ValueError(f"--judge={workdir} is a {config.family} run on {config.data.name}, not a "
                     f"judge of captioned scenes (e.g. `gen train --config={JUDGE_CONFIG}`)")
  params = pipeline.sample_params(state)
  mode = spec.preprocess
  predict = xla.jit(pipeline.predict, pipeline.compiler_options)
  embed = xla.jit(pipeline.features, pipeline.compiler_options)
  info = {"judge": os.path.abspath(workdir), "judge_step": step,
          "judge_test": {k: v for k, v in fd._last_eval(workdir).items() if k in COLUMNS}}
  features = fd.Features(f"FD (judge features, {config.data.name})", workdir,
                         lambda x: embed(params, preprocess(x, mode, None)), info, batch)
  return Judge(workdir, config.data.name, config.data.dir, tuple(spec.shape),
               lambda x: predict(params, preprocess(x, mode, None)), features, batch, info)


def load_run(workdir: str, overrides=(), step: int | None = None) -> Run:
  """The text-to-image run in `workdir` (its newest checkpoint, or `step`)."""
  config, spec, pipeline, state, step = runs.load_workdir(workdir, overrides, step)
  return Run(workdir, config.family, step, config.data.name, tuple(spec.shape), spec.preprocess,
             pipeline, pipeline.sample_params(state))


def check(judge: Judge, run: Run) -> None:
  """One-line errors for a run the judge cannot score, or one that draws no images."""
  if run.dataset != judge.dataset:
    raise ValueError(f"the run in {run.workdir} was trained on {run.dataset}, the judge in "
                     f"{judge.workdir} on {judge.dataset}: train a judge on {run.dataset}")
  if run.shape != judge.shape:
    raise ValueError(f"the run in {run.workdir} draws images of shape {run.shape}, the judge in "
                     f"{judge.workdir} reads {judge.shape}")
  if run.pipeline.sample is None or run.pipeline.sample_options is None:
    raise ValueError(f"the {run.family} run in {run.workdir} cannot take prompts: its pipeline "
                     "has no sample / sample_options")


class Sampler:
  """The images `run` draws for `batch` captions at a time: `options(captions, guidance)` asks
  the run's `sample_options` (one-line errors when it cannot take them), `draw(options, rng)`
  runs `sample`, compiled once per set of fixed (Python) sampler arguments, and returns uint8
  images."""

  def __init__(self, run: Run, sampler_args: dict, check_args=None):
    self.run, self.sampler_args, self.check_args = run, sampler_args, check_args
    self.compiled = {}

  def options(self, prompts: Sequence[str], guidance) -> tuple[int, dict]:
    run = self.run
    flags = {**self.sampler_args, "prompt": list(prompts)}
    if guidance is not None:
      flags["guidance"] = float(guidance)
    try:
      num, kwargs = run.pipeline.sample_options(len(prompts), flags)
      if self.check_args is not None:
        self.check_args(run.pipeline, kwargs, run.family)
    except Exception as e:  # Whatever it is, these captions cannot be drawn.
      raise ValueError(f"the {run.family} run in {run.workdir} cannot take prompts: "
                       f"{type(e).__name__}: {e}") from e
    if num != len(prompts):
      raise ValueError(f"the {run.family} run in {run.workdir} cannot take prompts: asked for "
                       f"{len(prompts)} images, one per caption, its sample_options gave {num}")
    return num, kwargs

  def draw(self, options: tuple[int, dict], rng) -> np.ndarray:
    run, (num, kwargs) = self.run, options
    static = {k: v for k, v in kwargs.items() if isinstance(v, _PLAIN)}
    traced = {k: v for k, v in kwargs.items() if k not in static}
    key = (num, repr(sorted(static.items())))
    if key not in self.compiled:
      self.compiled[key] = xla.jit(lambda p, r, t: run.pipeline.sample(p, r, num, **static, **t),
                                   run.pipeline.compiler_options)
    x = jax.device_get(self.compiled[key](run.params, rng, traced))
    if tuple(x.shape) != (num,) + run.shape:
      raise ValueError(f"the {run.family} sampler gave an array of shape {tuple(x.shape)}, not "
                       f"{num} images of shape {run.shape}")
    return fd.to_uint8(postprocess(x, run.preprocess))


def draw_images(sampler: Sampler, prompts: Sequence[str], batch: int, guidance, key, desc: str
                ) -> tuple[np.ndarray, float]:
  """One image per caption, `batch` at a time (the last batch padded), and images per second
  after the first batch (which compiles)."""
  out, bar = [], None
  for b in range(math.ceil(len(prompts) / batch)):
    chunk = list(prompts[b * batch:(b + 1) * batch])
    options = sampler.options(chunk + [chunk[-1]] * (batch - len(chunk)), guidance)
    bar = bar or fd._bar(len(prompts), desc)
    out.append(sampler.draw(options, jax.random.fold_in(key, b))[:len(chunk)])
    if b == 0:
      t_first, n_first = time.time(), len(chunk)
    bar.update(len(chunk))
  bar.close()
  after = len(prompts) - n_first
  return np.concatenate(out), after / (time.time() - t_first) if after else 0.0


def score(judge: Judge, images: np.ndarray, targets: np.ndarray, ref: dict, seed: int,
          desc: str, num_identities: int) -> dict:
  """The judge's shares of right images, the share of objects drawn as their caption's
  identity with the confusion of identities, and the FD of `images` against `ref`."""
  predicted = judge.predict(images)
  right = captions.scores(predicted, targets)
  confusion = captions.identity_confusion(predicted, targets, num_identities)
  fds = fd.score(judge.features(images, desc), ref, seed)
  return {**{k: float(np.mean(right[k])) for k in COLUMNS},
          "object_identity": float(np.trace(confusion[:, 1:]) / max(confusion.sum(), 1)),
          "identity_confusion": confusion.tolist(), "fd": fds["value"],
          "precision": fds["precision"], "recall": fds["recall"]}


def evaluate(judge: Judge, run: Run | None, *, guidance: Sequence[float | None] = (None,),
             num_samples: int = 1000, batch: int = 500, seed: int = 0,
             real_splits: Sequence[str] = (), sampler_args: dict | None = None,
             check_args=None, through: RoundTrip | None = None) -> dict:
  """The faithfulness table of `run` (or, with `real_splits`, of the real scenes, `through`
  an autoencoder's round trip if given); see the module. `check_args(pipeline, kwargs, family)`
  may reject sampler arguments."""
  t0 = time.time()
  splits = tuple(real_splits) or SPLITS
  bad = [s for s in splits if s not in SPLITS]
  if bad:
    raise ValueError(f"--real takes splits among {', '.join(SPLITS)}, not '{bad[0]}'")
  if through is not None:
    if not real_splits:
      raise ValueError("--autoencoder=RUN sends the real scenes through its latents: it goes "
                       "with --real=SPLITS")
    if through.shape != judge.shape:
      raise ValueError(f"the autoencoder in {through.workdir} takes images of shape "
                       f"{through.shape}, the judge in {judge.workdir} reads {judge.shape}")
  if not real_splits:
    if run is None:
      raise ValueError("give the run to score (--workdir=RUN), or --real=SPLITS")
    check(judge, run)
  mode = run.preprocess if run is not None and not real_splits else "scale"
  batch = min(batch, num_samples)
  sampler = None if real_splits else Sampler(run, dict(sampler_args or {}), check_args)
  rows, rates = [], []
  for k, split in enumerate(splits):
    src = sources.load(judge.dataset, split, judge.data_dir)
    n = min(num_samples, len(src))
    idx = np.sort(np.random.default_rng([seed, k]).choice(len(src), n, replace=False))
    prompts = [src.caption(int(i)) for i in idx]
    targets = np.stack([captions.targets_of(src.parse(c)) for c in prompts])
    ref = fd.reference(judge.features, judge.dataset, split, judge.data_dir, mode)
    if real_splits:
      real = np.stack([src[int(i)]["image"] for i in idx])
      images = fd.to_uint8(postprocess(preprocess(real, mode, None), mode))
      if through is not None:
        images = through(images)
      rows.append({"split": split, "guidance": None, "num": n,
                   **score(judge, images, targets, ref, seed, f"{split} real features",
                           src.num_classes)})
      continue
    key = jax.random.fold_in(jax.random.key(seed), k)
    for g in guidance:
      label = f"{split}, guidance {'default' if g is None else g}"
      images, rate = draw_images(sampler, prompts, batch, g, key, f"sampling {label}")
      rates += [rate] if rate else []
      rows.append({"split": split, "guidance": g, "num": n,
                   **score(judge, images, targets, ref, seed, f"features {label}",
                           src.num_classes)})
  out = {"metric": "captions", "data": judge.dataset, "num_samples": num_samples,
         "scored": "real images" if real_splits else "samples", "results": rows,
         "reference": "all real scenes of each split", **judge.info}
  if through is not None:
    out.update({"scored": "real images through an autoencoder",
                "autoencoder": os.path.abspath(through.workdir), "autoencoder_step": through.step})
  if not real_splits:
    out.update({"run": os.path.abspath(run.workdir), "family": run.family, "step": run.step,
                "sampler_args": dict(sampler_args or {}), "batch_size": batch,
                "samples_per_second": round(float(np.mean(rates)), 1) if rates else None})
  warning = fd.warn_if_few(min(r["num"] for r in rows))
  if warning:
    out["warning"] = warning
  out["seconds"] = round(time.time() - t0, 1)
  return out


def table(result: dict) -> str:
  """The results as a readable table, under a line that says what was scored."""
  what = (f"step {result['step']} of {result['run']}" if "run" in result
          else f"real scenes through step {result['autoencoder_step']} of "
          f"{result['autoencoder']}" if "autoencoder" in result else "real scenes")
  lines = [f"{result['data']}: {what}, judged by {result['judge']} (step "
           f"{result['judge_step']})",
           f"{'split':<14}{'guidance':>9}{'n':>7}" + "".join(f"{c:>10}" for c in COLUMNS)
           + f"{'objects':>10}{'FD':>10}"]
  for r in result["results"]:
    g = f"{r['guidance']:g}" if r["guidance"] is not None else "-" if "run" not in result else (
        "default")
    lines.append(f"{r['split']:<14}{g:>9}{r['num']:>7}"
                 + "".join(f"{r[c]:>10.4f}" for c in COLUMNS)
                 + f"{r['object_identity']:>10.4f}{max(r['fd'], 0.0):>10.3f}")
  return "\n".join(lines)
