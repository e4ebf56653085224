"""One grain pipeline for every source: shard, shuffle, batch, preprocess, prefetch.

`Data` is the part every family shares: a training stream and an eval split over
random-access sources (grain's `RandomAccessDataSource` protocol: `__len__` and
`__getitem__` returning a dict of arrays), and the `DataSpec` the family's `make` reads.
`ImageData` reads the core's image sources (`gen.core.data.sources`) into
`{"image", "label"}` batches; a family that reads something else subclasses `Data` and
exposes it as `make_data` (e.g. the language models' token windows).

The training iterator is infinite, reshuffled every epoch from `config.seed`, and
checkpointable: `it.get_state()` is a small JSON-able dict that the trainer saves
with the model, and `it.set_state(state)` puts a fresh iterator at the same position.
Random preprocessing (dequantization noise, dynamic binarization, flips) draws from a
generator that grain seeds per batch index, so a resumed run sees the same bits.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from gen.core.data import sources
from gen.core.family import DataSpec

PREPROCESS = ("scale", "dequantize", "binarize", "unit")


def preprocess(images: np.ndarray, mode: str, rng: np.random.Generator | None,
               flip: bool = False) -> np.ndarray:
  """Maps uint8 images to float32 model inputs.

  - `scale`: x / 127.5 - 1, in [-1, 1] (bin centres for discretized likelihoods).
  - `dequantize`: (x + u) / 256 * 2 - 1 with u ~ U[0, 1): continuous data in [-1, 1).
  - `binarize`: Bernoulli(x / 255), dynamic binarization, in {0, 1}.
  - `unit`: x / 255, in [0, 1].
  """
  x = images.astype(np.float32)
  if flip:
    mask = rng.random(len(images)) < 0.5
    x = np.where(mask[:, None, None, None], x[:, :, ::-1], x)
  if mode == "scale":
    return x / 127.5 - 1.0
  if mode == "dequantize":
    return (x + rng.random(x.shape, dtype=np.float32)) / 128.0 - 1.0
  if mode == "binarize":
    return (rng.random(x.shape, dtype=np.float32) < x / 255.0).astype(np.float32)
  if mode == "unit":
    return x / 255.0
  raise ValueError(f"data.preprocess must be one of {PREPROCESS}, got '{mode}'")


def postprocess(x: np.ndarray, mode: str) -> np.ndarray:
  """Inverse of `preprocess` to floats in [0, 1] for viewing."""
  x = np.asarray(x, np.float32)
  if mode in ("scale", "dequantize"):
    x = (x + 1.0) / 2.0
  return np.clip(x, 0.0, 1.0)


class Data(abc.ABC):
  """The train and eval streams for one config, for this process's share of the batch.

  Subclasses give `load(split, train) -> source` and `spec`; they may preprocess batches
  (`prepare_train(batch, rng)` inside the grain pipeline, `prepare_eval(batch, index)`),
  derive metrics from the family's (`derived_metrics`) and save what a run needs again
  (`save(workdir)`, next to the config). `reuse` lists earlier workdirs (this run's own,
  then `init_from`'s) whose saved files a subclass may take over, e.g. a vocabulary.
  """

  def __init__(self, config, process_index: int | None = None, process_count: int | None = None,
               reuse: Sequence[str] = ()):
    import jax

    self.cfg = config.data
    self.seed = int(config.seed)
    self.reuse = tuple(d for d in reuse if d)
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if self.cfg.batch_size % self.process_count:
      raise ValueError(f"data.batch_size={self.cfg.batch_size} must divide evenly over "
                       f"{self.process_count} processes")
    self.batch_size = self.cfg.batch_size // self.process_count
    self._eval_source = None

  # ------------------------------------------------------------------ for subclasses

  spec: DataSpec

  @abc.abstractmethod
  def load(self, split: str, train: bool):
    """The random-access source of `split` (the training split when `train`)."""

  def prepare_train(self, batch: dict, rng: np.random.Generator) -> dict:
    """A training batch's preprocessing (random draws from `rng`); default: none."""
    return batch

  def prepare_eval(self, batch: dict, index: int) -> dict:
    """An eval batch's preprocessing; `index` seeds any randomness. Default: none."""
    return batch

  def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
    """Metrics the eval source derives from the family's (perplexity, NLL per step...)."""
    fn = getattr(self.eval_source, "derived_metrics", None)
    return fn(metrics) if fn else {}

  def save(self, workdir: str) -> None:  # noqa: B027 (a default, not abstract)
    """Writes what `gen sample` or a resumed run needs besides the spec; default: nothing."""

  # ---------------------------------------------------------------------- the streams

  @property
  def eval_source(self):
    if self._eval_source is None:
      self._eval_source = self.load(self.cfg.eval_split, train=False)
    return self._eval_source

  def _process_shard(self, source) -> grain.MapDataset:
    ds = grain.MapDataset.source(source)
    return ds[self.process_index::self.process_count]

  def train_dataset(self) -> grain.MapDataset:
    """The infinite training stream as a (lazy, random-access) MapDataset of batches.

    Every process shuffles and batches the whole training set the same way and keeps its
    own rows of each global batch, so a run sees the same global batches (and the same
    preprocessing noise) on any number of processes.
    """
    if len(self.train_source) < self.cfg.batch_size:
      raise ValueError(f"{self.train_source!r}: {len(self.train_source)} examples is fewer "
                       f"than one batch of {self.cfg.batch_size}")
    ds = grain.MapDataset.source(self.train_source).seed(self.seed).shuffle().repeat(None)
    ds = ds.batch(self.cfg.batch_size, drop_remainder=True)
    if type(self).prepare_train is not Data.prepare_train:
      ds = ds.random_map(self.prepare_train, seed=self.seed + 1)
    if self.process_count == 1:
      return ds
    rows = slice(self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size)
    return ds.map(lambda batch: {k: v[rows] for k, v in batch.items()})

  def train_iterator(self) -> grain.DatasetIterator:
    """A checkpointable iterator (`get_state` / `set_state`) with read-ahead."""
    opts = grain.ReadOptions(num_threads=max(1, self.cfg.num_threads),
                             prefetch_buffer_size=max(1, self.cfg.prefetch))
    return iter(self.train_dataset().to_iter_dataset(opts))

  def example_batch(self) -> dict[str, np.ndarray]:
    return self.train_dataset()[0]

  def num_eval_batches(self, max_batches: int = 0, batch_size: int | None = None) -> int:
    bs = batch_size or self.cfg.eval_batch_size
    num = math.ceil(len(self.eval_source) / bs)
    return min(num, max_batches) if max_batches else num

  def eval_batches(self, max_batches: int = 0, batch_size: int | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """The eval split in order, once; the last batch is padded and `mask` marks real rows.

    Random preprocessing uses a fixed seed, so every eval sees the same noise.
    """
    bs = (batch_size or self.cfg.eval_batch_size) // self.process_count
    src = self._process_shard(self.eval_source)
    num = math.ceil(len(src) / bs)
    if max_batches:
      num = min(num, max_batches)
    for b in range(num):
      recs = [src[i] for i in range(b * bs, min((b + 1) * bs, len(src)))]
      batch = {k: np.stack([np.asarray(r[k]) for r in recs]) for k in recs[0]}
      batch = self.prepare_eval(batch, b)
      batch["mask"] = np.ones(len(recs), np.float32)
      pad = bs - len(recs)
      if pad:
        batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                 for k, v in batch.items()}
      yield batch


class ImageData(Data):
  """Labelled images from a registered source (`gen.core.data.sources`): batches are
  `{"image": float32[B, H, W, C], "label": int32[B]}` after `data.preprocess`.

  A source whose records also hold `targets` (int32[T], several labels per image; the source's
  `targets` lists their `(name, class count)`, e.g. `gen.core.data.captions`) adds
  `"targets": int32[B, T]` to the batches, and to the spec a field and
  `extra["targets"]`: `[[name, class count], ...]`.
  """

  def __init__(self, config, process_index: int | None = None, process_count: int | None = None,
               reuse: Sequence[str] = ()):
    super().__init__(config, process_index, process_count, reuse)
    if self.cfg.preprocess not in PREPROCESS:
      raise ValueError(f"data.preprocess must be one of {PREPROCESS}, got '{self.cfg.preprocess}'")
    self.train_source = self.load(self.cfg.train_split, train=True)
    self.spec = DataSpec.images(self.shape, self.num_classes, self.cfg.preprocess)
    heads = getattr(self.train_source, "targets", None)
    if heads:
      if self.cfg.random_flip:
        raise ValueError(f"data.random_flip mirrors the images of {self.cfg.name} but not their "
                         "targets: set it False")
      self.spec = dataclasses.replace(
          self.spec, fields={**self.spec.fields, "targets": ((len(heads),), "int32")},
          extra={"targets": [[name, count] for name, count in heads]})

  def load(self, split: str, train: bool):
    return sources.load(self.cfg.name, split, self.cfg.dir)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.train_source.shape)

  @property
  def num_classes(self) -> int:
    return self.train_source.num_classes

  def prepare_train(self, batch, rng):
    return {**batch,
            "image": preprocess(batch["image"], self.cfg.preprocess, rng, self.cfg.random_flip)}

  def prepare_eval(self, batch, index):
    rng = np.random.default_rng([self.seed, 7919, index])
    return {**batch, "image": preprocess(batch["image"], self.cfg.preprocess, rng),
            "label": batch["label"].astype(np.int32)}
