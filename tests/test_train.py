"""The training loop: resume equality, preemption, non-finite losses, bad checkpoints, CLI."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY_VAE, config_path, tiny_vae

from gen import cli
from gen.core import runs
from gen.core import train as train_lib
from gen.core.checkpoint import Checkpointer, CheckpointError


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_resumed_training_is_bitwise_identical_to_straight(tmp_path):
  config = tiny_vae(**{"train.num_steps": 6, "train.checkpoint_every": 3})
  straight = train_lib.train(config, str(tmp_path / "straight"), handle_signals=False)
  workdir = str(tmp_path / "resumed")
  first = train_lib.train(config, workdir, stop_at_step=3, handle_signals=False)
  assert int(first.step) == 3
  resumed = train_lib.train(config, workdir, handle_signals=False)
  assert int(resumed.step) == 6
  a, b = _leaves(straight), _leaves(resumed)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)  # Bitwise: params, EMA, optimizer moments, step.
  paths = lambda t: [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(t)]
  assert paths(straight) == paths(resumed)

  def losses(d):
    lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    return {l["step"]: l["loss"] for l in lines if l["split"] == "train"}
  assert losses(workdir) == losses(str(tmp_path / "straight"))
  # The resumed run wrote the end-of-run pictures.
  for name in ("samples", "reconstructions", "interpolations"):
    assert os.path.getsize(os.path.join(workdir, f"{name}.png")) > 100


def _train_process(workdir, **overrides):
  """`gen train` of the tiny digits VAE in a subprocess."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "GEN_COMPILATION_CACHE": os.environ["JAX_COMPILATION_CACHE_DIR"]}
  flags = {**TINY_VAE, **overrides}
  cmd = [sys.executable, "-m", "gen.cli", "train", f"--config={config_path('vae', 'digits.py')}",
         f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def test_killed_run_resumes_bitwise_identical(tmp_path):
  """kill -9 after the first checkpoint (maybe mid-save of the next); re-run; compare."""
  steps = {"train.num_steps": 120, "train.checkpoint_every": 20, "train.log_every": 20}
  workdir = tmp_path / "killed"
  proc = _train_process(workdir, **steps)
  deadline = time.time() + 180
  while not (workdir / "checkpoints" / "20").exists():
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.02)
  proc.kill()
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = Checkpointer(str(workdir)).latest_step()
  assert killed_at is not None and killed_at < 120
  config = tiny_vae(**steps)
  resumed = train_lib.train(config, str(workdir), handle_signals=False)
  straight = train_lib.train(config, str(tmp_path / "straight"), handle_signals=False)
  for x, y in zip(_leaves(straight), _leaves(resumed), strict=True):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_at_the_step_boundary_and_exits_cleanly(tmp_path):
  workdir = tmp_path / "run"
  proc = _train_process(workdir, **{"train.num_steps": 1_000_000, "train.checkpoint_every": 0})
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and (
      not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert "stopped by SIGTERM" in err
  steps = Checkpointer(str(workdir)).all_steps()
  assert len(steps) == 1 and 3 <= steps[0] < 1_000_000
  logged = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
  assert steps[0] >= max(logged)  # Saved at the boundary after the last finished step.
  _, _, _, state, step = runs.load_workdir(str(workdir))
  assert step == steps[0] and int(state.step) == steps[0]


def _nan_family(after_step):
  from gen.vae import make as make_vae

  def make(config, spec):
    pipe = make_vae(config, spec)

    def train_step(state, batch, rng):
      new, metrics = pipe.train_step(state, batch, rng)
      metrics["loss"] = jnp.where(state.step >= after_step, jnp.nan, metrics["loss"])
      return new, metrics
    return pipe.__class__(**{**pipe.__dict__, "train_step": train_step})
  return types.SimpleNamespace(make=make)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "gen.nantest", _nan_family(after_step=4))
  config = tiny_vae(**{"train.num_steps": 10, "train.checkpoint_every": 2})
  config.family = "nantest"
  with pytest.raises(train_lib.TrainingError, match="non-finite loss=nan at step 5.*step 4"):
    train_lib.train(config, str(tmp_path), handle_signals=False)
  assert Checkpointer(str(tmp_path)).all_steps() == [2, 4]
  _, _, _, state, step = runs.load_workdir(str(tmp_path))
  assert step == 4 and all(np.all(np.isfinite(x)) for x in _leaves(state.params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("trained"))
  train_lib.train(tiny_vae(), workdir, handle_signals=False)
  return workdir


def test_unreadable_checkpoint_falls_back_to_the_previous_one(trained, tmp_path, caplog):
  import shutil
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained, workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert Checkpointer(workdir).all_steps() == [2, 4]
  for dirpath, _, files in os.walk(os.path.join(ckpt_dir, "4", "state")):
    for f in files:  # Corrupt every file of the newest state.
      with open(os.path.join(dirpath, f), "wb") as fh:
        fh.write(b"\x00garbage")
  with caplog.at_level(logging.WARNING, logger="gen"):
    _, _, _, state, step = runs.load_workdir(workdir)
  assert step == 2 and int(state.step) == 2
  assert "checkpoint at step 4" in caplog.text and "unreadable" in caplog.text
  for dirpath, _, files in os.walk(os.path.join(ckpt_dir, "2", "state")):
    for f in files:
      with open(os.path.join(dirpath, f), "wb") as fh:
        fh.write(b"\x00garbage")
  with pytest.raises(CheckpointError, match="no readable checkpoint"):
    runs.load_workdir(workdir)


def test_cli_sample_and_eval(trained, tmp_path, capsys):
  out = tmp_path / "s.png"
  assert cli.main(["sample", f"--workdir={trained}", "--num=6", f"--out={out}"]) == 0
  assert out.stat().st_size > 100
  assert cli.main(["sample", f"--workdir={trained}", "--steps=3"]) == 2
  assert "takes no argument(s) --steps" in capsys.readouterr().err
  assert cli.main(["eval", f"--workdir={trained}", "--num_batches=2",
                   "--config.eval.iwae_k=3"]) == 0
  result = json.load(open(os.path.join(trained, "eval.json")))
  assert result["step"] == 4 and result["num_examples"] == 32
  assert result["iwae_nll"] <= result["nelbo"] + 1.0  # Loose: 3 samples of a tiny model.
  assert cli.main(["sample", f"--workdir={tmp_path / 'empty'}"]) == 2  # No config.json.


def test_init_from_starts_a_fresh_run_from_another_runs_params(trained, tmp_path):
  _, _, pipeline, source, _ = runs.load_workdir(trained)
  config = tiny_vae(**{"init_from": trained, "train.num_steps": 0})
  state = train_lib.train(config, str(tmp_path / "ft"), handle_signals=False)
  assert int(state.step) == 0  # A fresh step count and optimizer...
  ema = pipeline.sample_params(source)
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(x, y)  # ...with the source's EMA params.
  assert not any(np.any(np.asarray(m)) for m in jax.tree.leaves(state.opt_state))
  wider = tiny_vae(**{"init_from": trained, "train.num_steps": 0,
                      "model.latent_dim": TINY_VAE["model.latent_dim"] + 1})
  first = r"\['decoder'\]\['Dense_0'\]\['kernel'\]: \(5, 32\) here, \(4, 32\) in"
  with pytest.raises(CheckpointError, match=r"do not fit this model:\n  " + first):
    train_lib.train(wider, str(tmp_path / "bad"), handle_signals=False)
