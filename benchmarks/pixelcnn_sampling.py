"""Times the PixelCNN samplers (naive full-network loop vs row-restricted) on a config.

  python benchmarks/pixelcnn_sampling.py --config=configs/pixelcnn/binarized_mnist.py [--batch=16]

Random-init weights (speed does not depend on training); the two samplers produce the same
pixels for the same key, which this script checks. Reports compile time separately, then
the median of --repeats timed runs after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from gen.core import config as config_lib
from gen.core import xla
from gen.core.data import ImageData
from gen.core.family import DataSpec
from gen.pixelcnn import make


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args()
  config = config_lib.load(args.config, overrides)
  data = ImageData(config)
  spec = DataSpec(data.shape, data.num_classes, config.data.preprocess)
  pipe = make(config, spec)
  state = pipe.init(jax.random.key(0), data.example_batch())
  results = {"config": args.config, "batch": args.batch, "shape": list(spec.shape),
             "device": str(jax.devices()[0].device_kind)}
  outs = {}
  for name in ("fast", "naive"):
    fn = xla.jit(lambda p, r, name=name: pipe.sample(p, r, args.batch, sampler=name),
                 pipe.compiler_options)
    t0 = time.perf_counter()
    compiled = fn.lower(state.params, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    outs[name] = np.asarray(compiled(state.params, jax.random.key(1)))  # Warm-up.
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(state.params, jax.random.key(1)))
      times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    results[name] = {"compile_s": round(compile_s, 2), "seconds": round(med, 3),
                     "images_per_s": round(args.batch / med, 2)}
  results["same_pixels"] = bool(np.array_equal(outs["fast"], outs["naive"]))
  results["speedup"] = round(results["naive"]["seconds"] / results["fast"]["seconds"], 1)
  if args.json:
    print(json.dumps(results))
  else:
    for k, v in results.items():
      print(f"{k}: {v}")


if __name__ == "__main__":
  main()
