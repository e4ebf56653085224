"""Metrics to `metrics.jsonl` and TensorBoard, and a progress bar. Only process 0 writes."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import jax
import numpy as np

log = logging.getLogger("gen")


class _Stderr(logging.StreamHandler):
  """Writes to whatever `sys.stderr` is now (it may be replaced after setup, e.g. by a test
  runner capturing output), not to the stream that was current when logging was set up."""

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):
    pass


def setup_logging(level=logging.INFO) -> None:
  if not log.handlers:
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s gen: %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` lines to `metrics.jsonl`; mirrors them to
  TensorBoard."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._file = open(self.path, "a")
      if tensorboard:
        from tensorboardX import SummaryWriter  # Pure-Python event writer (no TensorFlow).
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)

  def write(self, step: int, metrics: dict, split: str = "train") -> dict:
    values = {k: _scalar(v) for k, v in metrics.items()}
    if self.enabled:
      self._file.write(json.dumps({"step": int(step), "split": split, "time": round(time.time(), 3),
                                   **values}) + "\n")
      self._file.flush()
      if self._tb is not None:
        for k, v in values.items():
          if isinstance(v, (int, float)):
            self._tb.add_scalar(f"{split}/{k}", v, step)
    return values

  def image(self, step: int, name: str, picture: np.ndarray) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_image(name, picture, step, dataformats="HWC")

  def text(self, step: int, name: str, text: str) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_text(name, text, step)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def progress(total: int, initial: int, enabled: bool):
  """A tqdm bar (steps/s and ETA are tqdm's own) on a terminal; a no-op object when disabled,
  on other processes, or when stderr is not a terminal (a log file gets the trainer's line
  every `train.log_every` steps instead of carriage-return updates; its `live` is False)."""
  if enabled and jax.process_index() == 0 and sys.stderr.isatty():
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1,
                file=sys.stderr)

  class _Null:
    live = False
    def update(self, n=1): pass
    def set_postfix(self, *a, **k): pass
    def write(self, s): log.info(s)
    def close(self): pass
  return _Null()
