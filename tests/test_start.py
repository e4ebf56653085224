"""A run's start: nothing is written until config, data and pipeline are checked; a restart
that does not fit the workdir is refused; signals are caught from the first moment."""

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
from conftest import ROOT, TINY_PIXELCNN, TINY_VAE, config_path

from gen import cli
from gen.core.data import sources

VAE = config_path("vae", "digits.py")


def _flags(tiny=TINY_VAE, **extra):
  return [f"--config.{k}={v}" for k, v in {**tiny, "train.num_steps": 2, **extra}.items()]


def _train(workdir, config=VAE, tiny=TINY_VAE, **extra):
  return cli.main(["train", f"--config={config}", f"--workdir={workdir}",
                   *_flags(tiny, **extra)])


def test_restart_with_another_model_or_family_is_refused_untouched(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert _train(workdir) == 0
  saved = {p: p.read_bytes() for p in (workdir / "config.json", workdir / "data_spec.json")}
  capsys.readouterr()
  assert _train(workdir, **{"model.hidden": 48}) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "model.hidden: 32 -> 48" in err
  assert _train(workdir, config=config_path("pixelcnn", "digits.py"), tiny=TINY_PIXELCNN) == 2
  assert "family: 'vae' -> 'pixelcnn'" in capsys.readouterr().err
  assert {p: p.read_bytes() for p in saved} == saved  # The old run is intact.
  assert cli.main(["sample", f"--workdir={workdir}", "--num=4"]) == 0
  # What does fit resumes: more steps, another cadence.
  assert _train(workdir, **{"train.num_steps": 3}) == 0


def _idx(folder, split, n, truncate=0):
  img_name, lbl_name = sources._IDX_FILES[split]
  rng = np.random.default_rng(0)
  raw = struct.pack(">IIII", 0x0803, n, 28, 28) + rng.integers(0, 255, (n, 28, 28), np.uint8).tobytes()
  with gzip.open(os.path.join(folder, img_name), "wb") as f:
    f.write(raw[:len(raw) - truncate])
  with gzip.open(os.path.join(folder, lbl_name), "wb") as f:
    f.write(struct.pack(">II", 0x0801, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


def test_a_corrupt_eval_split_fails_before_step_0_and_writes_nothing(tmp_path, monkeypatch,
                                                                     capsys):
  monkeypatch.setitem(sources._IDX_SIZES, "train", 40)
  monkeypatch.setitem(sources._IDX_SIZES, "test", 20)
  data = tmp_path / "mnist"
  data.mkdir()
  _idx(data, "train", 40)
  _idx(data, "test", 20, truncate=100)
  workdir = tmp_path / "run"
  rc = cli.main(["train", f"--config={config_path('vae', 'mnist.py')}", f"--workdir={workdir}",
                 f"--config.data.dir={data}", *_flags()])
  err = capsys.readouterr().err
  assert rc == 1 and "corrupt data file" in err and "t10k-images" in err
  assert "step" not in err.split("error:")[0]  # No training step ran.
  assert not workdir.exists()


def test_a_value_that_fails_only_when_compiled_leaves_no_files(tmp_path, monkeypatch, capsys):
  from gen.vae import steps

  def broken(*args, **kwargs):
    raise ValueError("a value only the compiled step rejects")

  monkeypatch.setattr(steps, "train_step", broken)
  kept = tmp_path / "kept"  # A folder that exists already keeps what it had, and no more.
  kept.mkdir()
  (kept / "notes.txt").write_text("mine")
  for workdir in (tmp_path / "new", kept):
    assert _train(workdir) != 0
    assert "only the compiled step rejects" in capsys.readouterr().err
  assert not (tmp_path / "new").exists()
  assert sorted(os.listdir(kept)) == ["notes.txt"]


def test_an_unwritable_workdir_is_one_line(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  assert _train(blocker / "run") == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "cannot write the workdir" in err


def test_sigterm_during_start_up_stops_after_one_step_with_a_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(
      [sys.executable, "-m", "gen.cli", "train", f"--config={VAE}", f"--workdir={workdir}",
       *_flags(**{"train.num_steps": 50, "train.checkpoint_every": 0})],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(0.5)  # Imports are still running: no step can have run yet.
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert "stopped by SIGTERM at step 1" in err
  assert os.listdir(workdir / "checkpoints") == ["1"]
  metrics = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(m["step"] for m in metrics) == 1


def test_a_fitting_restart_only_warns(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert _train(workdir) == 0
  assert cli.main(["train", f"--config={VAE}", f"--workdir={workdir}", *_flags(),
                   "--config.optim.lr=0.01"]) == 0
  assert "config differs" in capsys.readouterr().err


def test_a_run_saved_before_a_key_existed_resumes_with_its_old_value(tmp_path):
  """The LM's `model.norm_eps` came later: a saved config.json without it had 1e-6."""
  import pytest

  from gen.core import config as config_lib
  from gen.core import train as train_lib

  config = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  saved = json.loads(config_lib.to_json(config))
  del saved["model"]["norm_eps"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert config.model.norm_eps == 1e-6
  train_lib.check_restart(config, str(tmp_path), spec=None)  # The same model: no error.
  config.model.norm_eps = 1e-5
  with pytest.raises(config_lib.ConfigError, match=r"model.norm_eps: 1e-06 -> 1e-05"):
    train_lib.check_restart(config, str(tmp_path), spec=None)
