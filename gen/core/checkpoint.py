"""Checkpoints through orbax: the train state and the data iterator's position, per step.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. Saves are asynchronous by default
(training continues while the arrays are written); `wait()` blocks until the last one
is on disk, and a save that failed (a full disk) is a `CheckpointError` there, or at the
next save or `close()`. Restoring walks back from the newest step: an unreadable
checkpoint (its arrays, its metadata, or a data-iterator state that is not what the run
saved) is reported in one line and the previous one is tried; a training run moves the
unreadable ones aside (`checkpoints/corrupt-<step>/`, never deleted) so that it can write
those steps again. Orbax's own error logs and tracebacks around a failed read or write
are held back: the one line says what happened.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("gen")

CORRUPT_PREFIX = "corrupt-"  # Not a step name for orbax (it reads digits, or NAME_digits).


class CheckpointError(RuntimeError):
  """No readable checkpoint where one was expected, or one could not be written."""


def _one_line(e: BaseException, limit: int = 300) -> str:
  text = str(e).strip()
  first = text.splitlines()[0] if text else ""
  msg = f"{type(e).__name__}: {first}" if first else type(e).__name__
  return msg if len(msg) <= limit else msg[:limit] + "..."


class _Quiet:
  """While a checkpoint is read or written: holds back what is logged through absl (orbax's
  error records come with tracebacks, one per thread that saw the failure) and drops the
  `RuntimeError: Event loop is closed` that tensorstore raises, as unraisable exceptions,
  when reads or writes of a failed operation finish after orbax closed their event loop.
  Everything else goes where it went before."""

  SETTLE_S, MAX_SETTLE_S = 0.3, 3.0
  LOGGERS = ("absl", "asyncio")  # asyncio: tasks of a failed operation, never awaited.

  def __init__(self):
    self._mutex = threading.Lock()
    self._depth = 0
    self._installed = False
    self._previous_hook = None
    self._last_drop = 0.0
    self.records: list[logging.LogRecord] = []

  def _hold(self, record: logging.LogRecord) -> bool:
    # Every record of the absl logger: its records name absl's own module instead of the
    # caller when the logger was made before absl was imported.
    with self._mutex:
      self.records.append(record)
    return False

  def _unraisable(self, args) -> None:
    if isinstance(args.exc_value, RuntimeError) and str(args.exc_value) == "Event loop is closed":
      self._last_drop = time.monotonic()
      return
    (self._previous_hook or sys.__unraisablehook__)(args)

  @contextlib.contextmanager
  def __call__(self):
    with self._mutex:
      self._depth += 1
      if not self._installed:
        self._installed = True
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        for name in self.LOGGERS:
          logging.getLogger(name).addFilter(self._hold)
    try:
      yield self
    finally:
      with self._mutex:
        self._depth -= 1
        last = self._depth == 0
      if last:
        self._uninstall()

  def _uninstall(self) -> None:
    # Reads and writes of a failed operation may still be finishing: wait until they are
    # quiet, then collect its tasks (asyncio logs those that ended in an error nobody read).
    t0 = time.monotonic()
    failed = bool(self._last_drop)
    while (time.monotonic() - self._last_drop < self.SETTLE_S
           and time.monotonic() - t0 < self.MAX_SETTLE_S):
      time.sleep(0.05)
    if failed:
      with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        gc.collect()
    with self._mutex:
      if self._depth or not self._installed:
        return
      self._installed = False
      for name in self.LOGGERS:
        logging.getLogger(name).removeFilter(self._hold)
      if sys.unraisablehook == self._unraisable:
        sys.unraisablehook = self._previous_hook or sys.__unraisablehook__
      self._previous_hook, self._last_drop = None, 0.0
      held, self.records = self.records, []
    self._report(held)

  def failed(self) -> None:
    """The operation failed and its error is reported: drop what was logged about it, and
    let the uninstall wait for its stragglers."""
    with self._mutex:
      self.records = []
      self._last_drop = time.monotonic()

  @staticmethod
  def _report(records) -> None:
    """What was logged during an operation that went through: one line each."""
    seen = set()
    for r in records:
      if r.levelno < logging.WARNING:
        continue
      text = r.getMessage().strip().splitlines()[0][:300] if r.getMessage().strip() else ""
      if text and text not in seen:
        seen.add(text)
        log.warning("%s: %s", "orbax" if "orbax" in r.pathname else r.name, text)


_quiet = _Quiet()


def _check_data_state(data, step: int) -> dict:
  """The data item of a checkpoint, as the training loop saves it: a JSON object whose
  `iterator` (when present) is an object and whose `step` (when present) is `step`."""
  if not isinstance(data, dict):
    raise ValueError(f"its data-iterator state is a JSON {type(data).__name__}, not an object")
  if "step" in data and (type(data["step"]) is not int or data["step"] != step):
    raise ValueError(f"its data-iterator state is for step {data['step']!r}")
  if "iterator" in data and not isinstance(data["iterator"], dict):
    raise ValueError(f"its data-iterator state holds a {type(data['iterator']).__name__}, "
                     "not an iterator's state")
  return data


def _mismatch(saved, like, path: str = "") -> str | None:
  """Where `saved` differs from `like` in keys or leaf types (None: same structure)."""
  if isinstance(like, dict):
    if not isinstance(saved, dict):
      return f"{path or 'it'} is a {type(saved).__name__}, not an object"
    if set(saved) != set(like):
      return f"{path or 'its keys'}: {sorted(saved)} instead of {sorted(like)}"
    for k in like:
      where = _mismatch(saved[k], like[k], f"{path}.{k}" if path else k)
      if where:
        return where
    return None
  if isinstance(like, (list, tuple)):
    return None if isinstance(saved, (list, tuple)) else f"{path} is not a list"
  if type(saved) is not type(like) and not (like is None or saved is None):
    return f"{path} is a {type(saved).__name__}, not a {type(like).__name__}"
  return None


def data_checker(iterator) -> Callable[[dict], None]:
  """A `check_data` for `Checkpointer.restore` that puts a saved position into `iterator`:
  a state shaped otherwise than the iterator's own (`{"iterator": ..., "step": ...}`), or
  one the iterator refuses, makes the checkpoint unreadable."""
  like = {"iterator": iterator.get_state(), "step": 0}

  def check(data: dict) -> None:
    where = _mismatch(data, like)
    if where:
      raise ValueError(f"its data-iterator state does not fit this run's iterator ({where})")
    try:
      iterator.set_state(data["iterator"])
    except Exception as e:
      raise ValueError(f"the data iterator refuses its state ({_one_line(e)})") from None

  return check


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               create: bool = True):
    """`create=False` opens the checkpoints of a run to read them: nothing is created (orbax
    would create the folder in a background thread, which can outlive a quick exit)."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    # A save interrupted by a kill leaves a temporary folder, never a half-written step:
    # clean those up and carry on from the last finished one.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    with _quiet():
      self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))
    self._saving = None  # (step, the _quiet context held until that save is on disk)

  def all_steps(self) -> list[int]:
    with _quiet():
      self._mngr.reload()  # Other processes (or a previous run) may have written steps.
      return sorted(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state, data_state: dict | None = None) -> None:
    self._finish()
    args = {"state": ocp.args.StandardSave(state)}
    args["data"] = ocp.args.JsonSave(data_state or {})
    held = contextlib.ExitStack()
    held.enter_context(_quiet())
    self._saving = (step, held)
    try:
      self._mngr.save(step, args=ocp.args.Composite(**args), force=True)
    except Exception as e:
      self._failed(e)

  def _finish(self) -> None:
    """Waits for the pending save; a failed one is a CheckpointError."""
    if self._saving is None:
      with _quiet() as q:
        try:
          self._mngr.wait_until_finished()
        except Exception:  # A save that failed before, and was reported then.
          q.failed()
      return
    try:
      self._mngr.wait_until_finished()
    except Exception as e:
      self._failed(e)
    _, held = self._saving
    self._saving = None
    held.close()

  def _failed(self, e: Exception) -> None:
    step, held = self._saving
    self._saving = None
    _quiet.failed()
    held.close()
    reason = _one_line(e)
    if "No space left" in reason or "RESOURCE_EXHAUSTED" in reason:
      reason = "no space left on the device (" + reason + ")"
    raise CheckpointError(f"could not save the checkpoint of step {step} to "
                          f"{self.directory}: {reason}") from None

  def wait(self) -> None:
    self._finish()

  def close(self) -> None:
    try:
      self._finish()
    finally:
      with _quiet() as q:
        try:
          self._mngr.close()
        except Exception:  # Its save already failed, and was reported.
          q.failed()

  def restore(self, abstract_state, step: int | None = None, *,
              check_data: Callable[[dict], None] | None = None,
              move_aside: bool = False) -> tuple[int, Any, dict] | None:
    """Restores `step` (default: the newest readable one) into `abstract_state`'s structure.

    Returns `(step, state, data_state)`, or None when there is no checkpoint. `check_data`
    (e.g. `data_checker(iterator)`) may refuse the data state by raising: that checkpoint
    counts as unreadable. With `move_aside` (a training run, which will write those steps
    again), the unreadable steps newer than the one restored are renamed
    `corrupt-<step>`; a run with no readable checkpoint moves nothing.
    """
    steps = self.all_steps() if step is None else [step]
    if not steps:
      return None
    errors = []
    with _quiet() as q:
      for s in reversed(steps):
        try:
          restored = self._mngr.restore(s, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
          data = _check_data_state(restored["data"], s)
          if check_data is not None:
            check_data(data)
        except Exception as e:  # Orbax raises many types: one line each, try an older step.
          q.failed()
          errors.append((s, _one_line(e)))
          continue
        self._report_unreadable(errors, s, move_aside)
        return s, restored["state"], dict(data)
    raise CheckpointError(f"no readable checkpoint in {self.directory}:\n  "
                          + "\n  ".join(f"step {s}: {m}" for s, m in errors))

  def _report_unreadable(self, errors, good: int, move_aside: bool) -> None:
    moved = False
    for s, msg in errors:
      what = f"using step {good}"
      if move_aside and jax.process_index() == 0:
        target = self._move_aside(s)
        if target:
          what, moved = f"moved it to {target}, resuming from step {good}", True
      log.warning("checkpoint at step %d in %s is unreadable (%s); %s",
                  s, self.directory, msg, what)
    if moved:
      with _quiet():
        self._mngr.reload()

  def _move_aside(self, step: int) -> str | None:
    source = os.path.join(self.directory, str(step))
    if not os.path.isdir(source):
      return None
    target = os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}")
    n = 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}.{n}")
    os.rename(source, target)
    return target


def abstract_like(tree, sharding=None):
  """ShapeDtypeStructs for restoring into `tree`'s structure, placed by `sharding`: one
  sharding for every leaf, or a tree of them (the layout to restore onto, which may
  differ from the one that saved: orbax reshards)."""
  if not isinstance(sharding, jax.sharding.Sharding) and sharding is not None:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, sharding)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
