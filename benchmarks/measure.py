"""What the benchmarks share: a config's pipeline without its data, timing, XLA's cost
analysis (corrected for loops), the device's measured peaks, and printing.

Loops: XLA's cost analysis counts the body of a `while` loop (what `lax.fori_loop`,
`lax.scan` and `lax.while_loop` compile to) once, whatever its trip count. A program's
cost is therefore corrected as `reported + sum((trips - 1) * body)`, where `body` is the
cost analysis of one iteration compiled on its own (`loop_corrected`); the tests check
this on a `fori_loop` of N matmuls. gen's CPU attention loops over blocks of large logits;
a program holding it is costed as compiled with the attention whole (`cost_unblocked`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gen.core import config as config_lib
from gen.core import xla
from gen.core.family import DataSpec
from gen.core.train import build

# Image shapes and classes of the datasets, so no benchmark reads data.
IMAGES = {"digits": ((8, 8, 1), 10), "mnist": ((28, 28, 1), 10),
          "fashion_mnist": ((28, 28, 1), 10), "tfds:cifar10": ((32, 32, 3), 10)}
CHAR_VOCAB = 65  # Tiny Shakespeare's characters (the `char` tokenizer's vocabulary).


def spec_for(config) -> DataSpec:
  """The DataSpec `config`'s data would give, from the config alone."""
  d = config.data
  if "seq_len" in d:
    from gen.lm.data import music, token_spec

    if d.name == "jsb_chorales":
      vocab = music.ChoraleTokenizer().vocab_size
    else:
      vocab = {"char": CHAR_VOCAB, "byte": 256}.get(d.get("tokenizer", ""), d.get("vocab_size", 0))
    return token_spec(d.seq_len, vocab_size=vocab, start_ids=[0])
  if d.name not in IMAGES:
    raise ValueError(f"no known image shape for data.name='{d.name}'; known: {sorted(IMAGES)}")
  shape, classes = IMAGES[d.name]
  return DataSpec(shape, classes, d.preprocess)


def load(config_file: str, overrides: Sequence[str] = ()):
  """(config, spec, pipeline) for a config file and `--config.a.b=V` overrides."""
  config = config_lib.load(config_file, overrides)
  spec = spec_for(config)
  return config, spec, build(config, spec)


def random_batch(spec: DataSpec, n: int, rng) -> dict[str, jax.Array]:
  """A batch of `n` random examples of the right shape and range."""
  k1, k2 = jax.random.split(rng)
  if spec.kind == "tokens":
    return {"tokens": jax.random.randint(k1, (n, spec.shape[0] + 1), 0, spec.extra["vocab_size"])}
  lo = 0.0 if spec.preprocess in ("binarize", "unit") else -1.0
  image = jax.random.uniform(k1, (n,) + tuple(spec.shape), minval=lo, maxval=1.0)
  if spec.preprocess == "binarize":
    image = jnp.round(image)
  return {"image": image, "label": jax.random.randint(k2, (n,), 0, max(spec.num_classes, 1))}


def compile_timed(fn: Callable, *args, donate: tuple[int, ...] = (), options=None):
  """(compiled, seconds to compile) of `jax.jit(fn)` for `args`, with a pipeline's XLA
  `options` (`gen.core.xla`)."""
  t0 = time.perf_counter()
  compiled = xla.jit(fn, options, donate_argnums=donate).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def median_time(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
  """Median wall time of `run()` (blocked on its result) after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(run())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def in_turns(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
  """Median seconds per call of each run, timed in turns (one call of each per round,
  after one warm-up call each) so that a change of load hits all of them alike."""
  times = {k: [] for k in runs}
  for fn in runs.values():
    jax.block_until_ready(fn())
  for _ in range(repeats):
    for k, fn in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def cost(compiled) -> dict[str, float]:
  """FLOPs and bytes accessed of a compiled program, as XLA's cost analysis reports them."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):  # Older jax: one dict per computation.
    ca = ca[0]
  return {"flops": float(ca.get("flops", 0.0)), "bytes": float(ca.get("bytes accessed", 0.0))}


def loop_corrected(reported: dict, loops: Sequence[tuple[dict, int]]) -> dict[str, float]:
  """`reported` plus (trips - 1) bodies for each (body cost, trips) loop it holds."""
  return {k: v + sum((trips - 1) * body[k] for body, trips in loops)
          for k, v in reported.items()}


@contextlib.contextmanager
def unblocked_attention():
  """Traces `gen.nn.attention.dot_product_attention` in its whole form, without the CPU
  blocks (a loop whose trip count XLA's cost analysis does not see): the same model FLOPs,
  each counted, for a program compiled only for its cost."""
  from gen.nn import attention

  saved = attention.BLOCKED_MIN_BYTES
  attention.BLOCKED_MIN_BYTES = math.inf
  jax.clear_caches()  # Inner jitted functions keep their traces: trace them again.
  try:
    yield
  finally:
    attention.BLOCKED_MIN_BYTES = saved
    jax.clear_caches()


def cost_unblocked(fn: Callable, *args, options=None) -> dict[str, float]:
  """`cost` of `jax.jit(fn)` for `args` traced under `unblocked_attention`."""
  with unblocked_attention():
    return cost(xla.jit(fn, options).lower(*args).compile())


def model_loops(compiled) -> int:
  """While loops in a compiled program, except the random-bit generator's (a few integer
  rounds on CPU, negligible: uniform and normal draws, and randint's, e.g. a discrete
  schedule's timesteps)."""
  rng = ("_uniform", "threefry", "_randint")
  return sum(1 for line in compiled.as_text().splitlines()
             if " while(" in line and not any(r in line for r in rng))


def peaks(dtype=jnp.float32, n: int = 0, mib: int = 0, repeats: int = 5) -> dict:
  """The device's FLOP/s on an n x n matmul and bytes/s on a copy of `mib` MiB (read +
  write), both in `dtype`: the best of `repeats` runs. Default sizes: 2048 and 256 MiB on
  a CPU, 8192 and 1 GiB on an accelerator."""
  cpu = jax.devices()[0].platform == "cpu"
  n, mib = n or (2048 if cpu else 8192), mib or (256 if cpu else 1024)
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  mm, _ = compile_timed(lambda x, y: x @ y, a, a)
  best = lambda f: min(median_time(f, 1, warmup=0) for _ in range(repeats))  # noqa: E731
  mm(a, a).block_until_ready()
  flops = 2 * n**3 / best(lambda: mm(a, a))
  # A copy XLA cannot elide, into the donated input (fresh output pages would time the OS).
  box = [jnp.ones((mib * 2**20 // jnp.dtype(dtype).itemsize,), dtype)]
  cp, _ = compile_timed(lambda x: x + jnp.ones((), dtype), box[0], donate=(0,))

  def copy():
    box[0] = cp(box[0])
    return box[0]

  copy()
  return {"dtype": jnp.dtype(dtype).name, "matmul_flops_per_s": flops,
          "copy_bytes_per_s": 2 * box[0].nbytes / best(copy)}


@dataclasses.dataclass
class Bench:
  """A compiled workload, ready to time: `run()` does `items` images, tokens or examples."""

  meta: dict  # What runs: sampler, steps, batch...
  run: Callable[[], object]
  items: int
  unit: str  # images | tokens | examples
  compile_s: float
  reported: dict  # XLA's cost analysis of the program.
  corrected: dict  # The same, loop bodies counted by their trip counts.

  def result(self, seconds: float, peak: dict) -> dict:
    """Throughput, per-item FLOPs and bytes, achieved rates and fractions of the peaks."""
    c = self.corrected
    fps, bps = c["flops"] / seconds, c["bytes"] / seconds
    return {**self.meta, "compile_s": self.compile_s, "seconds": seconds,
            f"{self.unit}_per_s": self.items / seconds, "xla_flops": self.reported["flops"],
            "flops_per_item": c["flops"] / self.items, "bytes_per_item": c["bytes"] / self.items,
            "flops_per_s": fps, "bytes_per_s": bps,
            "frac_peak_flops": fps / peak["matmul_flops_per_s"],
            "frac_peak_bytes": bps / peak["copy_bytes_per_s"]}

  def measure(self, repeats: int, peak: dict, profile_dir: str | None = None) -> dict:
    seconds = median_time(self.run, repeats)
    profile(profile_dir, self.run)
    return self.result(seconds, peak)


def device_info() -> dict:
  dev = jax.devices()[0]
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import flax
  return {"device": f"{dev.platform}: {dev.device_kind}", "devices": jax.device_count(),
          "cpu": cpu, "cores": os.cpu_count(), "jax": jax.__version__,
          "flax": flax.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
          "load_avg": [round(v, 2) for v in os.getloadavg()]}


def dtype_of(config):
  return jnp.dtype(config.get("model", {}).get("dtype", "float32"))


def _fmt(v):
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, dict):
    return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
  if isinstance(v, list):
    return "[" + ", ".join(_fmt(x) for x in v) + "]"
  return str(v)


def report(results: dict, as_json: bool) -> None:
  """One JSON line, or one `key: value` line per entry (nested dicts indented). The load
  average at the end joins the one `device_info` took at the start."""
  results = {**results, "load_avg_end": [round(v, 2) for v in os.getloadavg()]}
  if as_json:
    print(json.dumps(results, default=lambda x: float(np.asarray(x))))
    return
  for k, v in results.items():
    if isinstance(v, list) and v and isinstance(v[0], dict):
      print(f"{k}:")
      for item in v:
        print("  " + _fmt(item))
    else:
      print(f"{k}: {_fmt(v)}")


def profile(folder: str | None, run: Callable[[], object], times: int = 2) -> None:
  """Writes a jax.profiler trace of `times` calls of `run` to `folder` (if given)."""
  if not folder:
    return
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    for _ in range(times):
      jax.block_until_ready(run())
