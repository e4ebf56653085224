"""The benchmark scripts on tiny configs: the fields they print, their profiles, and the
loop correction of XLA's cost analysis. The PyTorch peers run only where torch, diffusers
and transformers are installed (the `peers` extra)."""

import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest
from conftest import ROOT, TINY_DIFFUSION, TINY_LM, TINY_PIXELCNN, config_path

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import compiler_options  # noqa: E402
import measure  # noqa: E402
import sampling  # noqa: E402
import trace_summary  # noqa: E402
import train_step  # noqa: E402

FIELDS = ("compile_s", "seconds", "xla_flops", "flops_per_item", "bytes_per_item",
          "flops_per_s", "bytes_per_s", "frac_peak_flops", "frac_peak_bytes")


@pytest.fixture(autouse=True)
def small_peaks(monkeypatch):
  real = measure.peaks
  monkeypatch.setattr(measure, "peaks", lambda dtype=jnp.float32: real(dtype, n=256, mib=4,
                                                                        repeats=1))


def argv(config, tiny, *flags):
  return [f"--config={config_path(*config.split('/'))}", "--json", "--repeats=1", *flags,
          *(f"--config.{k}={v}" for k, v in tiny.items())]


def run_json(main, args, capsys):
  main(args)
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["peak"]["matmul_flops_per_s"] > 0 and out["peak"]["copy_bytes_per_s"] > 0
  assert {"device", "cpu", "jax", "load_avg"} <= out.keys()
  return out["results"]


def test_loop_correction_counts_every_trip():
  n, trips = 64, 7
  a = jnp.ones((n, n))
  one = measure.cost(jax.jit(lambda x: x @ a).lower(a).compile())
  looped = jax.jit(lambda x, k: jax.lax.fori_loop(0, k, lambda i, x: x @ a, x))
  reported = measure.cost(looped.lower(a, trips).compile())
  assert one["flops"] == 2 * n**3
  assert reported["flops"] == pytest.approx(one["flops"], rel=1e-3)  # The body, once.
  fixed = measure.loop_corrected(reported, [(one, trips)])
  assert fixed["flops"] == pytest.approx(trips * one["flops"], rel=1e-3)
  assert fixed["bytes"] > (trips - 1) * one["bytes"]


def test_sampling_diffusion(capsys):
  rows = run_json(sampling.main, argv("diffusion/digits.py", TINY_DIFFUSION, "--batch=2",
                                      "--samplers=ddim:3,heun:2"), capsys)
  assert [(r["sampler"], r["nfe"]) for r in rows] == [("ddim", 3), ("heun", 3)]
  for r in rows:
    assert set(FIELDS) <= r.keys() and r["images_per_s"] > 0
  # Both run 3 network evaluations of about the same cost; XLA alone saw 1 and 3.
  assert rows[0]["flops_per_item"] == pytest.approx(rows[1]["flops_per_item"], rel=0.05)
  assert rows[0]["xla_flops"] < 0.5 * rows[1]["xla_flops"]


def test_sampling_lm(capsys):
  rows = run_json(sampling.main, argv("lm/shakespeare_char_cpu.py", TINY_LM, "--batch=1,2",
                                      "--steps=4"), capsys)
  assert [(r["batch"], r["new_tokens"]) for r in rows] == [(1, 4), (2, 4)]
  for r in rows:
    assert set(FIELDS) <= r.keys() and r["tokens_per_s"] > 0
    assert r["flops_per_item"] * 4 * r["batch"] > 3 * r["xla_flops"]  # 4 trips, not 1.


def test_sampling_pixelcnn(capsys):
  rows = run_json(sampling.main, argv("pixelcnn/digits.py", TINY_PIXELCNN, "--batch=2",
                                      "--samplers=fast,naive"), capsys)
  fast, naive = rows
  assert fast["images_per_s"] > 0 and naive["images_per_s"] > 0
  assert naive["flops_per_item"] > 2 * fast["flops_per_item"]


@pytest.mark.parametrize("config,tiny,unit", [("lm/shakespeare_char_cpu.py", TINY_LM, "tokens"),
                                               ("diffusion/digits.py", TINY_DIFFUSION,
                                                "examples")])
def test_train_step(capsys, tmp_path, config, tiny, unit):
  row, = run_json(train_step.main, argv(config, tiny, f"--profile={tmp_path}"), capsys)
  kinds = dict(trace_summary.summary(str(tmp_path)))
  assert kinds and all(ms >= 0 for ms in kinds.values())
  assert set(FIELDS) <= row.keys()
  assert row["steps_per_s"] > 0 and row[f"{unit}_per_s"] > 0
  assert row["batch"] == tiny["data.batch_size"]
  if unit == "tokens":
    assert 0 < row["mfu"] and row["model_flops_per_item"] > 0


@pytest.mark.parametrize("work", [pytest.param("train", marks=pytest.mark.slow), "sample"])
def test_compiler_options_times_every_variant(capsys, work):
  args = argv("diffusion/digits.py", TINY_DIFFUSION, f"--work={work}")
  compiler_options.main(args)
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  rows = {r["variant"]: r for r in out["results"]}
  assert list(rows) == ["default", "pipeline", "dot", "dot+reduce", "none"]
  assert rows["default"]["speedup"] == 1.0 and all(r["ms"] > 0 for r in rows.values())
  from gen.core.xla import CONVNET_CPU
  assert rows["pipeline"]["options"] == dict(CONVNET_CPU)
  with pytest.raises(SystemExit, match="image families"):
    compiler_options.main(argv("lm/shakespeare_char_cpu.py", TINY_LM, "--work=sample"))


def load_peer(name):
  """A peers script as a module (its folder first on the path, as when it is run)."""
  folder = os.path.join(ROOT, "benchmarks", "peers")
  sys.path.insert(0, folder)
  spec = importlib.util.spec_from_file_location(f"peer_{name}", os.path.join(folder, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_peers(capsys):
  for name in ("torch", "diffusers", "transformers"):
    pytest.importorskip(name)
  load_peer("lm").main(argv("lm/shakespeare_char_cpu.py", TINY_LM, "--batch=1"))
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["decode"][0]["ratio"] > 0 and out["train"][0]["ratio_eager"] > 0
  load_peer("diffusion").main(argv("diffusion/digits.py", TINY_DIFFUSION, "--steps=2",
                                   "--batch=2", "--no_compile"))
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["sample"][0]["ratio_eager"] > 0 and out["train"][0]["ratio_eager"] > 0
