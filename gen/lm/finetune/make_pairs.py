"""Builds DPO preference pairs from a reward: two samples per prompt, the better one chosen.

  python -m gen.lm.finetune.make_pairs --workdir=runs/chorales --reward=chorale_rules \\
      --num=1024 --out=runs/chorale-pairs.jsonl [--target=X] [--prompt=TEXT]
      [--max_new_tokens=0] [--min_margin=0.0] [--seed=0] [--batch=64]

Samples pairs of continuations of the start token (or `--prompt`) with the run's model
(temperature 1, no filtering), scores both with the reward, and writes one JSON line per
pair whose rewards differ by more than `--min_margin` (ties teach nothing):
`{"prompt", "chosen", "rejected"}` as text, the same as token ids (`*_ids`, exact: they
keep the end token) and both rewards. `gen.lm.data.pairs` reads the file (`data.pairs`).
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

from gen.lm.finetune import rewards
from gen.lm.finetune.score import (finetune_defaults, load_policy, make_sampler, parse,
                                   prompt_ids)

FLAGS = {"workdir": "", "reward": "", "target": -1.0, "prompt": None, "num": 1024, "out": "",
         "max_new_tokens": -1, "min_margin": 0.0, "seed": 0, "batch": 64}


def main(argv=None) -> int:
  values = parse(sys.argv[1:] if argv is None else argv, FLAGS)
  for k in ("workdir", "out"):
    if not values[k]:
      raise SystemExit(f"--{k} is required")
  config, tokenizer, _, pipeline, params, _ = load_policy(values["workdir"])
  name, target, new = finetune_defaults(config, values)
  reward_fn = jax.jit(rewards.make(name, tokenizer, target))
  prompt = prompt_ids(tokenizer, values["prompt"])
  half = max(1, values["batch"] // 2)
  sample = make_sampler(config, pipeline, prompt, 2 * half, new)
  os.makedirs(os.path.dirname(os.path.abspath(values["out"])), exist_ok=True)
  written, tries, gaps = 0, 0, []
  rng = jax.random.key(values["seed"])
  with open(values["out"], "w") as f:
    while written < values["num"]:
      if tries > 20 * (values["num"] // half + 1):
        raise SystemExit(f"only {written} pairs differ by more than --min_margin after "
                         f"{tries} batches")
      tokens, generated = sample(params, jax.random.fold_in(rng, tries))
      r = np.asarray(reward_fn(tokens, generated)["reward"])
      tokens = np.asarray(tokens)
      tries += 1
      for i in range(half):
        a, b = i, i + half
        if abs(r[a] - r[b]) <= values["min_margin"] or written >= values["num"]:
          continue
        good, bad = (a, b) if r[a] > r[b] else (b, a)
        cont = lambda j: [int(t) for t in tokens[j, len(prompt):] if t >= 0]
        f.write(json.dumps({
            "prompt": tokenizer.decode(prompt), "chosen": tokenizer.decode(cont(good)),
            "rejected": tokenizer.decode(cont(bad)), "prompt_ids": prompt,
            "chosen_ids": cont(good), "rejected_ids": cont(bad),
            "chosen_reward": float(r[good]), "rejected_reward": float(r[bad])}) + "\n")
        gaps.append(float(r[good] - r[bad]))
        written += 1
  print(f"wrote {written} pairs to {values['out']} ({tries} batches of {2 * half} samples); "
        f"mean reward gap {np.mean(gaps):.4f}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
