"""Scores a run's samples with a reward: the before/after measurement of fine-tuning.

  python -m gen.lm.finetune.score --workdir=runs/chorales-ppo [--step=N] [--num=512]
      [--ref=WORKDIR] [--reward=NAME] [--target=X] [--prompt=TEXT] [--max_new_tokens=N]
      [--seed=0] [--batch=64] [--out=FILE] [--write=8]

Samples `--num` continuations of the start token (or `--prompt`) from the run's newest
checkpoint (or `--step`'s) with the fine-tuning policy (temperature 1, no top-k/top-p),
and prints the mean and standard error of the reward, its parts, the KL to a reference
model (nats per sequence: the sum over sampled tokens of the exact per-token KL), the
entropy per token and the length. The reference is `--ref`'s model, else the run's own
frozen reference (a fine-tuning run's; a LoRA run's frozen base); a plain run without `--ref`
gets no KL.
`--reward`, `--target` and `--max_new_tokens` default to the run's `finetune` section
(`--max_new_tokens=0`: fill the context). `--out` writes the first `--write` samples
with the tokenizer (text; for chorales MIDI, WAV and a piano roll) and the numbers as
JSON next to them.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

FLAGS = {"workdir": "", "step": -1, "ref": "", "reward": "", "target": -1.0, "prompt": None,
         "num": 512, "batch": 64, "max_new_tokens": -1, "seed": 0, "out": "", "write": 8}


def parse(argv, flags):
  """`--name=value` flags typed like their defaults; an unknown flag is an error."""
  values = dict(flags)
  for arg in argv:
    name, eq, value = arg.lstrip("-").partition("=")
    if not arg.startswith("--") or name not in flags or not eq:
      raise SystemExit(f"bad argument '{arg}'; flags: "
                       + " ".join(f"--{k}=" for k in flags))
    default = flags[name]
    values[name] = value if default is None else type(default)(value)
  return values


def load_policy(workdir: str, ref: str = "", step: int | None = None):
  """(config, tokenizer, model, pipeline, params, reference params or None) of a run's
  newest checkpoint (or the one at `step`)."""
  from gen.core import runs
  from gen.core.lora import LoraState
  from gen.lm import steps as lm
  from gen.lm.data import tokenizer_of

  config, spec, pipeline, state, step = runs.load_workdir(workdir, step=step)
  tokenizer = tokenizer_of(spec)
  if tokenizer is None:
    raise SystemExit(f"{workdir} is not a token model (its data spec holds no tokenizer)")
  ref_params = getattr(state, "ref_params", None)
  if ref_params is None and isinstance(state, LoraState):
    ref_params = state.base_params  # A LoRA run's reference is its frozen base.
  if ref:
    _, _, ref_pipeline, ref_state, _ = runs.load_workdir(ref)
    ref_params = ref_pipeline.sample_params(ref_state)
  print(f"{workdir}: step {step}", file=sys.stderr)
  model = lm.parts(config, spec)
  return config, tokenizer, model, pipeline, pipeline.sample_params(state), ref_params


def prompt_ids(tokenizer, prompt: str | None) -> list[int]:
  ids = tokenizer.encode(prompt) if prompt else []
  ids = ids or list(tokenizer.start_ids)
  if not ids:
    raise SystemExit("this tokenizer has no start token: give --prompt")
  return ids


def finetune_defaults(config, values):
  """--reward, --target and --max_new_tokens from the run's `finetune` section if unset."""
  ft = config.get("finetune", None)
  reward = values["reward"] or (ft.reward if ft is not None else "")
  if not reward:
    raise SystemExit("--reward is required for a run without a finetune section")
  target = values["target"] if values["target"] >= 0 else (ft.target if ft is not None else 0.0)
  new = values["max_new_tokens"]
  if new < 0:
    new = ft.max_new_tokens if ft is not None else 0
  return reward, target, new


def make_sampler(config, pipeline, prompt: list[int], batch: int, max_new_tokens: int):
  """A compiled `(params, rng) -> (tokens [batch, L], generated mask [batch, L])` from
  `prompt` with the policy (temperature 1, no filtering)."""
  max_len = config.data.seq_len
  new = max_new_tokens or max_len - len(prompt)
  if len(prompt) + new > max_len:
    raise SystemExit(f"prompt ({len(prompt)}) + max_new_tokens ({new}) exceed the context "
                     f"({max_len})")
  p = jnp.asarray([prompt] * batch, jnp.int32)
  lens = jnp.full((batch,), len(prompt), jnp.int32)

  @jax.jit
  def run(params, rng):
    tokens = pipeline.sample(params, rng, batch, p, lens, max_new_tokens=new, temperature=1.0,
                             top_k=0, top_p=1.0)
    return tokens, (jnp.arange(tokens.shape[1])[None] >= len(prompt)) & (tokens >= 0)

  return run


def make_scorer(model, reward_fn):
  """A compiled `(params, ref_params, tokens, generated) -> {name: [B]}`."""
  import functools

  from gen.lm import steps as lm
  from gen.lm.finetune import losses

  logits_fn = functools.partial(lm.logits, model)

  @jax.jit
  def score(params, ref_params, tokens, generated):
    out = dict(reward_fn(tokens, generated))
    mask = generated[:, 1:].astype(jnp.float32)
    inputs = jnp.maximum(tokens, 0)[:, :-1]
    logits = logits_fn(params, inputs)
    n = jnp.maximum(mask.sum(-1), 1.0)
    out["entropy"] = jnp.sum(losses.token_entropy(logits) * mask, -1) / n
    out["length"] = mask.sum(-1)
    if ref_params is not None:
      kl = losses.token_kl(logits, logits_fn(ref_params, inputs))
      out["kl"] = jnp.sum(kl * mask, -1)
    return out

  return score


def main(argv=None) -> int:
  from gen.lm.finetune import rewards

  values = parse(sys.argv[1:] if argv is None else argv, FLAGS)
  if not values["workdir"]:
    raise SystemExit("--workdir is required")
  config, tokenizer, model, pipeline, params, ref_params = load_policy(
      values["workdir"], values["ref"], None if values["step"] < 0 else values["step"])
  name, target, new = finetune_defaults(config, values)
  reward_fn = rewards.make(name, tokenizer, target)
  prompt = prompt_ids(tokenizer, values["prompt"])
  bs = min(values["batch"], values["num"])
  sample = make_sampler(config, pipeline, prompt, bs, new)
  score = make_scorer(model, reward_fn)
  parts, rows = {}, []
  rng = jax.random.key(values["seed"])
  for i in range(-(-values["num"] // bs)):
    tokens, generated = sample(params, jax.random.fold_in(rng, i))
    for k, v in jax.device_get(score(params, ref_params, tokens, generated)).items():
      parts.setdefault(k, []).append(np.asarray(v))
    rows += [[int(t) for t in r if t >= 0] for r in np.asarray(tokens)]
  n = values["num"]
  summary = {"workdir": values["workdir"], "reward_name": name, "num": n}
  for k, v in parts.items():
    v = np.concatenate(v)[:n]
    summary[k] = float(v.mean())
    summary[k + "_stderr"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
  for k in parts:
    print(f"{k:>14s}: {summary[k]:.4f} +- {summary[k + '_stderr']:.4f}")
  if values["out"]:
    paths = tokenizer.write_samples(rows[:values["write"]], values["out"])
    base = os.path.splitext(values["out"])[0]
    with open(base + ".json", "w") as f:
      json.dump(summary, f, indent=1)
    print("wrote", paths[-2:] if len(paths) > 1 else paths, base + ".json", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
