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

import attention as attention_bench  # noqa: E402
import compiler_options  # noqa: E402
import gpu  # noqa: E402
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


def test_blocked_attention_is_costed_whole(monkeypatch):
  """A DiT whose attention runs in blocks (forced here at 8x8 digits) holds loops: its train
  step's and sampler's FLOPs are XLA's of the same programs with the attention whole."""
  from gen.nn import attention

  config, spec, pipe = measure.load(config_path("diffusion", "digits.py"), [
      f"--config.{k}={v}" for k, v in {**TINY_DIFFUSION, "model.arch": "dit"}.items()])
  params = jax.jit(pipe.init)(jax.random.key(0), measure.random_batch(spec, 2, jax.random.key(1)))
  params = pipe.sample_params(params)

  def costs():
    step = train_step.bench(config, spec, pipe, 2)
    sample = sampling.diffusion(pipe, config, spec, params, "ddim", 3, 2)
    return step.reported, sample.corrected

  whole = costs()
  monkeypatch.setattr(attention, "BLOCKED_MIN_BYTES", 0)
  monkeypatch.setattr(attention, "BLOCKED_MIN_KEYS", 0)
  jax.clear_caches()
  step = jax.jit(lambda s, b, r: pipe.train_step(s, b, r)[0])
  batch = measure.random_batch(spec, 2, jax.random.key(2))
  state = jax.jit(pipe.init)(jax.random.key(0), batch)
  assert measure.model_loops(step.lower(state, batch, jax.random.key(1)).compile())
  blocked = costs()
  for a, b in zip(whole, blocked):
    assert a["flops"] == pytest.approx(b["flops"], rel=1e-6)


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
  sys.modules[spec.name] = module  # (Its dataclasses look their module up.)
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


@pytest.mark.slow
def test_peers_diffusion_real_shapes(capsys, monkeypatch):
  """--model=ddpm-cifar10 (the layout shrunk: written by diffusers, imported, the same params
  on both sides) and --model=dit-s2 (shrunk by overrides, which reach both sides)."""
  for name in ("torch", "diffusers", "transformers"):
    pytest.importorskip(name)
  peer = load_peer("diffusion")
  monkeypatch.setitem(peer.DDPM_CIFAR10, "sample_size", 8)
  monkeypatch.setitem(peer.DDPM_CIFAR10, "block_out_channels", (8, 8, 8, 8))
  monkeypatch.setitem(peer.DDPM_CIFAR10, "norm_num_groups", 4)
  flags = ["--steps=2", "--batch=2", "--train_batch=2", "--no_compile", "--repeats=1", "--json"]
  peer.main(["--model=ddpm-cifar10", *flags])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  (sample,), (train,) = out["sample"], out["train"]
  assert sample["our_params"] == sample["diffusers_params"]
  assert sample["ratio_eager"] > 0 and train["ratio_eager"] > 0 and train["batch"] == 2
  tiny = {"model.dit.dim": 16, "model.dit.depth": 2, "model.dit.heads": 2}
  peer.main(["--model=dit-s2", *flags, *(f"--config.{k}={v}" for k, v in tiny.items())])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  (sample,), (train,) = out["sample"], out["train"]
  # diffusers' second block has its own timestep MLP (16 x 256 + 16 x 16 + biases) and
  # label table (1001 x 16); ours share the first.
  extra = 256 * 16 + 16 + 16 * 16 + 16 + 1001 * 16
  assert sample["diffusers_params"] - sample["our_params"] == extra
  assert sample["ratio_eager"] > 0 and train["ratio_eager"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--model=sd-unet", "--widths=32,32,32,32", "--heads=2", "--size=16", "--batch=1"],
    ["--model=llama", "--layers=1", "--seq=8", "--batch=1"]])
def test_peers_train_profile(capsys, flags):
  """The train-step profile at tiny shapes: every phase, the same layer calls recorded on
  both sides, torch's op groups."""
  for name in ("torch", "diffusers", "transformers"):
    pytest.importorskip(name)
  load_peer("train_profile").main([*flags, "--repeats=1", "--json"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert [r["phase"] for r in out["phases"]] == ["forward", "forward + backward", "step",
                                                  "update"]
  assert all(r["ours_ms"] > 0 and r["theirs_ms"] > 0 for r in out["phases"])
  assert out["our_params"] == out["their_params"]
  pieces = {r["kind"]: r for r in out["pieces"]}
  same = ("resnet block", "transformer block", "conv", "GroupNorm", "attention", "attention core",
          "LayerNorm") if "sd-unet" in flags[0] else ("decoder layer", "attention", "RMSNorm",
                                                      "MLP (SwiGLU)", "attention core")
  for kind in same:  # The same calls on both sides.
    assert pieces[kind]["ours_calls"] == pieces[kind]["theirs_calls"] > 0, kind
    assert pieces[kind]["ours_forward_backward_ms"] > 0 < pieces[kind]["theirs_forward_ms"]
  assert sum(out["torch_ops"]["groups_ms"].values()) > 0 and out["torch_ops"]["top_ops"]


@pytest.mark.slow
def test_peers_stable_diffusion(capsys):
  """The text-to-image peer script at a tiny size: both sides run, the images agree."""
  for name in ("torch", "diffusers", "transformers"):
    pytest.importorskip(name)
  load_peer("stable_diffusion").main(["--size=64", "--steps=2", "--batch=1", "--repeats=1",
                                      "--no_compile", "--json"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  (row,) = out["rows"]
  assert row["ratio_eager"] > 0 and row["max_abs_diff"] < 1e-4 and out["params"] > 1e6


# The accelerator run's imports that a GPU machine lacks and gpu.py does without: data
# libraries (grain gets a placeholder), music and logging extras.
ABSENT_ON_GPU_MACHINES = ("grain", "array_record", "tensorflow_datasets", "mido", "tensorboardX")
LAUNCH_WITHOUT = """
import importlib.machinery, runpy, sys
class Absent:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {absent!r}:
      spec = importlib.machinery.PathFinder.find_spec(name, path)
      if spec is not None and "site-packages" in (spec.origin or ""):
        raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)")
    return None
sys.meta_path.insert(0, Absent())
sys.argv = ["benchmarks/gpu.py", *{argv!r}]
runpy.run_path("benchmarks/gpu.py", run_name="__main__")
"""


def test_gpu_script_smoke(tmp_path):
  """benchmarks/gpu.py --smoke end to end in a fresh process, without the packages a GPU
  machine lacks: every step runs, the JSON holds every figure and the table every goal."""
  import subprocess

  out = tmp_path / "out"
  code = LAUNCH_WITHOUT.format(absent=ABSENT_ON_GPU_MACHINES,
                               argv=["--smoke", f"--out={out}"])
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "[gpu.py" in proc.stdout and "tests done" in proc.stdout  # Progress as it goes.
  report = json.loads((out / "gpu.json").read_text())
  assert report["smoke"] and not report["errors"]
  assert report["imports"]["grain"].startswith("missing") and "placeholder" in \
      report["imports"]["grain"]
  assert report["imports"]["gen"] == os.path.join(ROOT, "gen")
  res = report["results"]
  peak = res["peaks"]
  assert peak["dtype"] == "bfloat16" and peak["matmul_flops_per_s"] > 0
  # Decoding: batch 1 and 4, the context filled; the weights are read once per step for
  # every row, so a token of the larger batch needs fewer bytes.
  d1, d4 = res["decode"]
  assert (d1["batch"], d4["batch"]) == (1, 4) and d1["new_tokens"] == 15
  assert d4["min_bytes_per_token"] < d1["min_bytes_per_token"]
  for r in (d1, d4):
    assert r["tokens_per_s"] > 0 and r["attention"].startswith("cache einsums")
    assert r["frac_roofline"] == pytest.approx(r["tokens_per_s"] / r["roofline_tokens_per_s"])
  # No cuDNN on a CPU: the fallback ran and says why.
  (train,) = res["train"]
  assert train["attention"] == "xla" and "cuDNN" in train["attention_cudnn_error"]
  assert train["attention_calls"] > 0 and 0 < train["mfu"] and train["tokens_per_s"] > 0
  for arch in ("unet", "dit"):
    (row,) = res[f"sample_{arch}"]
    assert (row["arch"], row["dtype"], row["sampler"], row["nfe"], row["batch"]) == (
        arch, "bfloat16", "ddim", 3, 4)
    assert row["images_per_s"] > 0 and row["attention"] == "xla" and row["mfu"] > 0
    # The network's FLOPs times 3 evaluations: most of what XLA counts in the sampler.
    assert 0.5 * row["flops_per_item"] < row["model_flops_per_item"] <= row["flops_per_item"]
  # Stable Diffusion's shapes (tiny here): the text-to-image program and its FLOPs.
  (sd,) = res["sample_sd"]
  assert (sd["batch"], sd["steps"], sd["dtype"]) == (1, 2, "bfloat16")
  assert sd["images_per_s"] > 0 and 0 < sd["mfu"] and sd["model_flops_per_item"] > 2 * sd[
      "unet_flops_per_call"]
  # Llama-3.2-1B's shape (tiny here: 2 layers, 4 query heads sharing 2 key/value heads of
  # 8): the cache bytes a step must read count the 2 key/value heads, not the 4 query heads.
  l1, l4 = res["llama_decode"]
  assert (l1["batch"], l4["batch"], l1["new_tokens"]) == (1, 4, 15)
  mean_pos = 1 + 16 / 2
  cache = (4 * l4["min_bytes_per_token"] - l1["min_bytes_per_token"]) / 3  # Bytes a row.
  assert cache == pytest.approx(2 * 2 * 2 * 8 * mean_pos * 2)
  (lt,) = res["llama_train"]
  assert (lt["batch"], lt["seq_len"]) == (2, 16) and lt["mfu"] > 0 and lt["tokens_per_s"] > 0
  tests = res["tests"]
  assert tests["returncode"] == 0 and tests["skipped"] == len(tests["tests"]) >= 4
  assert {t["test"].split("[")[0] for t in tests["tests"]} >= {
      "test_train_step_losses_match_the_cpu", "test_samplers_compile_without_the_cpu_options",
      "test_cached_decoding_matches_full_recomputation_on_the_accelerator"}
  goals = {g["section"]: g for g in report["goals"]}
  assert set(goals) == {"decode", "train", "sample_unet", "sample_dit", "tests"}
  assert goals["decode"]["value"] == d1["frac_roofline"] and goals["decode"]["goal"] == 0.6
  assert goals["tests"]["status"] == "not run (all skipped)"
  md = (out / "gpu.md").read_text()
  assert "SMOKE" in md and "| workload | setting |" in md
  for g in report["goals"][:4]:
    assert g["status"] == ("met" if g["value"] >= g["goal"] else "missed")
    row = next(line for line in md.splitlines()
               if line.startswith(f"| {gpu.TITLES[g['section']]} ") and "%" in line)
    assert row.rstrip().endswith(f"| {g['status']} |") and f"{g['value']:.3f}" in row
  missed = [g for g in report["goals"] if g["status"] == "missed"]
  assert md.count("| missed |") == len(missed)


def test_attention_benchmark_times_every_form_and_checks_it(capsys):
  """`benchmarks/attention.py` times jax's, gen's, the whole and the blocked forms (torch's
  where installed) and reports each one's distance to jax's output, unmasked and causal."""
  attention_bench.main(["--shapes=1,8,2,4,8;1,8,2,4,3", "--blocks=1x4,2x8,2x3",
                        "--repeats=1", "--json"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  first, cross = out["results"]
  assert first["shape"] == [1, 8, 2, 4, 8]
  assert {"jax", "gen", "whole", "1x4", "2x8"} <= first["forms"].keys()
  assert "2x3" not in first["forms"]  # 3 does not divide 8 queries.
  for r in (first, cross):
    for name, row in r["forms"].items():
      assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0
      if name != "torch":
        assert row["max_abs_err"] < 1e-5, (name, row)
  # Causal, with two key/value heads shared by four query heads, against jax's causal.
  attention_bench.main(["--causal", "--shapes=1,8,4,4,8,2", "--blocks=2x4", "--repeats=1",
                        "--json"])
  (causal,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
  assert causal["causal"] and {"jax", "gen", "whole", "2x4"} <= causal["forms"].keys()
  for name, row in causal["forms"].items():
    if name != "torch":
      assert row["max_abs_err"] < 1e-5, (name, row)
