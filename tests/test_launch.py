"""launch/: the dry runs print the commands a job would run; local.sh runs one for real."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_VAE, config_path

LAUNCH = os.path.join(ROOT, "launch")


def _sh(*args, env=None):
  return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, **(env or {})})


def test_local_dry_run_starts_one_process_per_id_with_one_coordinator():
  out = _sh(f"{LAUNCH}/local.sh", "--dry-run", "-n", "3", "--cpu_devices=4", "--",
            "--config=configs/vae/digits.py", "--workdir=runs/a b",
            env={"GEN_COORDINATOR_PORT": "23456"})
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert line.startswith("env JAX_PLATFORMS=cpu "
                           "XLA_FLAGS=--xla_force_host_platform_device_count=4 gen train ")
    assert r"--workdir=runs/a\ b" in line  # Flags are passed on quoted.
    assert (f"--coordinator=127.0.0.1:23456 --num_processes=3 --process_id={i} "
            "--coordinator_bind=127.0.0.1:23456") in line
  assert _sh(f"{LAUNCH}/local.sh", "--dry-run").returncode == 2  # No gen train flags.


@pytest.mark.slow  # Two processes agreeing with one: tests/test_parallel.py in the default run.
def test_local_runs_two_processes_that_train_together(tmp_path):
  flags = {**TINY_VAE, "train.num_steps": 2, "data.batch_size": 4, "data.eval_batch_size": 4}
  workdir = tmp_path / "run"
  out = _sh(f"{LAUNCH}/local.sh", "-n", "2", "--cpu_devices=2", "--",
            f"--config={config_path('vae', 'digits.py')}", f"--workdir={workdir}",
            *[f"--config.{k}={v}" for k, v in flags.items()],
            env={"GEN": f"{sys.executable} -m gen.cli", "GEN_COMPILATION_CACHE":
                 os.environ["JAX_COMPILATION_CACHE_DIR"]})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "process 1 of 2, 2 local / 4 global devices" in out.stderr
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [l["step"] for l in lines if l["split"] == "train"] == [1, 2]  # Process 0 wrote.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]


def test_tpu_vm_dry_run():
  zone = "--zone=us-central2-b"
  out = _sh(f"{LAUNCH}/tpu_vm.sh", "--dry-run", "create", "pod", zone, "--type=v4-32", "--spot")
  assert out.stdout.strip() == ("gcloud compute tpus tpu-vm create pod --zone=us-central2-b "
                                "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot")
  out = _sh(f"{LAUNCH}/tpu_vm.sh", "--dry-run", "setup", "pod", zone)
  cmds = out.stdout.strip().splitlines()
  assert cmds[0].startswith("git -C") and "archive" in cmds[0]
  assert cmds[1].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in cmds[1]
  assert "--worker=all" in cmds[2] and "install" in cmds[2] and "tpu" in cmds[2]
  out = _sh(f"{LAUNCH}/tpu_vm.sh", "--dry-run", "train", "pod", zone, "--",
            "--config=configs/lm/gpt2_124m.py", "--workdir=gs://bucket/run")
  line = out.stdout.strip()
  assert line.startswith("gcloud compute tpus tpu-vm ssh pod --zone=us-central2-b "
                         "--worker=all --command=")
  for part in ("gen\\ train", "--workdir=gs://bucket/run", "--coordinator=auto"):
    assert part in line
  out = _sh(f"{LAUNCH}/tpu_vm.sh", "--dry-run", "delete", "pod", zone)
  assert out.stdout.strip() == ("gcloud compute tpus tpu-vm delete pod --zone=us-central2-b "
                                "--quiet")
  bad = _sh(f"{LAUNCH}/tpu_vm.sh", "--dry-run", "create", "pod", "--type=v4-8")
  assert bad.returncode == 2 and "--zone" in bad.stderr


def test_slurm_dry_run_puts_the_coordinator_on_the_first_node():
  out = _sh(f"{LAUNCH}/slurm.sbatch", "--dry-run", "--config=configs/lm/gpt2_124m.py",
            "--workdir=/shared/run")
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == (
      "srun --kill-on-bad-exit=1 bash -c '.venv/bin/gen train "
      "--config=configs/lm/gpt2_124m.py --workdir=/shared/run --coordinator=node01:29500 "
      "--num_processes=16 --process_id=$SLURM_PROCID'")
