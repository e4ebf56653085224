"""Which XLA options make a config's programs fastest on this machine: variants timed in turns.

  python benchmarks/compiler_options.py --config=configs/diffusion/mnist.py [--work=train|sample]
      [--batch=N] [--repeats=20] [--json] [--config.a.b=V ...]

Compiles the config's train step (or its sampler, `--work=sample`) once per variant of
`xla_cpu_experimental_ynn_fusion_type`, which decides what XLA:CPU hands to YNNPACK:
`default` (XLA's own choice), `pipeline` (the pipeline's `compiler_options`, see
`gen/core/xla.py`), `dot` (matmuls only), `dot+reduce` (matmuls and reductions) and `none`.
Then it calls them in turns, one call of each per round, so a change of load on a shared
machine hits every variant alike, and prints each one's median milliseconds and its
speed-up over `default`. On another CPU the best variant may differ: this is how to check.
"""

from __future__ import annotations

import argparse

import jax
import measure

FLAG = "xla_cpu_experimental_ynn_fusion_type"
VARIANTS = {"default": None, "dot": "LIBRARY_FUSION_TYPE_DOT",
            "dot+reduce": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE", "none": ""}


def compiled_variants(config, spec, pipe, work: str, batch: int) -> dict:
  """{name: zero-argument callable running that variant's compiled program}."""
  data = measure.random_batch(spec, batch, jax.random.key(2))
  state = jax.jit(pipe.init)(jax.random.key(0), data)
  rng = jax.random.key(1)
  if work == "train":
    fn, args = (lambda s, b, r: pipe.train_step(s, b, r)[0]), (state, data, rng)
  elif spec.kind == "tokens":
    raise SystemExit("--work=sample is for image families; an LM's decoding: sampling.py")
  else:
    fn, args = (lambda p, r: pipe.sample(p, r, batch)), (pipe.sample_params(state), rng)
  options = {"default": None, "pipeline": dict(pipe.compiler_options) or None}
  options.update({name: {FLAG: v} for name, v in VARIANTS.items() if v is not None})
  runs = {}
  for name, opts in options.items():
    compiled, _ = measure.compile_timed(fn, *args, options=opts)
    runs[name] = lambda compiled=compiled: compiled(*args)
  return runs


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--work", choices=("train", "sample"), default="train")
  ap.add_argument("--batch", type=int, default=0, help="default: the config's data.batch_size")
  ap.add_argument("--repeats", type=int, default=20)
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args(argv)
  if jax.default_backend() != "cpu":
    raise SystemExit(f"{FLAG} is an XLA:CPU option; this backend is {jax.default_backend()}")
  config, spec, pipe = measure.load(args.config, overrides)
  runs = compiled_variants(config, spec, pipe, args.work, args.batch or config.data.batch_size)
  seconds = measure.in_turns(runs, args.repeats)
  rows = [{"variant": name, "options": VARIANTS.get(name, dict(pipe.compiler_options) or None),
           "ms": 1e3 * s, "speedup": seconds["default"] / s} for name, s in seconds.items()]
  measure.report({"config": args.config, "family": config.family, "work": args.work,
                  "batch": args.batch or config.data.batch_size, **measure.device_info(),
                  "results": rows}, args.json)


if __name__ == "__main__":
  main()
