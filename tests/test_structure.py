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


# Words that belong to a family or a family's data. The core and the CLI name none of them
# in code (docstrings and comments may give examples); the core's own image sources
# (gen/core/data/sources.py) may name their datasets.
FAMILY_WORDS = ("token", "tokenizer", "vocab", "prompt", "chorale", "jsb", "midi", "wav",
                "music", "text:", "pairs", "dpo", "finetune", "classifier", "diffusion",
                "denoise", "gan", "vae", "pixelcnn", "lm.")
DATASETS = ("digits", "mnist", "fashion_mnist", "shakespeare", "cifar")
# `gen eval --fd_classifier`: the feature network of the Fréchet distance, an eval concept.
ALLOWED = {"fd_classifier"}


def _code_words(path):
  """Identifiers, attribute names and string constants of a module, without docstrings."""
  tree = ast.parse(open(path).read(), path)
  docstrings = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docstrings.add(id(body[0].value))
  for node in ast.walk(tree):
    if isinstance(node, ast.Name):
      yield node.lineno, node.id
    elif isinstance(node, ast.Attribute):
      yield node.lineno, node.attr
    elif isinstance(node, ast.arg):
      yield node.lineno, node.arg
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      yield node.lineno, node.name
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings):
      yield node.lineno, node.value


def _core_files():
  yield os.path.join(GEN, "cli.py")
  yield from _py_files(os.path.join(GEN, "core"))


def test_core_names_no_family_concept_or_dataset():
  bad = []
  for path in _core_files():
    rel = os.path.relpath(path, ROOT)
    words = FAMILY_WORDS + (() if rel.endswith(os.path.join("data", "sources.py")) else DATASETS)
    for line, text in _code_words(path):
      low = text.lower()
      hits = [w for w in words if w in low and text not in ALLOWED]
      if hits:
        bad.append(f"{rel}:{line}: {text[:60]!r} names {hits[0]!r}")
  assert not bad, "the core and CLI must not name families or their data:\n" + "\n".join(bad)


def test_no_module_reads_another_by_string():
  """No `functions[...]`-style side channel: the contract's members are typed fields."""
  from gen.core.family import Pipeline

  side_channel = "func" + "tions"  # Spelled apart so this test does not find itself.
  assert side_channel not in {f.name for f in __import__("dataclasses").fields(Pipeline)}
  bad = []
  for folder in ("gen", "tests", "benchmarks"):
    for path in _py_files(os.path.join(ROOT, folder)):
      for line, text in _code_words(path):
        if text == side_channel:
          bad.append(f"{os.path.relpath(path, ROOT)}:{line}")
  assert not bad, "\n".join(bad)


def _module_name(path):
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def test_no_import_cycles():
  """Imports between gen modules form no cycle, those inside functions included: a lazy
  import that closes a cycle only hides it."""
  modules = {_module_name(p): p for p in _py_files(GEN)}
  graph = {}
  for name, path in modules.items():
    tree = ast.parse(open(path).read(), path)
    deps = set()
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from pkg import sub` needs the module pkg.sub; `from pkg import name`, pkg itself.
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                   else node.module for a in node.names]
      deps |= {t for t in targets if t in modules and t != name}
    graph[name] = deps
  state, cycle = {}, []

  def visit(n, stack):
    state[n] = 1
    for d in sorted(graph[n]):
      if state.get(d) == 1:
        cycle.append(" -> ".join(stack[stack.index(d):] + [d]))
      elif d not in state:
        visit(d, stack + [d])
    state[n] = 2

  for n in sorted(graph):
    if n not in state:
      visit(n, [n])
  assert not cycle, "import cycles:\n" + "\n".join(cycle)


def test_only_the_cli_imports_the_trainer():
  """Loading a run is `gen.core.runs`'s: families, eval and the rest of the core never import
  the training loop (which loads families back by name)."""
  bad = []
  for path in _py_files(GEN):
    rel = os.path.relpath(path, ROOT)
    if rel in (os.path.join("gen", "cli.py"), os.path.join("gen", "core", "train.py")):
      continue
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      if "gen.core.train" in names:
        bad.append(f"{rel}:{node.lineno}")
  assert not bad, "these import gen.core.train (load runs with gen.core.runs):\n" + "\n".join(bad)
