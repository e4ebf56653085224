"""What the peer scripts share: the path to the benchmarks, torch's threads and versions,
and timing ours and theirs in turns. Import it before torch."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Idle OpenMP threads sleep rather than spin: on a shared CPU, a thread spinning for a
# descheduled partner made each transformers training step about 20x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same for the OpenMP runtime of torch.compile's CPU kernels, whose threads otherwise spin
# for 200 ms after each kernel: with a compiled model in the process, gen's program timed next
# in turn slowed down (stable_diffusion.py, batch 4, shared machine: 1.10 images/s, 1.86 with
# this set; the compiled model itself 1.13 and 1.42).
os.environ.setdefault("KMP_BLOCKTIME", "0")

import torch  # noqa: E402
from measure import in_turns as alternate  # noqa: E402, F401


def setup(threads: int) -> dict:
  """Pins torch to `threads` threads; the versions of the PyTorch stack."""
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  import diffusers
  import transformers
  return {"torch": torch.__version__, "diffusers": diffusers.__version__,
          "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}


def first_call(fn: Callable[[], object]) -> float:
  """Seconds of the first call (torch.compile compiles then)."""
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0
