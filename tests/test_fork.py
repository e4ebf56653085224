"""The README's fork recipe, run as written on a copy of the tree: the copied family trains."""

import os
import re
import shutil
import subprocess
import sys

from conftest import ROOT, TINY_TRAIN, TINY_VAE


def _recipe():
  """The shell lines of the README's "Forking a family" block."""
  readme = open(os.path.join(ROOT, "README.md")).read()
  section = readme.split("## Forking a family", 1)[1]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_fork_recipe_trains_the_copy(tmp_path):
  shutil.copytree(os.path.join(ROOT, "gen"), tmp_path / "gen",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copytree(os.path.join(ROOT, "configs"), tmp_path / "configs")
  lines = _recipe()
  *copy, run = lines
  assert run.startswith("gen train --config=configs/myvae/digits.py"), run
  subprocess.run(["bash", "-euc", "\n".join(copy)], cwd=tmp_path, check=True)
  # No line of the copy still imports its parent.
  assert subprocess.run(["grep", "-rqE", r"gen\.vae\b", "gen/myvae"], cwd=tmp_path).returncode == 1
  tiny = {**TINY_VAE, **TINY_TRAIN, "train.num_steps": 2, "train.eval_batches": 1}
  flags = [f"--config.{k}={v}" for k, v in tiny.items()]
  env = {**os.environ, "PYTHONPATH": str(tmp_path), "JAX_PLATFORMS": "cpu"}
  args = run.split()[2:]  # gen train ...: the same flags through `python -m gen.cli train`.
  out = subprocess.run([sys.executable, "-m", "gen.cli", "train", *args, *flags], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  workdir = tmp_path / "runs" / "myvae"  # gen.myvae exists only in the copy.
  assert '"family": "myvae"' in (workdir / "config.json").read_text()
  assert (workdir / "samples.png").exists() and (workdir / "checkpoints").is_dir()
