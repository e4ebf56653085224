"""Checks that need an accelerator, and their CPU halves.

The `gpu`-marked tests run where JAX sees an accelerator and are skipped elsewhere
(`conftest.py`). `benchmarks/gpu.py` runs them on a GPU machine with JAX_PLATFORMS empty,
so that the GPU and the CPU backend are both up:
- the same train steps (LM and UNet diffusion, float32, full matmul precision) give the
  same losses on the accelerator and the CPU;
- cached decoding gives the logits of full recomputation on the accelerator;
- every diffusion sampler compiles on the accelerator through `gen.core.xla` with the
  UNet's CPU compiler options dropped, and draws finite images.
The helpers take the device, so the CPU tests below run the same code on the CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_DIFFUSION, TINY_LM, config_path

from gen.core import config as config_lib
from gen.core import xla
from gen.core.family import DataSpec

CTX, VOCAB = 8, 11
DIGITS = DataSpec((8, 8, 1), 10, "scale")


def accelerator():
  """The first non-CPU device JAX sees, or None."""
  return next((d for d in jax.devices() if d.platform != "cpu"), None)


def cpu():
  return jax.devices("cpu")[0]


def tiny_config(family: str, **overrides):
  if family == "lm":
    c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
    config_lib.apply_overrides(c, {**TINY_LM, **overrides})
  else:
    c = config_lib.load_file(config_path("diffusion", "digits.py"))
    config_lib.apply_overrides(c, {**TINY_DIFFUSION, "optim.warmup_steps": 0, **overrides})
  config_lib.validate(c)
  return c


def setup(family: str):
  """(pipeline, initial state on the CPU, 3 random batches) of a tiny float32 config.

  The state is made once and copied to each device, so both start from the same bits.
  """
  rng = np.random.default_rng(0)
  if family == "lm":
    from gen.lm import make
    from gen.lm.data import token_spec

    spec = token_spec(CTX, vocab_size=VOCAB, start_ids=[0])
    batches = [{"tokens": rng.integers(0, VOCAB, (8, CTX + 1)).astype(np.int32)}
               for _ in range(3)]
  else:
    from gen.diffusion import make

    spec = DIGITS
    batches = [{"image": rng.uniform(-1, 1, (8, 8, 8, 1)).astype(np.float32),
                "label": (np.arange(8) % 10).astype(np.int32)} for _ in range(3)]
  pipe = make(tiny_config(family), spec)
  with jax.default_device(cpu()):
    state = jax.jit(pipe.init)(jax.random.key(0, impl="unsafe_rbg"), batches[0])
  return pipe, state, batches


def train_losses(pipe, state, batches, device) -> list[float]:
  """The loss of each train step on `device` (float32 matmuls at full precision), compiled
  with the pipeline's compiler options for that backend, as the core compiles it."""
  options = xla.for_backend(pipe.compiler_options, device.platform)
  step = jax.jit(pipe.train_step, compiler_options=options)
  state = jax.device_put(state, device)
  losses = []
  with jax.default_matmul_precision("highest"):
    for i, batch in enumerate(batches):
      state, metrics = step(state, jax.device_put(batch, device), jax.random.key(i + 1))
      losses.append(float(metrics["loss"]))
  return losses


def decoding_gap(device) -> float:
  """Largest difference between the logits cached decoding chose each token with and
  those of recomputing the whole prefix, on `device` (float32, full precision)."""
  from gen.lm import make, sampling
  from gen.lm import steps as lm
  from gen.lm.data import token_spec

  spec = token_spec(CTX, vocab_size=VOCAB, start_ids=[0])
  config = tiny_config("lm", **{"model.dropout": 0.0})
  net = lm.parts(config, spec)
  with jax.default_device(device), jax.default_matmul_precision("highest"):
    params = make(config, spec).init(jax.random.key(0), spec.example_batch(1)).params
    prompt = jnp.array([[3, 1], [5, 9]], jnp.int32)
    decode = jax.jit(lambda p, r: sampling.decode(
        lambda *a: lm.apply_cached(net, *a), net.init_cache, p, r, prompt,
        jnp.array([2, 2], jnp.int32), max_new_tokens=CTX - 2, max_len=CTX, temperature=1.0,
        return_logits=True))
    tokens, logits = decode(params, jax.random.key(1))
    # Within the context no slide happens: the logits at t come from tokens[:, :t + 1].
    full = jax.jit(lambda p, x: lm.logits(net, p, x))(params, tokens[:, :-1])
  assert tokens.devices() == {device}
  return float(jnp.max(jnp.abs(logits[:, 1:] - full[:, 1:])))


def draw_with_every_sampler(samplers) -> dict[str, np.ndarray]:
  """Four images from each sampler (3 steps) of a tiny UNet, each compiled through
  `gen.core.xla.jit` with the pipeline's compiler options, on the default backend."""
  from gen.diffusion import make

  pipe = make(tiny_config("diffusion"), DIGITS)
  state = jax.jit(pipe.init)(jax.random.key(0, impl="unsafe_rbg"), DIGITS.example_batch(1))
  out = {}
  for name in samplers:
    fn = xla.jit(lambda p, r, name=name: pipe.sample(p, r, 4, sampler=name, steps=3),
                 pipe.compiler_options)
    out[name] = np.asarray(fn(state.sample_params, jax.random.key(1)))
  return out


# ---------------------------------------------------------------- on the accelerator


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["lm", "diffusion"])
def test_train_step_losses_match_the_cpu(family):
  pipe, state, batches = setup(family)
  on_gpu = train_losses(pipe, state, batches, accelerator())
  on_cpu = train_losses(pipe, state, batches, cpu())
  # The first loss is one forward pass of the same params: summation order only. Later
  # ones follow Adam, whose first steps move each parameter by about lr * sign(grad).
  assert on_gpu[0] == pytest.approx(on_cpu[0], rel=1e-4)
  np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-2)


@pytest.mark.gpu
def test_cached_decoding_matches_full_recomputation_on_the_accelerator():
  assert decoding_gap(accelerator()) < 1e-4


@pytest.mark.gpu
def test_samplers_compile_without_the_cpu_options():
  from gen.diffusion import make, samplers

  pipe = make(tiny_config("diffusion"), DIGITS)
  assert pipe.compiler_options and all(k.startswith("xla_cpu_") for k in pipe.compiler_options)
  assert xla.for_backend(pipe.compiler_options) is None  # All dropped on this backend.
  images = draw_with_every_sampler(samplers.SAMPLERS)
  for name, x in images.items():
    assert x.shape == (4, 8, 8, 1) and np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1), name


# ------------------------------------------------------------------- the CPU halves


@pytest.mark.parametrize("family", ["lm", "diffusion"])
def test_train_losses_on_the_cpu_are_deterministic(family):
  pipe, state, batches = setup(family)
  first = train_losses(pipe, state, batches, cpu())
  assert len(first) == 3 and all(np.isfinite(first))
  assert train_losses(pipe, state, batches, cpu()) == first


def test_cached_decoding_gap_on_the_cpu():
  assert decoding_gap(cpu()) < 1e-4


def test_a_sampler_compiles_with_the_cpu_options():
  assert jax.default_backend() == "cpu" or accelerator() is not None
  (x,) = draw_with_every_sampler(["ddim"]).values()
  assert x.shape == (4, 8, 8, 1) and np.all(np.isfinite(x))


def test_gpu_tests_skip_without_an_accelerator(request):
  """conftest.py skips `gpu`-marked tests where JAX sees no accelerator."""
  items = [i for i in request.session.items if i.get_closest_marker("gpu")]
  if accelerator() is None:
    assert all(i.get_closest_marker("skip") for i in items)
  else:
    assert not any(i.get_closest_marker("skip") for i in items)
