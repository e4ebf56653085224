"""One grain pipeline for every source: shard, shuffle, batch, preprocess, prefetch.

Image sources give `{"image", "label"}` batches; token sources (a config with
`data.seq_len`, or `jsb_chorales`) give `{"tokens": int32[B, seq_len + 1]}` windows and
carry the tokenizer (see `gen.core.data.text`). A token config with `data.pairs` trains
on preference pairs instead (`gen.core.data.pairs`); its eval split stays token windows.

The training iterator is infinite, reshuffled every epoch from `config.seed`, and
checkpointable: `it.get_state()` is a small JSON-able dict that the trainer saves
with the model, and `it.set_state(state)` puts a fresh iterator at the same position.
Random preprocessing (dequantization noise, dynamic binarization, flips) draws from a
generator that grain seeds per batch index, so a resumed run sees the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import grain
import numpy as np

from gen.core.data import pairs, sources, text, tokenizers

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


class Data:
  """The train and eval streams for one config, for this process's share of the batch."""

  def __init__(self, config, process_index: int | None = None, process_count: int | None = None,
               workdir: str | None = None):
    """`workdir`: where a token source's tokenizer was saved by an earlier run (reused)."""
    import jax

    self.cfg = config.data
    self.seed = int(config.seed)
    self.seq_len = int(self.cfg.get("seq_len", 0))
    self.kind = "tokens" if self.seq_len or self.cfg.name == "jsb_chorales" else "image"
    if self.kind == "image" and self.cfg.preprocess not in PREPROCESS:
      raise ValueError(f"data.preprocess must be one of {PREPROCESS}, got '{self.cfg.preprocess}'")
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if self.cfg.batch_size % self.process_count:
      raise ValueError(f"data.batch_size={self.cfg.batch_size} must divide evenly over "
                       f"{self.process_count} processes")
    self.batch_size = self.cfg.batch_size // self.process_count
    self.tokenizer = None
    if self.kind == "tokens":
      if self.seq_len <= 0:
        raise ValueError(f"{self.cfg.name} is a token source: set data.seq_len > 0")
      self.tokenizer = (tokenizers.load(workdir) if workdir else None) or \
          text.build_tokenizer(self.cfg)
    self.train_source = self._load(self.cfg.train_split, train=True)
    self._eval_source = None

  def _load(self, split: str, train: bool):
    if self.kind == "tokens" and train and self.cfg.get("pairs", ""):  # Preference pairs (DPO).
      return pairs.PairSource(self.cfg.pairs, self.seq_len, self.tokenizer)
    if self.kind == "tokens":
      return text.load(self.cfg.name, split, self.cfg.dir, self.seq_len, self.tokenizer, train)
    return sources.load(self.cfg.name, split, self.cfg.dir)

  @property
  def eval_source(self):
    if self._eval_source is None:
      self._eval_source = self._load(self.cfg.eval_split, train=False)
    return self._eval_source

  def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
    """Metrics the eval source derives from the family's (perplexity, NLL per step...)."""
    fn = getattr(self.eval_source, "derived_metrics", None)
    return fn(metrics) if fn else {}

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.train_source.shape)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size if self.tokenizer else 0

  @property
  def num_classes(self) -> int:
    return self.train_source.num_classes

  def _process_shard(self, source) -> grain.MapDataset:
    ds = grain.MapDataset.source(source)
    return ds[self.process_index::self.process_count]

  def train_dataset(self) -> grain.MapDataset:
    """The infinite training stream as a (lazy, random-access) MapDataset of batches.

    Every process shuffles and batches the whole training set the same way and keeps its
    own rows of each global batch, so a run sees the same global batches (and the same
    preprocessing noise) on any number of processes.
    """
    mode, flip = self.cfg.preprocess, self.cfg.random_flip
    if len(self.train_source) < self.cfg.batch_size:
      raise ValueError(f"{self.train_source!r}: {len(self.train_source)} examples is fewer "
                       f"than one batch of {self.cfg.batch_size}")

    def prep(batch, rng):
      return {"image": preprocess(batch["image"], mode, rng, flip), "label": batch["label"]}

    ds = grain.MapDataset.source(self.train_source).seed(self.seed).shuffle().repeat(None)
    ds = ds.batch(self.cfg.batch_size, drop_remainder=True)
    if self.kind != "tokens":  # Token windows need no preprocessing.
      ds = ds.random_map(prep, seed=self.seed + 1)
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

  def eval_batches(self, max_batches: int = 0, batch_size: int | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """The eval split in order, once; the last batch is padded and `mask` marks real rows.

    Random preprocessing uses a fixed seed, so every eval sees the same binarization
    or dequantization noise.
    """
    bs = (batch_size or self.cfg.eval_batch_size) // self.process_count
    src = self._process_shard(self.eval_source)
    num = math.ceil(len(src) / bs)
    if max_batches:
      num = min(num, max_batches)
    for b in range(num):
      recs = [src[i] for i in range(b * bs, min((b + 1) * bs, len(src)))]
      batch = {k: np.stack([np.asarray(r[k]) for r in recs]) for k in recs[0]}
      if self.kind == "image":
        rng = np.random.default_rng([self.seed, 7919, b])
        batch["image"] = preprocess(batch["image"], self.cfg.preprocess, rng)
        batch["label"] = batch["label"].astype(np.int32)
      batch["mask"] = np.ones(len(recs), np.float32)
      pad = bs - len(recs)
      if pad:
        batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                 for k, v in batch.items()}
      yield batch
