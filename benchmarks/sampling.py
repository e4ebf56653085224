"""Throughput of a family's compiled sampler, random-init params, against the device's peaks.

  python benchmarks/sampling.py --config=configs/diffusion/mnist.py --samplers=ddim:50 --batch=64
  python benchmarks/sampling.py --config=configs/lm/shakespeare_char_cpu.py --batch=1,32
  python benchmarks/sampling.py --config=FILE [--json] [--profile=DIR] [--config.a.b=V ...]

Images/s (diffusion per sampler and step count, GAN, VAE, PixelCNN) or new tokens/s (LM)
at each batch size: the median of --repeats timed calls after a warm-up call, compile time
apart. From XLA's cost analysis: FLOPs and bytes per image (token), achieved FLOP/s and
bytes/s and their fractions of the peaks measured at the start of the run. Loop bodies are
counted by their trip counts (see `measure`); `xla_flops` is the uncorrected figure.
"""

from __future__ import annotations

import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import measure

from gen.diffusion import denoiser as diffusion_denoiser
from gen.lm import steps as lm_steps
from gen.lm.sampling import choose
from gen.pixelcnn import steps as pixelcnn_steps
from gen.pixelcnn.models import GatedPixelCNN

# Network evaluations of a diffusion sampler run (gen.diffusion.samplers).
TWO_PER_STEP = ("heun", "flow_heun")


def nfe(sampler: str, steps: int) -> int:
  return 2 * steps - 1 if sampler in TWO_PER_STEP else steps


def count_calls(module, fn):
  """(fn(), how many times `module`'s class was called while tracing it)."""
  calls = 0

  def count(next_fun, args, kwargs, context):
    nonlocal calls
    if type(context.module) is type(module) and context.method_name == "__call__":
      calls += 1
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(count):
    return fn(), calls


def diffusion(pipe, config, spec, params, sampler: str, steps: int,
              batch: int) -> measure.Bench:
  """`sampler` at `steps` on `batch` images; the network counted NFE times."""
  net, rng = diffusion_denoiser.parts(config, spec)[0], jax.random.key(1)
  fn = lambda p, r: pipe.sample(p, r, batch, sampler=sampler, steps=steps)  # noqa: E731
  (compiled, compile_s), calls = count_calls(
      net, lambda: measure.compile_timed(fn, params, rng, options=pipe.compiler_options))
  x, cond = jnp.zeros((batch,) + tuple(spec.shape)), jnp.ones((batch,))
  one_fn = lambda p, x: diffusion_denoiser.apply_fn(net, p)(  # noqa: E731
      x, cond, jnp.zeros((batch,), jnp.int32))
  one, _ = measure.compile_timed(one_fn, params, x, options=pipe.compiler_options)
  n = nfe(sampler, steps)
  reported, one_cost = measure.cost(compiled), measure.cost(one)
  if measure.model_loops(one):  # Blocked attention: both costed with it whole.
    reported = measure.cost_unblocked(fn, params, rng, options=pipe.compiler_options)
    one_cost = measure.cost_unblocked(one_fn, params, x, options=pipe.compiler_options)
  # The program holds `calls` evaluations of the network; a run does n of them.
  corrected = measure.loop_corrected(reported, [(one_cost, n - calls + 1)])
  return measure.Bench({"sampler": sampler, "steps": steps, "nfe": n, "batch": batch},
                       lambda: compiled(params, rng), batch, "images", compile_s, reported,
                       corrected)


def lm(pipe, config, spec, params, batch: int, new_tokens: int, prompt_len: int = 1,
       **sample_kw) -> measure.Bench:
  """Cached decoding of `new_tokens` tokens after a prompt of `prompt_len` tokens."""
  if prompt_len + new_tokens > spec.shape[0]:
    raise ValueError(f"{prompt_len} + {new_tokens} tokens overflow the context "
                     f"({spec.shape[0]}): the cost model counts no cache rebuild")
  prompt = jnp.zeros((batch, prompt_len), jnp.int32)
  lens = jnp.full((batch,), prompt_len, jnp.int32)
  rng = jax.random.key(1)
  fn = lambda p, r: pipe.sample(p, r, batch, prompt, lens, max_new_tokens=new_tokens,  # noqa: E731
                                **sample_kw)
  compiled, compile_s = measure.compile_timed(fn, params, rng, options=pipe.compiler_options)
  if not (jax.device_get(compiled(params, rng))[:, -1] >= 0).all():
    raise RuntimeError("a row stopped before max_new_tokens")
  # One iteration of the decoding loop: one token through the cached model, then a choice.
  model = lm_steps.parts(config, spec)
  apply, init_cache = functools.partial(lm_steps.apply_cached, model), model.init_cache
  kw = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, **sample_kw}

  def step(p, tok, cache, r):
    logits, cache = apply(p, tok, jnp.array([prompt_len], jnp.int32), cache)
    return choose(logits[:, -1], r, kw["temperature"], kw["top_k"], kw["top_p"]), cache

  body, _ = measure.compile_timed(step, params, prompt[:, :1], init_cache(batch), rng,
                                  options=pipe.compiler_options)
  reported = measure.cost(compiled)
  corrected = measure.loop_corrected(reported, [(measure.cost(body), new_tokens)])
  return measure.Bench({"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens},
                       lambda: compiled(params, rng), batch * new_tokens, "tokens", compile_s,
                       reported, corrected)


def pixelcnn(pipe, config, spec, params, sampler: str, batch: int) -> measure.Bench:
  """The row-cached (`fast`) or whole-network (`naive`) sampler on `batch` images."""
  model, rng = pixelcnn_steps.parts(config, spec), jax.random.key(1)
  h, w, _ = spec.shape
  fn = lambda p, r: pipe.sample(p, r, batch, sampler=sampler)  # noqa: E731
  compiled, compile_s = measure.compile_timed(fn, params, rng, options=pipe.compiler_options)
  x = jnp.zeros((batch,) + tuple(spec.shape))
  labels = jnp.zeros((batch,), jnp.int32) if model.num_classes else None
  run = lambda method: lambda p, *a: model.apply({"params": p}, *a, method=method)  # noqa: E731
  if sampler == "naive":  # The whole network once per pixel.
    net, _ = measure.compile_timed(run(None), params, x, labels, options=pipe.compiler_options)
    loops = [(measure.cost(net), h * w)]
  else:  # The vertical stack once per row, the horizontal one once per pixel.
    vert, _ = measure.compile_timed(run(GatedPixelCNN.vertical), params, x, labels,
                                    options=pipe.compiler_options)
    feats = [jnp.zeros((batch, 1) + f.shape[2:], f.dtype) for f in jax.eval_shape(
        lambda p: model.apply({"params": p}, x, labels, method=GatedPixelCNN.vertical), params)]
    horiz, _ = measure.compile_timed(run(GatedPixelCNN.horizontal), params, x[:, :1], feats,
                                     labels, options=pipe.compiler_options)
    loops = [(measure.cost(vert), h), (measure.cost(horiz), h * w)]
  reported = measure.cost(compiled)
  return measure.Bench({"sampler": sampler, "batch": batch}, lambda: compiled(params, rng),
                       batch, "images", compile_s, reported,
                       measure.loop_corrected(reported, loops))


def single(pipe, params, batch: int) -> measure.Bench:
  """A loop-free sampler (GAN, VAE) on `batch` images."""
  rng = jax.random.key(1)
  compiled, compile_s = measure.compile_timed(lambda p, r: pipe.sample(p, r, batch), params, rng,
                                              options=pipe.compiler_options)
  if measure.model_loops(compiled):
    raise RuntimeError("a loop in the sampler: its cost needs a trip-count correction")
  reported = measure.cost(compiled)
  return measure.Bench({"batch": batch}, lambda: compiled(params, rng), batch, "images",
                       compile_s, reported, reported)


def init_params(pipe, spec):
  state = pipe.init(jax.random.key(0), spec.example_batch(1))
  return pipe.sample_params(state)


def benches(config, spec, pipe, batches=None, samplers=None, new_tokens: int = 0,
            prompt_len: int = 1):
  """The config's sampler at each batch size (and sampler), one Bench each."""
  params = init_params(pipe, spec)
  fam = config.family
  if fam == "lm":
    sc = config.sample
    new = new_tokens or spec.shape[0] - prompt_len  # Fill the context: no cache rebuild.
    return [lm(pipe, config, spec, params, b, new, prompt_len, temperature=sc.temperature,
               top_k=sc.top_k, top_p=sc.top_p) for b in batches or (1, 32)]
  if fam == "diffusion":
    d = config.diffusion
    return [diffusion(pipe, config, spec, params, s.split(":")[0], int(s.split(":")[1]), b)
            for s in samplers or [f"{d.sampler}:{d.sample_steps}"] for b in batches or (64,)]
  if fam == "pixelcnn":
    return [pixelcnn(pipe, config, spec, params, s, b) for s in samplers or ["fast"]
            for b in batches or (16,)]
  return [single(pipe, params, b) for b in batches or (64,)]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--batch", default="", help="comma-separated batch sizes")
  ap.add_argument("--samplers", default="",
                  help="diffusion: NAME:STEPS,...; pixelcnn: fast,naive (default: the config's)")
  ap.add_argument("--steps", type=int, default=0,
                  help="diffusion: steps for the config's sampler; LM: new tokens (default: "
                       "fill the context)")
  ap.add_argument("--prompt_len", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--profile", default="", help="write a jax.profiler trace to this folder")
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args(argv)
  batches = [int(b) for b in args.batch.split(",") if b] or None
  samplers = [s for s in args.samplers.split(",") if s] or None
  config, spec, pipe = measure.load(args.config, overrides)
  if args.steps and config.family == "diffusion" and not samplers:
    samplers = [f"{config.diffusion.sampler}:{args.steps}"]
  peak = measure.peaks(measure.dtype_of(config))
  out = {"config": args.config, "family": config.family, **measure.device_info(), "peak": peak}
  out["results"] = [b.measure(args.repeats, peak, args.profile or None) for b in benches(
      config, spec, pipe, batches, samplers, args.steps, args.prompt_len)]
  measure.report(out, args.json)


if __name__ == "__main__":
  main()
