"""Scale-out: the same run on 1 device, 8 devices (jit, FSDP, pmap), 2 processes, and
restored onto a different device count; gradient accumulation; a multi-host preemption."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_lm
from jax.sharding import PartitionSpec as P

from gen.core import parallel
from gen.core import train as train_lib

RUNNER = os.path.join(ROOT, "tests", "multidevice_run.py")
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n" * 40


@pytest.fixture(scope="module")
def text(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "play.txt"
  path.write_text(TEXT)
  return f"text:{path}"


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return {**env, **{k: str(v) for k, v in extra.items()}}


def _port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, devices, family, overrides, processes=1, **env):
  """Starts the runner as `processes` processes (loopback coordinator when more than one)."""
  args = [sys.executable, RUNNER, str(devices), str(workdir), str(workdir) + ".npz", family,
          json.dumps(overrides)]
  if processes == 1:
    return [subprocess.Popen(args, cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)]
  address = f"127.0.0.1:{_port()}"
  return [subprocess.Popen(args + [str(i), str(processes), address], cwd=ROOT, env=_env(**env),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(processes)]


def _wait(procs, timeout=600):
  logs = [p.communicate(timeout=timeout)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def _run(workdir, devices, family="lm", overrides=None, processes=1, **env):
  _wait(_launch(workdir, devices, family, overrides or {}, processes, **env))
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return dict(np.load(str(workdir) + ".npz")), [l["loss"] for l in lines if l["split"] == "train"]


def _assert_same(a, b):
  (pa, la), (pb, lb) = a, b
  assert len(la) == len(lb) == 4
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  assert pa.keys() == pb.keys()
  for k in pa:  # Same math, different reduction order across devices: equal up to rounding.
    np.testing.assert_allclose(pa[k], pb[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def one_device(text, tmp_path_factory):
  return _run(tmp_path_factory.mktemp("ref") / "one", 1, overrides={"data.name": text})


@pytest.mark.slow  # The default run checks 1 vs 8 devices on the LM (jit with FSDP, pmap).
def test_one_and_eight_devices_agree_vae(tmp_path):
  _assert_same(_run(tmp_path / "v1", 1, "vae"), _run(tmp_path / "v8", 8, "vae"))


@pytest.mark.parametrize("mode, fsdp", [("jit", 4), ("pmap", 1)])
def test_eight_devices_agree_with_one(one_device, text, tmp_path, mode, fsdp):
  got = _run(tmp_path / mode, 8, overrides={"data.name": text, "parallel.mode": mode,
                                              "parallel.fsdp": fsdp,
                                              "parallel.fsdp_min_size": 64})
  _assert_same(one_device, got)


@pytest.mark.slow  # Two multi-device runs in subprocesses (60 s on 2 cores).
def test_restore_onto_fewer_devices_and_another_mesh(one_device, text, tmp_path):
  workdir = tmp_path / "run"
  common = {"data.name": text, "parallel.fsdp_min_size": 64}
  # 8 devices with every large leaf split 8 ways, stopped at step 2 as if preempted...
  _run(workdir, 8, overrides={**common, "parallel.fsdp": 8}, GEN_TEST_STOP_AT=2)
  # ...resumed on 4 devices, leaves split 2 ways: ends where the straight run ends.
  _assert_same(one_device, _run(workdir, 4, overrides={**common, "parallel.fsdp": 2}))


def test_two_processes_agree_with_one(one_device, text, tmp_path):
  _assert_same(one_device, _run(tmp_path / "two", 4, overrides={"data.name": text},
                                processes=2))


@pytest.mark.slow  # One process's SIGTERM handling is in tests/test_train.py's default run.
def test_sigterm_to_one_host_stops_every_host_at_the_same_step(text, tmp_path):
  workdir = tmp_path / "run"
  overrides = {"data.name": text, "train.num_steps": 100000, "train.checkpoint_every": 0,
               "train.log_every": 1}
  procs = _launch(workdir, 2, "lm", overrides, processes=2, GEN_TEST_SIGNALS=1)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
    assert time.time() < deadline and all(p.poll() is None for p in procs)
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)  # The other host is not told.
  logs = _wait(procs)
  stops = [int(l.split("every process stops at step ")[1].split()[0])
           for log in logs for l in log.splitlines() if "every process stops at step" in l]
  assert len(stops) == 2 and stops[0] == stops[1], logs
  step = stops[0]
  assert sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == [step]
  # Re-running the same command resumes there.
  logs = _wait(_launch(workdir, 2, "lm", overrides, processes=2, GEN_TEST_STOP_AT=step + 2))
  assert f"resumed from step {step}" in logs[0]
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert steps[-1] == step + 2


def test_fsdp_spec_splits_the_largest_divisible_dimension():
  assert parallel.fsdp_spec((64, 48), 4, 16) == P("fsdp", None)
  assert parallel.fsdp_spec((6, 64), 4, 16) == P(None, "fsdp")
  assert parallel.fsdp_spec((6, 10), 4, 16) == P()  # Nothing divisible: replicated.
  assert parallel.fsdp_spec((64,), 4, 1000) == P()  # Small: replicated.
  assert parallel.fsdp_spec((64, 64), 1, 0) == P()


def test_gradient_accumulation_matches_one_big_batch(text, tmp_path, caplog):
  common = {"data.name": text, "optim.ema_decay": 0.9}
  with caplog.at_level(logging.INFO, logger="gen"):
    big = train_lib.train(tiny_lm(**common, **{"data.batch_size": 8, "train.num_steps": 2}),
                          str(tmp_path / "big"), handle_signals=False)
  assert "memory per device: params" in caplog.text and "step temporaries" in caplog.text
  acc = train_lib.train(tiny_lm(**common, **{"data.batch_size": 4, "train.num_steps": 4,
                                             "optim.grad_accum_steps": 2}),
                        str(tmp_path / "acc"), handle_signals=False)
  # Two half batches averaged = one whole batch: same params and the same EMA.
  for x, y in zip(jax.tree.leaves((big.params, big.ema_params)),
                  jax.tree.leaves((acc.params, acc.ema_params))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
    train_lib.train(tiny_lm(**common, **{"optim.grad_accum_steps": 0}), str(tmp_path / "x"),
                    handle_signals=False)
