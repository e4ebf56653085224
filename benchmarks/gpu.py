"""Every accelerator goal in one run, on whatever accelerator JAX sees.

  python benchmarks/gpu.py [--out=DIR] [--repeats=N] [--no_tests]
  python benchmarks/gpu.py --smoke --out=DIR    # the same code at tiny shapes, on a CPU
  bash benchmarks/gpu.sh                        # a GPU machine without gen installed

In order, each compiled once and timed with the median of a few calls (`measure`):
1. peaks: a bf16 matmul's FLOP/s and a bf16 copy's bytes/s (read + write), measured;
2. GPT-2-124M (configs/lm/gpt2_124m.py, bf16) decoding at batch 1 and 64, filling the
   context from a 1-token prompt: tokens/s and the fraction of the bandwidth roofline
   (goal >= 60% at batch 1);
3. its train step at the config's batch: tokens/s and MFU (goal >= 50%);
4. the CIFAR-10 UNet and DiT (configs/diffusion/cifar10.py, model.dtype=bfloat16)
   sampling with DDIM, 50 steps, batch 256: images/s and the fraction of the bf16 matmul
   peak (goal >= 50%);
5. Stable Diffusion 1.5's shapes (gen's text_to_image kind, constant weights, bf16), 512x512,
   DPM-Solver++(2M) 20 steps with classifier-free guidance at batch 1 and 4, the text
   encoder, the guided loop and the VAE decode in one program: images/s and the fraction
   of the bf16 matmul peak (no goal yet);
6. Llama-3.2-1B's shape (16 layers, width 2048, 32 query heads sharing 8 key/value heads,
   SwiGLU 8192, vocabulary 128256, tied embeddings, llama3 RoPE scaling; random weights,
   as `gen import` builds that config.json), bf16: decoding at batch 1 and 64 over a
   1024-position cache, tokens/s and the fraction of the bandwidth roofline; its train step
   (batch 8 x 1024, AdamW, float32 params), tokens/s and MFU (no goals yet);
7. the `gpu`-marked tests (tests/test_gpu.py) in a child pytest;
8. every figure in DIR/gpu.json and a table in DIR/gpu.md (goals met or missed), both
   rewritten after each step so that a run cut short keeps what it measured. DIR is
   --out, else $OUT, else runs/gpu.

Attention: the train step and the samplers are compiled with
`jax.nn.dot_product_attention(implementation="cudnn")` first and, if that does not
compile (not a GPU, or shapes / dtypes cuDNN's kernel does not take), with "xla"; each
result names the implementation that ran and why the other did not. Decoding attends to
its cache with two einsums (`gen.nn.attention.cached_attention`), not this function.

Figures (see benchmarks/README.md): `frac_roofline` divides decoding's tokens/s by the
tokens/s the measured copy bandwidth allows when each step reads only what it must: every
weight once in the compute dtype (one row of the position table) and each row's
key/value cache (its key/value heads) up to its position, on average over the run. `mfu` is model FLOPs over
the matmul peak: for the LMs 6 N + 12 L T d per token (d: heads x head width) (`train_step.py`), for a sampler
the network's FLOPs on one batch (XLA's count of the program with XLA attention) times
the network evaluations. XLA's own counts (`frac_peak_flops`, `frac_peak_bytes`) are in
the JSON too; they miss what runs in cuDNN's custom calls.

Nothing here reads data, so the input pipeline's `grain` may be missing: a placeholder
module that raises on use stands in (recorded under `imports`). `ml_collections`
(configs) is needed; `gpu.sh` installs carried wheels of both.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LM_CONFIG = os.path.join(ROOT, "configs", "lm", "gpt2_124m.py")
DIFFUSION_CONFIG = os.path.join(ROOT, "configs", "diffusion", "cifar10.py")
FULL = {"decode_batches": (1, 64), "train_batch": 0, "sample_batch": 256, "ddim_steps": 50,
        "repeats": 3, "peaks": {}, "sd": {"size": 512, "batches": (1, 4), "steps": 20},
        "llama_seq": 1024, "llama_decode_batches": (1, 64), "llama_train_batch": 8}
# The same code at shapes that compile and run in seconds on a CPU (8x8 images for the
# diffusion models: the CIFAR-10 shape's convolutions compile slowly on XLA:CPU).
SMOKE = {"decode_batches": (1, 4), "train_batch": 2, "sample_batch": 4, "ddim_steps": 3,
         "repeats": 1, "peaks": {"n": 256, "mib": 4, "repeats": 1},
         "sd": {"size": 16, "batches": (1,), "steps": 2},
         "llama_seq": 16, "llama_decode_batches": (1, 4), "llama_train_batch": 2}
# Stable Diffusion's networks at tiny sizes for --smoke (model.text_to_image keys).
SMOKE_SD = {
    "text_encoder": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2},
    "vae": {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4},
    "unet": {"block_out_channels": (8, 16), "down_block_types": ("CrossAttnDownBlock2D",
                                                                 "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "attention_head_dim": (2, 2),
             "layers_per_block": (1, 1), "transformer_layers_per_block": (1, 1),
             "cross_attention_dim": 16, "norm_num_groups": 4}}
SMOKE_LM = {"model.num_layers": 2, "model.num_heads": 2, "model.width": 32,
            "data.seq_len": 16, "data.vocab_size": 64}
SMOKE_DIFFUSION = {"data.name": "digits", "model.unet.channels": 8,
                   "model.unet.channel_mult": (1,), "model.unet.num_res_blocks": 1,
                   "model.unet.attn_resolutions": (),
                   "model.unet.heads": 2, "model.unet.groups": 4, "model.dit.dim": 16,
                   "model.dit.depth": 1, "model.dit.heads": 2, "model.dit.patch": 4}
# Llama-3.2-1B's config.json, as gen.lm.hf_llama.read_config gives it; tiny for --smoke.
LLAMA_1B = {"kind": "llama", "arch": "LlamaForCausalLM", "vocab_size": 128256,
            "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
            "max_position_embeddings": 131072, "norm_eps": 1e-5, "tied": True,
            "use_bias": False, "qkv_bias": False, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192},
            "config_ids": {}}
SMOKE_LLAMA = {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "head_dim": 8}
# (section, row selector, figure, goal): the accelerator goals of benchmarks/README.md.
GOALS = [("decode", {"batch": 1}, "frac_roofline", 0.60),
         ("train", {}, "mfu", 0.50),
         ("sample_unet", {}, "mfu", 0.50),
         ("sample_dit", {}, "mfu", 0.50)]
TITLES = {"decode": "GPT-2-124M decoding", "train": "GPT-2-124M train step",
          "sample_unet": "CIFAR-10 UNet, DDIM", "sample_dit": "CIFAR-10 DiT, DDIM",
          "sample_sd": "Stable Diffusion 1.5 shapes, text to image",
          "llama_decode": "Llama-3.2-1B decoding", "llama_train": "Llama-3.2-1B train step"}
GRAIN_STUB = '''"""Placeholder for grain: gen's benchmarks read no data (benchmarks/gpu.py)."""


def __getattr__(name):
  raise ImportError(f"grain is not installed here (grain.{name} was asked for)")
'''

T0 = time.perf_counter()


def log(msg: str) -> None:
  print(f"[gpu.py {time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def prepare_imports() -> dict:
  """Puts gen (this checkout) on the path and, where grain is missing, a placeholder for
  it (also for the child pytest, through PYTHONPATH). Returns what was imported how."""
  for path in (HERE, ROOT):
    if path not in sys.path:
      sys.path.insert(0, path)
  os.environ["PYTHONPATH"] = os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
  out = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "ml_collections", "grain"):
    try:
      module = importlib.import_module(name)
      out[name] = getattr(module, "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - any import failure is reported.
      out[name] = f"missing ({type(e).__name__}: {e})"
      if name == "grain":
        stub = tempfile.mkdtemp(prefix="gen-stub-")
        os.makedirs(os.path.join(stub, "grain"))
        with open(os.path.join(stub, "grain", "__init__.py"), "w") as f:
          f.write(GRAIN_STUB)
        sys.modules.pop("grain", None)
        sys.path.insert(0, stub)
        os.environ["PYTHONPATH"] = stub + os.pathsep + os.environ["PYTHONPATH"]
        out[name] += "; a placeholder stands in"
  import gen
  out["gen"] = os.path.dirname(os.path.abspath(gen.__file__))  # This checkout's, or another?
  return out


# ----------------------------------------------------------------------- attention


@contextlib.contextmanager
def attention(impl: str):
  """`jax.nn.dot_product_attention` with `implementation=impl` while programs are traced
  (callers that name one keep theirs), and gen's own (`gen.nn.attention`, which computes it
  itself on CPU) through it; yields a list that counts the calls."""
  import jax

  from gen.nn import attention as gen_attention

  real, real_gen, calls = jax.nn.dot_product_attention, gen_attention.dot_product_attention, []

  def patched(*args, **kwargs):
    calls.append(1)
    kwargs.setdefault("implementation", impl)
    return real(*args, **kwargs)

  jax.nn.dot_product_attention = patched
  gen_attention.dot_product_attention = patched
  try:
    yield calls
  finally:
    jax.nn.dot_product_attention = real
    gen_attention.dot_product_attention = real_gen


def with_attention(build):
  """`build()` traced with cuDNN attention, else with XLA's: (its result, a note). A
  result with a `run` (a `measure.Bench`) is run once before it counts as built."""
  import jax

  note = {}
  for impl in ("cudnn", "xla"):
    try:
      with attention(impl) as calls:
        out = build()
      if hasattr(out, "run"):
        jax.block_until_ready(out.run())
    except Exception as e:  # cuDNN refuses in many ways; XLA is the fallback.
      if impl == "xla":
        raise
      note["attention_cudnn_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      gc.collect()
      continue
    note["attention"] = impl if calls else "none (no dot_product_attention call)"
    note["attention_calls"] = len(calls)
    return out, note
  raise AssertionError("unreachable")


# ------------------------------------------------------------------------ the steps


def step_peaks(run):
  import jax.numpy as jnp
  import measure

  run.peak = measure.peaks(jnp.bfloat16, **run.shapes["peaks"])
  return run.peak


def decode_roofline(config, spec, params, row: dict, peak: dict) -> dict:
  """The fewest bytes a decoding step reads and the tokens/s the copy bandwidth allows."""
  import measure

  m, ctx = config.model, spec.shape[0]
  itemsize = measure.dtype_of(config).itemsize
  weights = sum(x.size for x in _leaves(params))
  if m.positions == "learned":
    weights -= (ctx - 1) * m.width  # One row of the position table per step.
  kv_width = (m.num_kv_heads or m.num_heads) * (m.head_dim or m.width // m.num_heads)
  mean_pos = row["prompt_len"] + (row["new_tokens"] + 1) / 2  # Positions attended to.
  step_bytes = itemsize * (weights + row["batch"] * 2 * m.num_layers * kv_width * mean_pos)
  roofline = row["batch"] * peak["copy_bytes_per_s"] / step_bytes
  return {"min_bytes_per_token": step_bytes / row["batch"], "roofline_tokens_per_s": roofline,
          "frac_roofline": row["tokens_per_s"] / roofline}


def _leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def init_params(pipe, spec):
  """Random sampling params, initialized by one compiled program (the counter-based
  `unsafe_rbg` generator: threefry's makes XLA:CPU compile a UNet's init for tens of
  seconds; the values do not matter to the speed)."""
  import jax

  state = jax.jit(pipe.init)(jax.random.key(0, impl="unsafe_rbg"), spec.example_batch(1))
  return pipe.sample_params(state)


def llama_parts(run):
  """(config, spec, pipeline) of Llama-3.2-1B's shape in bf16, float32 params; tiny for
  --smoke."""
  from gen.lm import hf_llama, make
  from gen.lm.data import token_spec

  a = {**LLAMA_1B, **(SMOKE_LLAMA if run.smoke else {})}
  seq = run.shapes["llama_seq"]
  config = hf_llama.workdir_config(a, seq)
  config.model.dtype = "bfloat16"
  config.data.batch_size = run.shapes["llama_train_batch"]
  config.sample.temperature, config.sample.top_k = 0.0, 0  # Greedy.
  spec = token_spec(seq, vocab_size=a["vocab_size"])
  return config, spec, make(config, spec)


def step_decode(run, llama: bool = False):
  import measure
  import sampling

  config, spec, pipe = llama_parts(run) if llama else measure.load(LM_CONFIG,
                                                                   run.lm_overrides())
  params = init_params(pipe, spec)
  rows, sc = [], config.sample
  for batch in run.shapes["llama_decode_batches" if llama else "decode_batches"]:
    bench, note = with_attention(lambda b=batch: sampling.lm(
        pipe, config, spec, params, b, spec.shape[0] - 1, 1, temperature=sc.temperature,
        top_k=sc.top_k, top_p=sc.top_p))
    row = {**bench.measure(run.repeats, run.peak), **note}
    if row["attention"].startswith("none"):
      row["attention"] = "cache einsums (gen.nn.attention.cached_attention)"
    row.update(decode_roofline(config, spec, params, row, run.peak))
    log(f"  decode batch {batch}: {row['tokens_per_s']:.4g} tokens/s, "
        f"{row['frac_roofline']:.3f} of the roofline")
    rows.append(row)
    del bench
    gc.collect()
  return rows


def step_train(run, llama: bool = False):
  import measure
  import train_step

  config, spec, pipe = llama_parts(run) if llama else measure.load(LM_CONFIG,
                                                                   run.lm_overrides())
  bench, note = with_attention(
      lambda: train_step.bench(config, spec, pipe, run.shapes["train_batch"] or None))
  seconds = measure.median_time(bench.run, run.repeats)
  row = {**train_step.result(bench, seconds, run.peak), **note}
  log(f"  train: {row['tokens_per_s']:.4g} tokens/s, MFU {row['mfu']:.3f} "
      f"(attention: {row['attention']})")
  return [row]


def network_flops(config, spec, params, batch: int) -> float:
  """XLA's FLOPs of one network evaluation on `batch` images, XLA attention."""
  import jax
  import jax.numpy as jnp

  from gen.diffusion import denoiser as diffusion_denoiser

  net = diffusion_denoiser.parts(config, spec)[0]
  x = jnp.zeros((batch,) + tuple(spec.shape))
  cond, labels = jnp.ones((batch,)), jnp.zeros((batch,), jnp.int32)
  with attention("xla"):
    lowered = jax.jit(lambda p, x: diffusion_denoiser.apply_fn(net, p)(x, cond, labels)).lower(
        params, x)
  try:  # The unoptimized program's count: no compilation needed.
    ca = lowered.cost_analysis()
  except Exception:  # noqa: BLE001 - a backend without it: compile.
    ca = lowered.compile().cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0]
  return float(ca["flops"])


def step_sample(run, arch: str):
  import measure
  import sampling

  config, spec, pipe = measure.load(DIFFUSION_CONFIG, run.diffusion_overrides(arch))
  params = init_params(pipe, spec)
  batch, steps = run.shapes["sample_batch"], run.shapes["ddim_steps"]
  bench, note = with_attention(
      lambda: sampling.diffusion(pipe, config, spec, params, "ddim", steps, batch))
  row = {"arch": arch, "dtype": config.model.dtype, **bench.measure(run.repeats, run.peak),
         **note}
  row["model_flops_per_item"] = row["nfe"] * network_flops(config, spec, params, batch) / batch
  row["mfu"] = row["model_flops_per_item"] * row["images_per_s"] / run.peak["matmul_flops_per_s"]
  row["params"] = sum(x.size for x in _leaves(params))
  log(f"  {arch}: {row['images_per_s']:.4g} images/s, {row['mfu']:.3f} of the bf16 peak "
      f"(attention: {row['attention']})")
  return [row]


def sd_config(run):
  """gen's text_to_image kind at Stable Diffusion 1.5's shapes (its default_config), bf16,
  on SD's scaled_linear table; at tiny shapes for --smoke."""
  from gen.diffusion.config import default_config

  c = default_config()
  c.model.kind, c.model.dtype, c.train.num_steps = "text_to_image", "bfloat16", 0
  c.diffusion.objective, c.diffusion.schedule, c.diffusion.sampler = "eps", "discrete", \
      "dpmpp_2m"
  c.diffusion.discrete.update({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                               "beta_end": 0.012, "steps_offset": 1})
  if run.smoke:
    for part, fields in SMOKE_SD.items():
      c.model.text_to_image[part].update(fields)
  return c


def step_sd(run):
  """Stable Diffusion 1.5's shapes: constant weights (the values do not change the speed),
  77 token ids per prompt, guidance 7.5 (a UNet batch of 2 x batch per step)."""
  import jax
  import jax.numpy as jnp
  import measure

  from gen.core.family import DataSpec
  from gen.diffusion import text_to_image

  s = run.shapes["sd"]
  config = sd_config(run)
  size = s["size"]
  spec = DataSpec((size, size, 3), 0, "scale", "image",
                  {"image": ((size, size, 3), "float32"), "ids": ((77,), "int32")})
  pipe = text_to_image.make(config, spec)
  sd = text_to_image.networks_of(config, spec)
  params = pipe.sample_params(jax.jit(pipe.init)(jax.random.key(0), spec.example_batch(1)))
  params = jax.tree.map(lambda x: x + 0.02, params)  # (Zeros would do; small values.)
  vocab = config.model.text_to_image.text_encoder.vocab_size
  rows = []
  for batch in s["batches"]:
    ids = (jnp.arange(batch * 77, dtype=jnp.int32).reshape(batch, 77) * 7919) % vocab
    neg = jnp.zeros_like(ids)
    rng = jax.random.key(1)

    def fn(p, r, i, n, b=batch):
      return pipe.sample(p, r, b, ids=i, negative_ids=n, sampler="dpmpp_2m",
                         steps=s["steps"], guidance=7.5)

    def build(b=batch, i=ids, n=neg):
      compiled, compile_s = measure.compile_timed(fn, params, rng, i, n,
                                                  options=pipe.compiler_options)
      return measure.Bench({"sampler": "dpmpp_2m", "steps": s["steps"], "batch": b,
                            "size": size}, lambda: compiled(params, rng, i, n), b, "images",
                           compile_s, measure.cost(compiled), measure.cost(compiled))

    bench, note = with_attention(build)
    row = {"dtype": config.model.dtype, **bench.measure(run.repeats, run.peak), **note}
    h = size // (sd.image_shape[0] // sd.latent_shape[0])
    unet = _lowered_flops(lambda p, x, c: sd.unet.apply({"params": p["unet"]}, x, 500.0, c),
                          params, jnp.zeros((2 * batch, h, h, sd.latent_shape[2])),
                          jnp.zeros((2 * batch, 77, sd.text_encoder.hidden_size)))
    text = _lowered_flops(lambda p, i: sd.text_encoder.apply({"params": p["text_encoder"]}, i),
                          params, jnp.concatenate([ids, neg]))
    vae = _lowered_flops(lambda p, z: sd.vae.apply(
        {"params": p["vae"]}, z, method=type(sd.vae).decode), params,
        jnp.zeros((batch, h, h, sd.latent_shape[2])))
    row["model_flops_per_item"] = (s["steps"] * unet + text + vae) / batch
    row["unet_flops_per_call"] = unet
    row["mfu"] = row["model_flops_per_item"] * row["images_per_s"] / run.peak[
        "matmul_flops_per_s"]
    row["params"] = sum(x.size for x in _leaves(params))
    log(f"  sd batch {batch}: {row['images_per_s']:.4g} images/s, {row['mfu']:.3f} of the "
        f"bf16 peak (attention: {row['attention']})")
    rows.append(row)
    del bench
    gc.collect()
  return rows


def _lowered_flops(fn, *args) -> float:
  """XLA's FLOPs of `fn` (the unoptimized program's count; XLA attention)."""
  import jax

  with attention("xla"):
    lowered = jax.jit(fn).lower(*args)
  try:
    ca = lowered.cost_analysis()
  except Exception:  # noqa: BLE001 - a backend without it: compile.
    ca = lowered.compile().cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0]
  return float(ca["flops"])


def step_tests(run):
  """The `gpu`-marked tests in a child pytest, both backends up (JAX_PLATFORMS empty
  unless set), taking device memory as it needs it."""
  junit = os.path.join(tempfile.mkdtemp(prefix="gen-gpu-tests-"), "junit.xml")
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
         "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # This process holds JAX's 75%.
  cmd = [sys.executable, "-m", "pytest", os.path.join("tests", "test_gpu.py"), "-m", "gpu",
         "-n", "0", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}"]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=run.test_timeout, check=False)
  tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
  for line in tail:
    log(f"  | {line}")
  tests = []
  if os.path.isfile(junit):
    for case in ET.parse(junit).getroot().iter("testcase"):
      outcome, message = "passed", ""
      for kind in ("failure", "error", "skipped"):
        el = case.find(kind)
        if el is not None:
          outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
          message = (el.get("message") or "")[:300]
          break
      tests.append({"test": case.get("name"), "outcome": outcome, "message": message,
                    "seconds": float(case.get("time", 0))})
  counts = {k: sum(t["outcome"] == k for t in tests)
            for k in ("passed", "failed", "error", "skipped")}
  return {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, **counts,
          "tests": tests, "output_tail": tail}


# ------------------------------------------------------------------------ reporting


def goal_rows(results: dict) -> list[dict]:
  out = []
  for section, where, figure, goal in GOALS:
    rows = results.get(section)
    row = next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None) \
        if isinstance(rows, list) else None
    value = None if row is None else row.get(figure)
    status = "not measured" if value is None else ("met" if value >= goal else "missed")
    out.append({"section": section, "where": where, "figure": figure, "goal": goal,
                "value": value, "status": status})
  tests = results.get("tests")
  if isinstance(tests, dict) and "passed" in tests:
    bad = tests["failed"] + tests["error"]
    status = ("missed" if bad or tests["returncode"] not in (0, 5) else
              "met" if tests["passed"] else "not run (all skipped)")
    out.append({"section": "tests", "where": {}, "figure": "gpu tests passed",
                "goal": "all", "value": f"{tests['passed']} of {len(tests['tests'])}",
                "status": status})
  else:
    out.append({"section": "tests", "where": {}, "figure": "gpu tests passed", "goal": "all",
                "value": None, "status": "not measured"})
  return out


def _g(v, spec=".4g"):
  return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def markdown(report: dict) -> str:
  info, res = report["device"], report["results"]
  title = f"# Accelerator run{' (SMOKE: tiny shapes, not results)' if report['smoke'] else ''}"
  lines = [title, "", (f"{info.get('device')} · jax {info.get('jax')} · flax "
                       f"{info.get('flax')} · {info.get('date')} · "
                       f"{report['wall_s']:.0f} s wall"), ""]
  peak = res.get("peaks")
  if isinstance(peak, dict) and "matmul_flops_per_s" in peak:
    lines += [(f"Peaks measured ({peak['dtype']}): matmul "
               f"{peak['matmul_flops_per_s'] / 1e12:.4g} TFLOP/s, copy "
               f"{peak['copy_bytes_per_s'] / 1e9:.4g} GB/s (read + write)."), ""]
  lines += ["| workload | setting | throughput | figure | value | goal | status |",
            "|---|---|---|---|---|---|---|"]
  goals = {(g["section"], json.dumps(g["where"])): g for g in report["goals"]}
  for section in TITLES:
    rows = res.get(section)
    if not isinstance(rows, list):
      err = rows.get("error", "not run") if isinstance(rows, dict) else "not run"
      lines.append(f"| {TITLES[section]} | - | - | - | - | - | error: {err} |")
      continue
    for r in rows:
      if section in ("decode", "llama_decode"):
        setting, thr = f"batch {r['batch']}, {r['new_tokens']} tokens", \
            f"{_g(r['tokens_per_s'])} tokens/s"
        figure, value = "frac_roofline", r["frac_roofline"]
      elif section in ("train", "llama_train"):
        setting = f"batch {r['batch']} x {r['seq_len']}, attention {r['attention']}"
        thr, figure, value = f"{_g(r['tokens_per_s'])} tokens/s", "mfu", r["mfu"]
      elif section == "sample_sd":
        setting = (f"{r['size']}x{r['size']}, dpmpp_2m {r['steps']} steps, guidance 7.5, "
                   f"batch {r['batch']}, {r['dtype']}, attention {r['attention']}")
        thr, figure, value = f"{_g(r['images_per_s'])} images/s", "mfu", r["mfu"]
      else:
        setting = (f"ddim {r['steps']} steps, batch {r['batch']}, {r['dtype']}, "
                   f"attention {r['attention']}")
        thr, figure, value = f"{_g(r['images_per_s'])} images/s", "mfu", r["mfu"]
      g = goals.get((section, json.dumps({"batch": r.get("batch")}))) or \
          goals.get((section, "{}"))
      goal, status = (f">= {g['goal']:.0%}", g["status"]) if g else ("-", "-")
      lines.append(f"| {TITLES[section]} | {setting} | {thr} | {figure} | {_g(value, '.3f')} "
                   f"| {goal} | {status} |")
  tests = res.get("tests")
  if isinstance(tests, dict) and "passed" in tests:
    g = goals[("tests", "{}")]
    lines.append(f"| pytest -m gpu | tests/test_gpu.py | {tests['seconds']:.0f} s | passed | "
                 f"{g['value']} | all | {g['status']} |")
    lines += [""] + [f"- {t['test']}: {t['outcome']}" + (f" ({t['message']})"
                                                         if t["message"] else "")
                     for t in tests["tests"]]
  notes = [f"- {TITLES[sec]}: attention {r['attention']}"
           + (f"; cuDNN's did not build: {r['attention_cudnn_error']}"
              if "attention_cudnn_error" in r else "")
           for sec in TITLES if isinstance(res.get(sec), list) for r in res[sec][:1]]
  if notes:
    lines += ["", "Attention that ran:"] + notes
  missed = [g for g in report["goals"] if g["status"] == "missed"]
  lines += ["", "Missed goals: " + (", ".join(f"{g['section']} {g['figure']}" for g in missed)
                                    if missed else "none") + "."]
  if report["errors"]:
    lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in report["errors"].items())]
  return "\n".join(lines) + "\n"


STEPS = {"decode": step_decode, "train": step_train,
         "sample_unet": lambda r: step_sample(r, "unet"),
         "sample_dit": lambda r: step_sample(r, "dit"), "sample_sd": step_sd,
         "llama_decode": lambda r: step_decode(r, llama=True),
         "llama_train": lambda r: step_train(r, llama=True), "tests": step_tests}


class Run:
  """The settings of one run and what it has measured so far."""

  def __init__(self, args):
    self.smoke, self.out = args.smoke, args.out
    self.shapes = dict(SMOKE if args.smoke else FULL)
    self.repeats = args.repeats or self.shapes["repeats"]
    self.test_timeout = args.test_timeout
    self.peak = None
    self.report = {"smoke": self.smoke, "argv": sys.argv[1:], "device": {}, "imports": {},
                   "results": {}, "goals": [], "errors": {}, "seconds": {}, "wall_s": 0.0}

  def lm_overrides(self) -> dict:
    over = dict(SMOKE_LM) if self.smoke else {}
    if self.shapes["train_batch"]:
      over["data.batch_size"] = self.shapes["train_batch"]
    return over

  def diffusion_overrides(self, arch: str) -> dict:
    return {**(SMOKE_DIFFUSION if self.smoke else {}), "model.arch": arch,
            "model.dtype": "bfloat16"}

  def save(self):
    self.report["wall_s"] = time.perf_counter() - T0
    self.report["goals"] = goal_rows(self.report["results"])
    os.makedirs(self.out, exist_ok=True)
    with open(os.path.join(self.out, "gpu.json"), "w") as f:
      json.dump(self.report, f, indent=1, default=float)
    with open(os.path.join(self.out, "gpu.md"), "w") as f:
      f.write(markdown(self.report))

  def step(self, name: str, fn):
    log(f"{name} ...")
    t0 = time.perf_counter()
    try:
      self.report["results"][name] = fn(self)
    except Exception as e:  # noqa: BLE001 - one failed step must not lose the others.
      msg = f"{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ''}"
      self.report["results"][name] = {"error": msg, "traceback": traceback.format_exc()}
      self.report["errors"][name] = msg
      log(f"{name} FAILED: {msg}")
    self.report["seconds"][name] = time.perf_counter() - t0
    log(f"{name} done in {self.report['seconds'][name]:.1f} s")
    gc.collect()
    self.save()


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "runs", "gpu"))
  ap.add_argument("--smoke", action="store_true", help="tiny shapes: check the script on a CPU")
  ap.add_argument("--repeats", type=int, default=0, help="timed calls per workload (3; smoke 1)")
  ap.add_argument("--no_tests", action="store_true", help="skip the pytest gpu step")
  ap.add_argument("--only", default="", help="comma-separated steps to run (peaks always "
                  f"run): {','.join(STEPS)}")
  ap.add_argument("--test_timeout", type=float, default=300.0)
  args = ap.parse_args(argv)
  run = Run(args)
  run.report["imports"] = prepare_imports()
  import jax
  import measure

  run.report["device"] = {**measure.device_info(), "backend": jax.default_backend(),
                          "python": sys.version.split()[0]}
  log(f"{run.report['device']['device']} ({jax.default_backend()}), jax {jax.__version__}, "
      f"out: {run.out}{' [smoke]' if run.smoke else ''}")
  if jax.default_backend() == "cpu" and not run.smoke:
    log("no accelerator visible: timings are a CPU's (use --smoke to check the script)")
  run.save()
  run.step("peaks", step_peaks)
  if run.peak is None:
    log("no peaks, nothing to compare against: stopping")
    return 1
  only = [s for s in args.only.split(",") if s]
  if set(only) - set(STEPS):
    ap.error(f"--only: unknown steps {sorted(set(only) - set(STEPS))}; known: {', '.join(STEPS)}")
  for name, fn in STEPS.items():
    if (not only or name in only) and not (name == "tests" and args.no_tests):
      run.step(name, fn)
  run.save()
  print(markdown(run.report), flush=True)
  log(f"wrote {os.path.join(run.out, 'gpu.json')} and gpu.md")
  tests = run.report["results"].get("tests", {})
  failed = isinstance(tests, dict) and (tests.get("failed", 0) or tests.get("error", 0))
  return 1 if run.report["errors"] or failed else 0


if __name__ == "__main__":
  sys.exit(main())
