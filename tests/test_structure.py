"""Families depend on the core and shared layers only: copying one folder forks it."""

import ast
import os

from conftest import ROOT

SHARED = {"core", "nn", "eval"}
GEN = os.path.join(ROOT, "gen")
FAMILIES = sorted(d for d in os.listdir(GEN)
                  if os.path.isdir(os.path.join(GEN, d)) and d not in SHARED | {"__pycache__"})


def _gen_imports(path):
  tree = ast.parse(open(path).read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module]
    else:
      continue
    for name in names:
      parts = name.split(".")
      if parts[0] == "gen" and len(parts) > 1:
        yield node.lineno, parts[1]


def _py_files(folder):
  for dirpath, _, files in os.walk(folder):
    for f in files:
      if f.endswith(".py"):
        yield os.path.join(dirpath, f)


def test_there_is_at_least_one_family():
  assert "vae" in FAMILIES


def test_families_import_only_the_core():
  bad = []
  for fam in FAMILIES:
    for path in _py_files(os.path.join(GEN, fam)):
      for line, target in _gen_imports(path):
        if target not in SHARED and target != fam:
          bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports gen.{target}")
  assert not bad, "families must depend only on gen.core / gen.nn:\n" + "\n".join(bad)


def test_core_and_eval_do_not_import_families():
  bad = []
  for sub in ("core", "nn", "eval"):
    for path in _py_files(os.path.join(GEN, sub)):
      for line, target in _gen_imports(path):
        if target in FAMILIES:
          bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports gen.{target}")
  assert not bad, "\n".join(bad)
