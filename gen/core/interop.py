"""Weights from other libraries: the importers families offer, and a workdir written whole.

A family package may list `IMPORTERS`, each an `Importer`: `recognizes(folder)` takes a
cheap look (its config file) and says whether the folder is one it reads; `write(folder,
workdir, overrides)` validates everything it reads, then writes a gen workdir (config,
data spec, a checkpoint) that `gen sample`, `gen eval` and `init_from` use like a trained
run's. `gen import --from=DIR --workdir=W` finds the importer among the families without
naming any (`find`) and runs it through `write_new_workdir`, so bad input leaves nothing:
the workdir appears, complete, only once every file is written.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import shutil
import uuid
from collections.abc import Callable, Sequence

# Packages of gen that are not families.
NOT_FAMILIES = ("core", "nn", "eval")


class InputError(ValueError):
  """The folder to import is not what its importer reads (a missing file, an unsupported
  setting, a tensor missing, extra or ill-shaped); the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Importer:
  name: str  # What it reads, for messages.
  recognizes: Callable[[str], bool]
  # (folder, new workdir, config overrides `a.b=VALUE`) -> a one-line summary.
  write: Callable[[str, str, Sequence[str]], str]


def family_packages() -> list[str]:
  """The family packages of gen (every subpackage but the shared ones)."""
  import gen

  return sorted(m.name for m in pkgutil.iter_modules(gen.__path__)
                if m.ispkg and m.name not in NOT_FAMILIES)


def importers() -> list[Importer]:
  found = []
  for name in family_packages():
    found.extend(getattr(importlib.import_module(f"gen.{name}"), "IMPORTERS", ()))
  return found


def find(folder: str) -> Importer:
  """The importer that reads `folder`; an InputError when it is not a folder or none does."""
  if not os.path.isdir(folder):
    raise InputError(f"{folder}: not a folder")
  candidates = importers()
  for imp in candidates:
    if imp.recognizes(folder):
      return imp
  names = "; ".join(imp.name for imp in candidates) or "none"
  raise InputError(f"{folder}: no importer reads this folder (they read: {names})")


def write_new_workdir(workdir: str, fill: Callable[[str], str]) -> str:
  """Runs `fill(tmp)` on a temporary folder beside `workdir`, then renames it to `workdir`.

  `workdir` must not exist or be empty. Whatever `fill` raises, the temporary folder is
  removed and `workdir` is left as it was. Returns what `fill` returned.
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise InputError(f"{workdir} already exists and is not empty: give a new --workdir")
  parent = os.path.dirname(workdir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(workdir)}.importing-{uuid.uuid4().hex[:8]}")
  os.mkdir(tmp)  # (Not mkdtemp: the workdir gets the usual permissions.)
  try:
    summary = fill(tmp)
    if os.path.isdir(workdir):
      os.rmdir(workdir)  # Empty (checked above).
    os.rename(tmp, workdir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return summary
