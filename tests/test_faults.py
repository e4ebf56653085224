"""Faults around a run's workdir: corrupt checkpoints, a full disk, two runs on one workdir."""

import errno
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, TINY_VAE, config_path, tiny_vae

from gen import cli
from gen.core import runs as runs_lib
from gen.core import train as train_lib
from gen.core.checkpoint import Checkpointer
from gen.core.workdir import LOCK_FILE, workdir_lock


def _cli_train(workdir, **overrides):
  flags = {**TINY_VAE, **overrides}
  return cli.main(["train", f"--config={config_path('vae', 'digits.py')}",
                   f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()])


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An 8-step run stopped at step 6 (checkpoints at 2, 4, 6), and a straight one."""
  base = tmp_path_factory.mktemp("faults")
  six, eight = str(base / "six"), str(base / "eight")
  config = tiny_vae(**{"train.num_steps": 8})
  train_lib.train(config, six, stop_at_step=6, handle_signals=False)
  train_lib.train(config, eight, handle_signals=False)
  return six, eight


def _truncate_array(step_dir):
  files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
  big = max(files, key=os.path.getsize)
  with open(big, "r+b") as f:
    f.truncate(os.path.getsize(big) // 2)


def _write(relpath, text):
  def corrupt(step_dir):
    with open(os.path.join(step_dir, relpath), "w") as f:
      f.write(text)
  return corrupt


CORRUPTIONS = {
    "truncated array file": _truncate_array,
    "garbage metadata": _write(os.path.join("state", "_METADATA"), "garbage{"),
    "deleted manifest": lambda d: os.remove(os.path.join(d, "state", "manifest.ocdbt")),
    "iterator state a string": _write(os.path.join("data", "metadata"), '"garbage"'),
    "iterator state holding a string": _write(os.path.join("data", "metadata"),
                                              '{"iterator": "garbage", "step": 6}'),
    "iterator position not a number": _write(os.path.join("data", "metadata"),
                                             '{"iterator": {"next_index": "x"}, "step": 6}'),
}


@pytest.fixture
def unraisable(monkeypatch):
  """The unraisable exceptions that reach the interpreter's hook during the test."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
  return seen


def _copy_corrupted(runs, tmp_path, kind):
  workdir = str(tmp_path / "run")
  shutil.copytree(runs[0], workdir)
  CORRUPTIONS[kind](os.path.join(workdir, "checkpoints", "6"))
  return workdir


def _quiet_output(err, unraisable):
  time.sleep(0.5)  # Reads of a failed restore that finish late would show up by now.
  assert "Traceback" not in err and "Event loop is closed" not in err, err
  assert not [e for e in unraisable if "Event loop is closed" in str(e)]
  assert logging.getLogger("absl").filters == [] and sys.unraisablehook is not None


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_train_moves_an_unreadable_newest_checkpoint_aside_and_trains_past_it(
    runs, tmp_path, capsys, unraisable, kind):
  workdir = _copy_corrupted(runs, tmp_path, kind)
  assert _cli_train(workdir, **{"train.num_steps": 8}) == 0  # As the run was started.
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if " is unreadable (" in l]
  assert len(lines) == 1 and "checkpoint at step 6" in lines[0], err
  assert f"moved it to {os.path.join(workdir, 'checkpoints', 'corrupt-6')}" in lines[0]
  assert "resumed from step 4" in err and "done at step 8" in err
  _quiet_output(err, unraisable)
  # Kept for a look, out of orbax's way; the run wrote step 6 again.
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "corrupt-6"))
  assert Checkpointer(workdir).all_steps() == [4, 6, 8]
  # Resumed from step 4 with its iterator position: the same bits as a straight run.
  _, _, _, state, step = runs_lib.load_workdir(workdir)
  _, _, _, straight, _ = runs_lib.load_workdir(runs[1])
  assert step == 8
  for x, y in zip(_leaves(straight), _leaves(state), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", ["deleted manifest", "iterator state holding a string"])
def test_sample_and_eval_fall_back_and_move_nothing(runs, tmp_path, capsys, unraisable, kind):
  workdir = _copy_corrupted(runs, tmp_path, kind)
  out = tmp_path / "s.png"
  assert cli.main(["sample", f"--workdir={workdir}", "--num=4", f"--out={out}"]) == 0
  assert cli.main(["eval", f"--workdir={workdir}", "--num_batches=1"]) == 0
  err = capsys.readouterr().err
  assert "from step 4" in err and json.load(open(os.path.join(workdir, "eval.json")))["step"] == 4
  lines = [l for l in err.splitlines() if " is unreadable (" in l]
  assert len(lines) == 2 and all("step 6" in l and "using step 4" in l for l in lines), err
  _quiet_output(err, unraisable)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]


def test_train_with_no_readable_checkpoint_moves_nothing(runs, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  shutil.copytree(runs[0], workdir)
  for s in ("2", "4", "6"):
    _write(os.path.join("data", "metadata"), "[]")(os.path.join(workdir, "checkpoints", s))
  assert _cli_train(workdir, **{"train.num_steps": 8}) == 1
  err = capsys.readouterr().err
  assert "gen train: error: no readable checkpoint" in err and "Traceback" not in err
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]


def test_a_full_disk_during_a_save_is_one_line(tmp_path, capsys, caplog, monkeypatch, unraisable):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler

  async def no_space(self, item, directory):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", no_space)
  with caplog.at_level(logging.WARNING):
    rc = _cli_train(tmp_path / "run")
  err = capsys.readouterr().err
  assert rc == 1, err
  errors = [l for l in err.splitlines() if "error" in l.lower()]
  assert errors == [l for l in errors if l.startswith("gen train: error: could not save the "
                                                     "checkpoint of step 2")], err
  assert len(errors) == 1 and "no space left" in errors[0]
  assert not [r for r in caplog.records if r.name == "absl"]  # Orbax's tracebacks.
  _quiet_output(err, unraisable)


def test_a_second_train_on_a_locked_workdir_is_refused(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  with workdir_lock(workdir):
    holder = json.load(open(os.path.join(workdir, LOCK_FILE)))
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert _cli_train(workdir) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("gen train: error: ")
  assert f"in use by another gen train (pid {os.getpid()} on {socket.gethostname()}" in err
  assert not os.path.exists(workdir)  # Nothing written, and the lock taken back.


def _hold_lock(workdir):
  # SIGINT raises KeyboardInterrupt even where the test runs in a background job, whose
  # children inherit SIGINT ignored.
  code = ("import signal, sys, time\nfrom gen.core.workdir import workdir_lock\n"
          "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
          f"with workdir_lock({str(workdir)!r}):\n  print('locked', flush=True)\n"
          "  time.sleep(600)\n")
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_lock_held_by_another_process_then_left_by_a_kill(tmp_path, capsys):
  workdir = tmp_path / "run"
  proc = _hold_lock(workdir)
  try:
    assert _cli_train(workdir) == 2
    assert f"(pid {proc.pid} on {socket.gethostname()}" in capsys.readouterr().err
  finally:
    proc.kill()
    proc.wait()
  assert json.load(open(workdir / LOCK_FILE))["pid"] == proc.pid  # Stale: its pid is dead.
  assert _cli_train(workdir) == 0
  err = capsys.readouterr().err
  assert f"took over the lock of pid {proc.pid} on {socket.gethostname()}" in err
  assert "no longer running" in err and "done at step 4" in err
  assert not (workdir / LOCK_FILE).exists()


def test_a_lock_is_released_on_an_exception_or_a_signal(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(KeyboardInterrupt):  # What a second Ctrl-C raises.
    with workdir_lock(str(workdir)):
      raise KeyboardInterrupt
  assert not workdir.exists()  # It made the folder, and nothing else was written.
  workdir.mkdir()
  proc = _hold_lock(workdir)
  proc.send_signal(signal.SIGINT)
  proc.wait(timeout=60)
  assert not (workdir / LOCK_FILE).exists()
  with workdir_lock(str(workdir)):
    pass


def test_a_lock_from_another_host_is_left_to_the_user(tmp_path, capsys):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))
  assert _cli_train(workdir) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "locked by pid 1 on elsewhere" in err
  assert "remove the file" in err and (workdir / LOCK_FILE).exists()
