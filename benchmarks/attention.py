"""The attention core alone, unmasked at the diffusion networks' shapes or causal at the
language models' (`--causal`): jax's `jax.nn.dot_product_attention`, gen's (`gen.nn.attention.dot_product_attention`: on CPU two
einsums, whole or in query blocks recomputed in the backward pass) and, where torch is
installed, torch's `F.scaled_dot_product_attention`. Forward, and forward + backward (the
gradients of q, k and v), median milliseconds of `--repeats` calls timed in turns.

  python benchmarks/attention.py                      # the shapes below
  python benchmarks/attention.py --shapes=2,1024,4,40,1024 --blocks=1x128,2x256 --repeats=9
  python benchmarks/attention.py --causal          # CAUSAL_SHAPES: GPT-2 small, SmolLM-135M

A shape is B,T,N,H,S[,K]: q [B, T, N, H], keys and values [B, S, K, H] (K = N if left out;
fewer key/value heads are shared by groups of query heads). `gen` is what the
networks call (in blocks for large logits, see its docstring); `whole` and `RxQ` (blocks
of R (batch, head) rows and Q queries) force one form.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

from gen.nn import attention  # noqa: E402

SHAPES = {  # name: (B, T, N, H, S)
    "SD-UNet 64x64 self (SD 1.x at 512 px)": (1, 4096, 8, 40, 4096),
    "SD-UNet 32x32 self": (2, 1024, 4, 40, 1024),
    "SD-UNet 32x32 cross": (2, 1024, 4, 40, 77),
    "512 tokens": (2, 512, 4, 64, 512),
    "DiT-S/2": (8, 256, 6, 64, 256),
    "CIFAR-10 UNet 16x16": (8, 256, 1, 256, 256),
    "SD-UNet 16x16 self": (2, 256, 8, 80, 256),
    "small": (8, 64, 4, 32, 64),
}
CAUSAL_SHAPES = {  # name: (B, T, N, H, S, K)
    "GPT-2 small, context 128, batch 8": (8, 128, 12, 64, 128, 12),
    "GPT-2 small, context 1024": (1, 1024, 12, 64, 1024, 12),
    "SmolLM-135M, context 512 (3 key/value heads)": (2, 512, 9, 64, 512, 3),
}


def _torch_core():
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    return None

  def make(q, k, v, g, is_causal):
    tq, tk, tv, tg = (torch.from_numpy(np.array(x)).transpose(1, 2).contiguous()
                      for x in (q, k, v, g))
    sdpa = functools.partial(F.scaled_dot_product_attention, is_causal=is_causal,
                             enable_gqa=k.shape[2] != q.shape[2])

    def fwd():
      with torch.no_grad():
        return sdpa(tq, tk, tv)

    def fwd_bwd():
      a, b, c = (x.detach().requires_grad_() for x in (tq, tk, tv))
      sdpa(a, b, c).backward(tg)
      return a.grad
    return fwd, fwd_bwd
  return make


def forms(b: int, t: int, n: int, blocks, is_causal: bool = False) -> dict:
  causal = functools.partial(functools.partial, is_causal=is_causal)
  out = {"jax": causal(jax.nn.dot_product_attention),
         "gen": causal(attention.dot_product_attention),
         "whole": causal(attention.whole_attention)}
  for rows, queries in blocks:
    if (b * n) % rows == 0 and t % queries == 0:
      out[f"{rows}x{queries}"] = functools.partial(attention.dot_product_attention,
                                                   block=(rows, queries), is_causal=is_causal)
  return out


def run_shape(shape, blocks, repeats: int, torch_make=None, is_causal: bool = False) -> dict:
  b, t, n, h, s, kv = (*shape, shape[2]) if len(shape) == 5 else shape
  ks = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(ks[0], (b, t, n, h))
  k, v = (jax.random.normal(key, (b, s, kv, h)) for key in ks[1:3])
  g = jax.random.normal(ks[3], q.shape)
  runs, want = {}, jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)
  errors = {}
  for name, fn in forms(b, t, n, blocks, is_causal).items():
    fwd = jax.jit(fn)
    grad = jax.jit(jax.grad(lambda q, k, v, fn=fn: jnp.vdot(fn(q, k, v), g), argnums=(0, 1, 2)))
    errors[name] = float(jnp.max(jnp.abs(fwd(q, k, v) - want)))
    runs[f"{name} fwd"] = functools.partial(fwd, q, k, v)
    runs[f"{name} fwd+bwd"] = functools.partial(grad, q, k, v)
  if torch_make is not None:
    runs["torch fwd"], runs["torch fwd+bwd"] = torch_make(q, k, v, g, is_causal)
  times = measure.in_turns(runs, repeats)
  rows = {name: {"fwd_ms": 1e3 * times[f"{name} fwd"], "fwd_bwd_ms": 1e3 * times[f"{name} fwd+bwd"],
                 **({"max_abs_err": errors[name]} if name in errors else {})}
          for name in [*errors, *(["torch"] if torch_make else [])]}
  return {"shape": list(shape), "causal": is_causal, "forms": rows}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--shapes", default="", help="B,T,N,H,S[,K];... (default: SHAPES, or "
                  "CAUSAL_SHAPES with --causal)")
  ap.add_argument("--causal", action="store_true", help="causal attention (is_causal=True)")
  ap.add_argument("--blocks", default="", help="RxQ,...: blocks of R (batch, head) rows and Q "
                  "queries to force, besides gen's own choice and the whole")
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--no_torch", action="store_true")
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  shapes = ({s: tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")}
            if args.shapes else CAUSAL_SHAPES if args.causal else SHAPES)
  blocks = [tuple(int(x) for x in b.split("x")) for b in args.blocks.split(",") if b]
  torch_make = None if args.no_torch else _torch_core()
  out = measure.device_info()
  out["results"] = [{"name": name, **run_shape(shape, blocks, args.repeats, torch_make,
                                                args.causal)}
                    for name, shape in shapes.items()]
  measure.report(out, args.json)


if __name__ == "__main__":
  main()
