"""Checkpoints through orbax: the train state and the data iterator's position, per step.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. Saves are asynchronous by default
(training continues while the arrays are written); `wait()` blocks until the last one
is on disk. Restoring walks back from the newest step: an unreadable checkpoint is
reported in one line and the previous one is tried.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("gen")


class CheckpointError(RuntimeError):
  """No readable checkpoint where one was expected."""


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    # A save interrupted by a kill leaves a temporary folder, never a half-written step:
    # clean those up and carry on from the last finished one.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    self._mngr.reload()  # Other processes (or a previous run) may have written steps.
    return sorted(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state, data_state: dict | None = None) -> None:
    args = {"state": ocp.args.StandardSave(state)}
    args["data"] = ocp.args.JsonSave(data_state or {})
    self._mngr.save(step, args=ocp.args.Composite(**args), force=True)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()

  def restore(self, abstract_state, step: int | None = None) -> tuple[int, Any, dict] | None:
    """Restores `step` (default: the newest readable one) into `abstract_state`'s structure.

    Returns `(step, state, data_state)`, or None when there is no checkpoint.
    """
    steps = self.all_steps() if step is None else [step]
    if not steps:
      return None
    errors = []
    for s in reversed(steps):
      try:
        restored = self._mngr.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return s, restored["state"], dict(restored["data"] or {})
      except Exception as e:  # Orbax raises many types; report one line, try an older step.
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        errors.append(f"step {s}: {msg}")
        log.warning("checkpoint at step %d in %s is unreadable (%s); trying an older one",
                    s, self.directory, msg[:300])
    raise CheckpointError(f"no readable checkpoint in {self.directory}:\n  " + "\n  ".join(errors))


def abstract_like(tree, sharding=None):
  """ShapeDtypeStructs for restoring into `tree`'s structure, placed by `sharding`: one
  sharding for every leaf, or a tree of them (the layout to restore onto, which may
  differ from the one that saved: orbax reshards)."""
  if not isinstance(sharding, jax.sharding.Sharding) and sharding is not None:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, sharding)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
