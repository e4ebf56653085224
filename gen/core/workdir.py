"""One training run per workdir: `with workdir_lock(workdir): ...`.

The lock is the file `WORKDIR/train.lock`, holding the pid and host of the run that took it
(JSON), held with `flock` while the run lives and removed when it ends, by an exception or
a signal too. A process that is killed outright (SIGKILL, a crash) leaves the file behind:
the next run finds its pid dead on this host, or the file unlocked, and takes it over with
a one-line message. A second run while the first lives is a `WorkdirBusy` error (a usage
error: exit code 2) naming the pid and host. In a multi-process run only process 0 takes it;
a URL workdir (`gs://...`) takes none.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time

from gen.core.checkpoint import CheckpointError
from gen.core.config import ConfigError

log = logging.getLogger("gen")

LOCK_FILE = "train.lock"


class WorkdirBusy(ConfigError):
  """Another `gen train` holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's process: alive.
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return "a process that has not written its pid yet"
  since = holder.get("since")
  when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(
      since, (int, float)) else ""
  return f"pid {holder.get('pid')} on {holder.get('host')}{when}"


def _open_locked(path: str) -> tuple[int, bool]:
  """An fd of `path` and whether it holds its flock (False: the filesystem has none), or
  raises WorkdirBusy. Retries when the file was replaced (removed by its holder) between
  the open and the lock."""
  for _ in range(100):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise WorkdirBusy(f"{os.path.dirname(path)} is in use by another gen train "
                          f"({_describe(_read(path))}); wait for it to end, or use another "
                          "--workdir") from None
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        return fd, False  # No flock on this filesystem: the pid in the file decides alone.
      raise
    try:
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:
      return fd, True
    os.close(fd)  # The holder removed it as we opened it: lock the new file.
  raise WorkdirBusy(f"{os.path.dirname(path)}: could not take {LOCK_FILE}")


@contextlib.contextmanager
def workdir_lock(workdir: str, process_index: int = 0):
  """Holds `WORKDIR/train.lock` for the block (process 0 only); see the module doc."""
  if process_index != 0 or "://" in workdir:  # (A bucket has no pids or flocks to check.)
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  host = socket.gethostname()
  created = not os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, locked = _open_locked(path)
  except OSError as e:
    if created:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)
    raise CheckpointError(f"cannot write the workdir {workdir}: {e.strerror or e}") from None
  try:
    holder = _read(path)
    pid = holder.get("pid")
    if holder and isinstance(pid, int) and pid != os.getpid():
      if holder.get("host") != host:
        # Its flock (if the filesystem shares them) is free, but a run on another host may
        # still be alive on a filesystem that does not: it is the user's call.
        raise WorkdirBusy(f"{workdir} is locked by {_describe(holder)} ({path}); if that run "
                          "has ended, remove the file")
      if _alive(pid) and not locked:  # (Locked: the pid is another process's now.)
        raise WorkdirBusy(f"{workdir} is in use by another gen train ({_describe(holder)})")
      log.warning("%s: took over the lock of %s, which is no longer running", workdir,
                  _describe(holder))
    me = json.dumps({"pid": os.getpid(), "host": host, "since": round(time.time(), 3)})
    os.ftruncate(fd, 0)
    os.pwrite(fd, (me + "\n").encode(), 0)
    os.fsync(fd)
  except BaseException:
    os.close(fd)
    raise
  try:
    yield
  finally:
    try:
      if _read(path).get("pid") == os.getpid():
        os.remove(path)  # Before unlocking: a waiting process then locks a fresh file.
    except OSError:
      pass
    os.close(fd)
    if created:  # A run that failed before writing anything leaves no folder behind.
      with contextlib.suppress(OSError):
        os.rmdir(workdir)

