"""Throughput and FLOP utilization of a config's compiled train step.

  python benchmarks/train_step.py --config=configs/lm/shakespeare_char_cpu.py
  python benchmarks/train_step.py --config=configs/diffusion/mnist.py [--batch=32] [--json]
      [--profile=DIR] [--config.a.b=V ...]

The family's `train_step` compiled with the state donated, fed one random batch of the
config's shape (the step's speed does not depend on the values). Steps/s and examples/s
(tokens/s for an LM) are the median of --repeats timed steps after a warm-up step,
compile time apart. `frac_peak_flops` divides the FLOP/s XLA's cost analysis implies by
the measured matmul peak; for an LM, `mfu` does the same with the model's FLOPs per token
as nanoGPT and PaLM count them, 6 N + 12 L T d (N params without the position table,
L layers, context T, width d), forward and backward, optimizer excluded.
"""

from __future__ import annotations

import argparse

import jax
import measure


def lm_flops_per_token(config, params) -> float:
  m, t = config.model, config.data.seq_len
  n = sum(x.size for x in jax.tree.leaves(params))
  if m.positions == "learned":
    n -= t * m.width
  attn_width = m.num_heads * (m.get("head_dim", 0) or m.width // m.num_heads)
  return 6 * n + 12 * m.num_layers * t * attn_width


def bench(config, spec, pipe, batch: int | None = None) -> measure.Bench:
  """The compiled train step on a random batch of `batch` (default: the config's)."""
  batch = batch or config.data.batch_size
  data = measure.random_batch(spec, batch, jax.random.key(2))
  state = jax.jit(pipe.init)(jax.random.key(0), data)
  rng = jax.random.key(1)
  step = lambda s, b, r: pipe.train_step(s, b, r)[0]  # noqa: E731
  compiled, compile_s = measure.compile_timed(step, state, data, rng, donate=(0,),
                                              options=pipe.compiler_options)
  reported = measure.cost(compiled)
  if measure.model_loops(compiled):  # Blocked attention? Its FLOPs counted whole.
    with measure.unblocked_attention():
      whole, _ = measure.compile_timed(step, state, data, rng, options=pipe.compiler_options)
    if measure.model_loops(whole):
      raise RuntimeError("a loop in the train step: its cost needs a trip-count correction")
    reported = measure.cost(whole)
  box = [state]

  def run():
    box[0] = compiled(box[0], data, rng)
    return box[0]

  tokens = spec.kind == "tokens"
  items = batch * spec.shape[0] if tokens else batch
  meta = {"batch": batch}
  if tokens:
    meta["seq_len"] = spec.shape[0]
    meta["model_flops_per_item"] = lm_flops_per_token(config, pipe.sample_params(state))
  return measure.Bench(meta, run, items, "tokens" if tokens else "examples", compile_s,
                       reported, reported)


def result(b: measure.Bench, seconds: float, peak: dict) -> dict:
  """`Bench.result` plus steps/s and, for an LM, model FLOP utilization."""
  out = b.result(seconds, peak)
  out["steps_per_s"] = 1.0 / seconds
  if "model_flops_per_item" in out:
    out["mfu"] = out["model_flops_per_item"] * b.items / seconds / peak["matmul_flops_per_s"]
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--batch", type=int, default=0, help="default: the config's data.batch_size")
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--profile", default="", help="write a jax.profiler trace to this folder")
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args(argv)
  config, spec, pipe = measure.load(args.config, overrides)
  peak = measure.peaks(measure.dtype_of(config))
  b = bench(config, spec, pipe, args.batch or None)
  seconds = measure.median_time(b.run, args.repeats)
  measure.profile(args.profile or None, b.run)
  measure.report({"config": args.config, "family": config.family, **measure.device_info(),
                  "peak": peak, "results": [result(b, seconds, peak)]}, args.json)


if __name__ == "__main__":
  main()
