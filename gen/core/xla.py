"""XLA compiler options a family asks for, applied wherever the core compiles its functions.

A `Pipeline` may carry `compiler_options` (XLA `DebugOptions` fields by name, as
`jax.jit(..., compiler_options=...)` takes them). Options for one backend
(`xla_cpu_*`, `xla_gpu_*`, `xla_tpu_*`) are dropped when another backend compiles, so a
family can ask for CPU tuning without touching its GPU or TPU programs. Options given
here take precedence over the same flags in `XLA_FLAGS` for these programs only.

`CONVNET_CPU`: on CPU, XLA hands convolutions, matmuls, reductions and elementwise fusions
to YNNPACK by default. For the convolutional families (UNet diffusion, GAN, PixelCNN,
classifier), keeping only matmuls and reductions there and compiling convolutions and
elementwise work with XLA's own emitters made the train step 1.16-1.4x and UNet sampling
1.4x faster on the 2-core x86 CPU of `benchmarks/RESULTS.md` (each variant compiled in one
process and timed in turns). The VAE (no difference) and the transformer LM (its decoding
at batch 32 is a third slower without YNNPACK's elementwise fusions) ask for nothing.
`python benchmarks/compiler_options.py --config=FILE` checks the choice on another CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

CONVNET_CPU: Mapping[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}

_BACKEND_PREFIX = {"cpu": "xla_cpu_", "gpu": "xla_gpu_", "cuda": "xla_gpu_", "rocm": "xla_gpu_",
                   "tpu": "xla_tpu_"}
_ANY_BACKEND = tuple(set(_BACKEND_PREFIX.values()))


def for_backend(options: Mapping[str, Any] | None, backend: str | None = None) -> dict | None:
  """The `options` that apply to `backend` (default: JAX's default backend), or None."""
  if not options:
    return None
  backend = backend or jax.default_backend()
  mine = _BACKEND_PREFIX.get(backend, f"xla_{backend}_")
  kept = {k: v for k, v in options.items()
          if not k.startswith(_ANY_BACKEND) or k.startswith(mine)}
  return kept or None


def jit(fn: Callable, options: Mapping[str, Any] | None = None, **kwargs) -> Callable:
  """`jax.jit(fn, **kwargs)` compiled with the `options` that apply to this backend."""
  return jax.jit(fn, compiler_options=for_backend(options), **kwargs)
