"""Stopping on SIGTERM / SIGINT at a step boundary, with signals caught from the first moment.

`gen train` calls `catch_early()` before it imports anything heavy, so a scheduler's SIGTERM
during start-up (imports, data loading, compilation) is not lost: `on_signals` takes the
recorded signal over and the trainer stops, with a checkpoint, after its first step. The first
signal becomes a flag; a second one interrupts as usual.
"""

from __future__ import annotations

import contextlib
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_early: dict = {"signal": None, "previous": None}


def _install(flag: dict) -> dict:
  previous = {}

  def handler(signum, frame):
    flag["signal"] = signal.Signals(signum).name
    for s, h in previous.items():  # A second signal is not caught.
      signal.signal(s, h)

  for s in SIGNALS:
    previous[s] = signal.signal(s, handler)
  return previous


def catch_early() -> None:
  """Records the first SIGTERM/SIGINT from now until `on_signals` takes over."""
  if _early["previous"] is None:
    _early["previous"] = _install(_early)


def release_early() -> None:
  """Puts back the handlers `catch_early` replaced, if `on_signals` did not take them over."""
  if _early["previous"] is not None:
    for s, h in _early["previous"].items():
      signal.signal(s, h)
  _early.update(signal=None, previous=None)


@contextlib.contextmanager
def on_signals(enabled: bool):
  """Yields `{"signal": NAME or None}`, set by the first SIGTERM/SIGINT (or one caught early)."""
  flag = {"signal": _early["signal"]}
  original = _early["previous"]
  _early.update(signal=None, previous=None)
  if not enabled:
    yield flag
    return
  previous = _install(flag) if flag["signal"] is None else {}
  try:
    yield flag
  finally:
    for s, h in (original or previous).items():
      signal.signal(s, h)
