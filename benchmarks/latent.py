"""Sampling speed of trained diffusion runs side by side: pixel space against latent space.

  python benchmarks/latent.py --workdirs=runs/diffusion-mnist,runs/latent-mnist \
      --sampler=heun --steps=18 --batch=64

For each workdir, its newest (EMA) params and its own `pipeline.sample`, compiled once for
`--batch` samples: images/s from the median of `--repeats` timed calls after a warm-up call
(a latent run's decode included, it is in the same program), and each run's rate relative
to the first workdir's.
"""

from __future__ import annotations

import argparse
import json

import jax
import measure

from gen.core import runs


def rate(workdir: str, sampler: str, steps: int, batch: int, repeats: int) -> dict:
  config, _, pipeline, state, step = runs.load_workdir(workdir)
  fn = runs.compile_sampler(pipeline, batch, {"sampler": sampler, "steps": steps})
  params, rng = pipeline.sample_params(state), jax.random.key(0)
  seconds = measure.median_time(lambda: jax.block_until_ready(fn(params, rng)), repeats)
  n = sum(x.size for x in jax.tree.leaves(params))
  return {"workdir": workdir, "step": int(step), "params": int(n),
          "latent": bool(config.get("latent", {}).get("autoencoder")),
          "seconds": seconds, "images_per_s": batch / seconds}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdirs", required=True, help="comma-separated training runs")
  ap.add_argument("--sampler", default="heun")
  ap.add_argument("--steps", type=int, default=18)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  rows = [rate(w, args.sampler, args.steps, args.batch, args.repeats)
          for w in args.workdirs.split(",")]
  for r in rows:
    r["vs_first"] = r["images_per_s"] / rows[0]["images_per_s"]
  if args.json:
    print(json.dumps(rows, indent=1))
    return rows
  print(f"{args.sampler}, {args.steps} steps, batch {args.batch}, {jax.devices()[0].platform}")
  for r in rows:
    print(f"  {r['workdir']}: {r['images_per_s']:.1f} images/s ({r['seconds']:.3f} s per "
          f"batch; {r['params']:,} params; {r['vs_first']:.2f}x the first)")
  return rows


if __name__ == "__main__":
  main()
