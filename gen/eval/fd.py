"""Sample quality of a trained image model: Fréchet distance and precision/recall.

`gen eval --workdir=DIR --metric=fd` draws `--num_samples` images from the run's newest
checkpoint (the family's `sample`, compiled once at a fixed batch and looped; sampler
flags pass through as in `gen sample`; conditional models draw their classes as their
sampler does by default: uniformly at random, or cycling through the classes) and
compares their features with the real images of the reference split:

- `fd`: features of a classifier trained by gen on the dataset (any run whose pipeline has
  a `features` map; gen's own are the `classifier` family's, configs shipped in the package
  as `gen.classifier.configs.<dataset>`), named "FD (gen classifier features, <dataset>)":
  numbers are comparable only with the same classifier, never with published FIDs. The
  classifier is `--fd_classifier=WORKDIR`, else the run in `$GEN_CACHE_DIR/classifiers/
  <dataset>` (default `~/.cache/gen`); nothing is trained here: without one, the error
  gives the `gen train` command that makes it.
- `fid`: Inception pool3 features (`gen.eval.inception`; `--inception=WEIGHTS`, the
  standard FID weights, given by path), comparable with published FIDs when the reference
  split and sample count match theirs (CIFAR-10: 50,000 samples against the train split).

Real and generated images take the same path into the feature network: model space ->
`postprocess` -> 8-bit (what a saved PNG holds) -> features. Real images first go through
the run's `data.preprocess` (binarized data is binarized, with a fixed seed), so a model
is compared with the data it was trained on. The reference statistics (mean, covariance,
and the features for precision/recall) are cached next to the feature network, keyed by
dataset, split and preprocessing. Precision/recall use equal numbers of real and
generated images (the larger set subsampled). Sampling speed is reported after the first
batch, which includes compilation. `--real=SPLIT` scores real images of that split instead
of samples: the floor a model can reach at that sample count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable

import jax
import numpy as np

from gen.core import runs
from gen.core import xla
from gen.core.data import postprocess, preprocess, sources
from gen.eval import frechet

CACHE_ENV = "GEN_CACHE_DIR"
# Where gen's feature classifier configs live (a package module per dataset).
CONFIG_MODULE = "gen.classifier.configs.{slug}"
PR_K = 3  # Neighbourhood size of precision/recall (Kynkäänniemi et al. 2019).


def cache_root() -> str:
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gen")


def _slug(dataset: str) -> str:
  return dataset.replace("tfds:", "").replace("/", "_")


def _say(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _bar(total: int, desc: str):
  from tqdm.auto import tqdm
  return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr)


# ------------------------------------------------------------------------- features


@dataclasses.dataclass
class Features:
  """A feature network: a name for the metric, where its statistics are cached, the
  function (uint8 images [B, H, W, C] -> float [B, D]) and facts about it for the record."""

  metric: str
  folder: str
  fn: Callable[[np.ndarray], np.ndarray]
  info: dict
  batch: int = 500

  def __call__(self, images: np.ndarray, desc: str = "features") -> np.ndarray:
    out, bar = [], _bar(len(images), desc)
    for i in range(0, len(images), self.batch):
      chunk = images[i:i + self.batch]
      pad = self.batch - len(chunk)  # One compiled shape.
      x = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(jax.device_get(self.fn(x)), np.float32)[:len(chunk)])
      bar.update(len(chunk))
    bar.close()
    return np.concatenate(out)


def _last_eval(workdir: str) -> dict:
  last = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if rec.get("split") == "eval":
        last = rec
  return last


def _trained_step(workdir: str) -> int:
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


def default_classifier_dir(dataset: str) -> str:
  return os.path.join(cache_root(), "classifiers", _slug(dataset))


def train_command(dataset: str, workdir: str, data_dir: str = "") -> str:
  """The command that trains gen's feature classifier for `dataset` into `workdir`."""
  data = f" --config.data.dir={data_dir}" if data_dir else ""
  return (f"gen train --config={CONFIG_MODULE.format(slug=_slug(dataset))} "
          f"--workdir={workdir}{data}")


def find_classifier(dataset: str, data_dir: str = "", workdir: str = "") -> str:
  """The feature classifier's workdir: `workdir` if given, else the cache's; it must hold a
  trained run (a one-line error with the command that trains one otherwise)."""
  given = bool(workdir)
  workdir = workdir or default_classifier_dir(dataset)
  if not _trained_step(workdir):
    where = (f"--fd_classifier={workdir} holds no checkpoint" if given else
             f"no feature classifier for {dataset} in {workdir} (pass --fd_classifier=WORKDIR)")
    raise ValueError(f"{where}: train one with `{train_command(dataset, workdir, data_dir)}`")
  return workdir


def classifier_features(dataset: str, data_dir: str = "", workdir: str = "",
                        batch: int = 500) -> Features:
  """The features of the classifier run for `dataset` (see `find_classifier`)."""
  workdir = find_classifier(dataset, data_dir, workdir)
  config, spec, pipeline, state, step = runs.load_workdir(workdir)
  if pipeline.features is None:
    raise ValueError(f"{workdir} is a {config.family} run, which has no feature map: "
                     "--fd_classifier needs a run whose pipeline defines `features`")
  if config.data.name != dataset:
    raise ValueError(f"the classifier in {workdir} was trained on {config.data.name}, not "
                     f"{dataset}")
  params = pipeline.sample_params(state)
  fn = xla.jit(pipeline.features, pipeline.compiler_options)
  mode = spec.preprocess

  def features(images):
    return fn(params, preprocess(images, mode, None))

  last = _last_eval(workdir)
  info = {"classifier": os.path.abspath(workdir), "classifier_step": step,
          "classifier_test_accuracy": last.get("accuracy")}
  return Features(f"FD (gen classifier features, {dataset})", workdir, features, info, batch)


def inception_features(weights: str, dataset: str, batch: int = 100) -> Features:
  """Inception pool3 features from the FID weights file at `weights` (`.pth` or `.npz`)."""
  from gen.eval import inception

  if not weights:
    raise ValueError("--metric=fid needs --inception=PATH, the FID Inception weights "
                     "(pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or an .npz of it)")
  with open(weights, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:12]
  variables = inception.load(weights)
  folder = os.path.join(cache_root(), "inception", f"{_slug(dataset)}-{digest}")
  return Features("FID (Inception pool3)", folder,
                  lambda x: inception.features(variables, x), {"inception": weights}, batch)


# --------------------------------------------------------------------------- images


def to_uint8(x) -> np.ndarray:
  """[0, 1] floats -> uint8, as a PNG would store them."""
  return np.round(np.clip(np.asarray(x, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def real_images(dataset: str, split: str, data_dir: str, mode: str) -> np.ndarray:
  """A split's images through `mode` and back (binarized once with a fixed seed): uint8."""
  src = sources.load(dataset, split, data_dir)
  images = (src.images if hasattr(src, "images")
            else np.stack([src[i]["image"] for i in range(len(src))]))
  rng = np.random.default_rng(0)
  return to_uint8(postprocess(preprocess(images, mode, rng), mode))


def reference(features: Features, dataset: str, split: str, data_dir: str, mode: str) -> dict:
  """Mean, covariance and features of the real split (cached in `features.folder`)."""
  path = os.path.join(features.folder, f"stats_{split}_{mode}.npz")
  if os.path.isfile(path):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  feats = features(real_images(dataset, split, data_dir, mode), f"{dataset} {split} features")
  mu, sigma = frechet.gaussian_stats(feats)
  stats = {"mu": mu, "sigma": sigma, "features": feats}
  os.makedirs(features.folder, exist_ok=True)
  np.savez(path + ".tmp.npz", **stats)
  os.replace(path + ".tmp.npz", path)
  return stats


def draw_samples(pipeline, state, num: int, batch: int, seed: int, mode: str,
                 sampler_args: dict) -> tuple[np.ndarray, dict]:
  """`num` samples as uint8, from `sample` compiled once at `batch`; and timings."""
  fn = runs.compile_sampler(pipeline, batch, sampler_args)
  params = pipeline.sample_params(state)
  key = jax.random.key(seed)
  out, bar = [], _bar(num, "sampling")
  t0 = time.time()
  t_first = None
  for i in range(math.ceil(num / batch)):
    x = jax.device_get(fn(params, jax.random.fold_in(key, i)))
    if x.ndim == 5:
      raise ValueError("the sampler returned a laid-out grid (e.g. --interpolate): FD needs "
                       "independent samples")
    out.append(to_uint8(postprocess(x, mode)))
    t_first = t_first or time.time()
    bar.update(min(batch, num - i * batch))
  bar.close()
  seconds = time.time() - t0
  n_after = num - min(batch, num)  # The first batch includes compilation.
  rate = n_after / (time.time() - t_first) if n_after else num / seconds
  return np.concatenate(out)[:num], {"sampling_seconds": round(seconds, 1),
                                     "samples_per_second": round(rate, 1)}


# ------------------------------------------------------------------------------ score


def score(fake_feats: np.ndarray, ref: dict, seed: int = 0) -> dict:
  """FD against the reference statistics; precision/recall on equal numbers of real and
  generated features (the larger set subsampled with `seed`)."""
  mu, sigma = frechet.gaussian_stats(fake_feats)
  fd = frechet.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
  real, fake = ref["features"], fake_feats
  n = min(len(real), len(fake))
  rng = np.random.default_rng(seed)
  real = real[rng.choice(len(real), n, replace=False)] if len(real) > n else real
  fake = fake[rng.choice(len(fake), n, replace=False)] if len(fake) > n else fake
  precision, recall = frechet.precision_recall(real, fake, PR_K)
  return {"value": fd, "precision": precision, "recall": recall, "pr_num": n}


def warn_if_few(num: int) -> str | None:
  if num >= frechet.MIN_SAMPLES:
    return None
  return (f"warning: only {num:,} samples; Fréchet distances are biased upward below "
          f"{frechet.MIN_SAMPLES:,} and comparable only at equal sample counts")


def evaluate(workdir: str = "", *, metric: str = "fd", num_samples: int = 10_000,
             batch: int = 500, seed: int = 0, step: int | None = None, ref_split: str = "train",
             real_split: str = "", dataset: str = "", classifier: str = "", inception: str = "",
             overrides=(), sampler_args: dict | None = None, check_args=None) -> dict:
  """FD or FID of a workdir's samples (or of a real split, `real_split`); see the module.

  `check_args(pipeline, sampler_args, family)` may reject sampler arguments before anything
  is computed.
  """
  t0 = time.time()
  sampler_args = dict(sampler_args or {})
  given_args = dict(sampler_args)  # For the record: the flags, not what they load.
  run = None
  if workdir:
    config, spec, pipeline, state, step = runs.load_workdir(workdir, overrides, step)
    if spec.kind != "image":
      raise ValueError(f"--metric={metric} is for image models; {workdir} holds a "
                       f"{config.family} model of tokens")
    dataset, data_dir, mode = config.data.name, config.data.dir, spec.preprocess
    if not real_split:
      if pipeline.sample is None:
        raise ValueError(f"the {config.family} family draws no samples")
      if pipeline.sample_options is not None:  # E.g. a classifier for guidance, loaded here.
        _, sampler_args = pipeline.sample_options(batch, sampler_args)
      if check_args is not None:
        check_args(pipeline, sampler_args, config.family)
    run = {"step": step, "family": config.family}
  elif real_split and dataset:
    data_dir, mode = "", "scale"
  else:
    raise ValueError("give --workdir=DIR (or --real=SPLIT with --data=NAME)")
  if metric == "fd":
    feats = classifier_features(dataset, data_dir, classifier, batch)
  elif metric == "fid":
    feats = inception_features(inception, dataset)
  else:
    raise ValueError(f"--metric must be fd or fid here, got '{metric}'")
  ref = reference(feats, dataset, ref_split, data_dir, mode)
  timing = {}
  if real_split:
    images = real_images(dataset, real_split, data_dir, mode)
    if len(images) > num_samples:
      images = images[np.random.default_rng(seed).choice(len(images), num_samples, False)]
    what = f"real {real_split} images"
  else:
    images, timing = draw_samples(pipeline, state, num_samples, batch, seed, mode,
                                  sampler_args)
    what = "samples"
  result = score(feats(images, f"{what} features"), ref, seed)
  num = len(images)
  out = {"metric": feats.metric, metric: result["value"], "num_samples": num,
         "scored": what, "precision": result["precision"], "recall": result["recall"],
         "pr_k": PR_K, "pr_num": result["pr_num"], "data": dataset, "preprocess": mode,
         "reference": f"{dataset} {ref_split}, {len(ref['features']):,} images",
         **(run or {}), "sampler_args": given_args, **timing, **feats.info,
         "seconds": round(time.time() - t0, 1)}
  warning = warn_if_few(num)
  if warning:
    out["warning"] = warning
  return out


def summary(r: dict) -> str:
  """One line: the metric, its sample count, precision/recall and sampling speed."""
  key = "fd" if "fd" in r else "fid"
  line = (f"{r['metric']} = {r[key]:.3f} from {r['num_samples']:,} {r['scored']} vs "
          f"{r['reference']}; precision {r['precision']:.3f}, recall {r['recall']:.3f}")
  if "sampling_seconds" in r:
    line += (f"; sampling {r['sampling_seconds']:.1f} s ({r['samples_per_second']:.1f} "
             "samples/s)")
  return line
