"""Where a `--profile=DIR` trace spent its time: XLA's compiled ops, summed by kind.

  python benchmarks/trace_summary.py DIR [--top=15]

Reads the newest `DIR/plugins/profile/*/*.trace.json.gz` (Chrome-trace JSON written by
`jax.profiler.trace`), keeps the ops of the compiled programs (not Python frames or the
runtime's own spans), sums their durations by name with the `.N` suffix dropped
(`transpose_copy_fusion.23` counts as `transpose_copy_fusion`) and prints each kind's
milliseconds and share.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re

RUNTIME = re.compile(r"^\$|Thunk|Pjit|Execut|Await|ParseArguments|CreateOutputs|Handle inputs|"
                     r"^end: ")


def summary(folder: str) -> list[tuple[str, float]]:
  """(kind, milliseconds) of the newest trace under `folder`, largest first."""
  paths = sorted(glob.glob(os.path.join(folder, "plugins", "profile", "*", "*.trace.json.gz")))
  if not paths:
    raise SystemExit(f"no *.trace.json.gz under {folder}/plugins/profile")
  with gzip.open(paths[-1]) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  kinds = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not RUNTIME.search(e["name"]):
      kinds[re.sub(r"\.\d+$", "", e["name"])] += e.get("dur", 0) / 1e3
  return kinds.most_common()


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("folder")
  ap.add_argument("--top", type=int, default=15)
  args = ap.parse_args()
  rows = summary(args.folder)
  total = sum(ms for _, ms in rows)
  for kind, ms in rows[:args.top]:
    print(f"{ms:10.1f} ms {100 * ms / total:5.1f}%  {kind}")


if __name__ == "__main__":
  main()
