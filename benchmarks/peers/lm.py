"""Our GPT against transformers' GPT2LMHeadModel of the same shape, in one run.

  python benchmarks/peers/lm.py --config=configs/lm/shakespeare_char_cpu.py [--batch=1,32]
      [--compile] [--json] [--config.a.b=V ...]      # --batch= : training only

Both with random weights in float32: layers, heads, width, context and vocabulary from the
config (GELU tanh MLP, learned positions, tied embeddings, no dropout). Decoding: a
1-token prompt continued to fill the context with the config's temperature and top-k,
ours in one compiled loop, theirs `generate` with the KV cache and `min_new_tokens =
max_new_tokens` so neither stops early. Training: a step at the config's batch, AdamW
with the config's settings and global-norm clipping, ours compiled with the state
donated, theirs eager (and `torch.compile`d with --compile). Each pair is timed in turns;
`ratio` is our throughput over theirs.
"""

from __future__ import annotations

import argparse

import compare
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

import measure
import sampling
import train_step


def gpt2_like(config, spec) -> GPT2LMHeadModel:
  m = config.model
  if (m.norm, m.mlp, m.positions, m.tie_embeddings, m.use_bias) != (
      "layernorm", "gelu", "learned", True, True):
    raise ValueError("transformers' GPT-2 has LayerNorm, a GELU MLP, learned positions, tied "
                     "embeddings and biases: set those in the config")
  if m.dtype != "float32":
    raise ValueError("the peers compare float32: add --config.model.dtype=float32")
  cfg = GPT2Config(vocab_size=spec.extra["vocab_size"], n_positions=spec.shape[0], n_embd=m.width,
                   n_layer=m.num_layers, n_head=m.num_heads, activation_function="gelu_new",
                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                   eos_token_id=spec.extra["vocab_size"] - 1, pad_token_id=spec.extra["vocab_size"] - 1)
  return GPT2LMHeadModel(cfg).eval()


def generate_fn(model, batch: int, new_tokens: int, sc):
  prompt = torch.zeros((batch, 1), dtype=torch.long)
  kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, use_cache=True, do_sample=sc.temperature > 0)
  if sc.temperature > 0:
    kw.update(temperature=sc.temperature, top_k=sc.top_k or None, top_p=sc.top_p)

  def run():
    with torch.inference_mode():
      out = model.generate(prompt, **kw)
    assert out.shape == (batch, 1 + new_tokens), out.shape
  return run


def train_fn(model, config, spec, batch: int, compiled: bool):
  o = config.optim
  params = [p for p in model.parameters() if p.requires_grad]
  groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.b1, o.b2), eps=1e-8)
  tokens = torch.randint(0, spec.extra["vocab_size"], (batch, spec.shape[0] + 1))
  x, y = tokens[:, :-1], tokens[:, 1:]
  model.train()
  forward = torch.compile(model) if compiled else model

  def run():
    logits = forward(input_ids=x).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if o.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
    opt.step()
  return run


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default="configs/lm/shakespeare_char_cpu.py")
  ap.add_argument("--batch", default="1,32", help="decoding batch sizes (empty: training only)")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--compile", action="store_true", help="also torch.compile the train step")
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args(argv)
  versions = compare.setup(args.threads)
  config, spec, pipe = measure.load(args.config, overrides)
  peak = measure.peaks(measure.dtype_of(config))
  out = {"config": args.config, **measure.device_info(), **versions, "peak": peak}

  decode, batches = [], [int(b) for b in args.batch.split(",") if b]
  for bench in sampling.benches(config, spec, pipe, batches) if batches else ():
    m = bench.meta
    theirs = generate_fn(gpt2_like(config, spec), m["batch"], m["new_tokens"], config.sample)
    t = compare.alternate({"ours": bench.run, "theirs": theirs}, args.repeats)
    row = bench.result(t["ours"], peak)
    row["transformers_tokens_per_s"] = bench.items / t["theirs"]
    row["ratio"] = t["theirs"] / t["ours"]
    decode.append(row)
  out["decode"] = decode

  ours = train_step.bench(config, spec, pipe)
  runs = {"ours": ours.run, "eager": train_fn(gpt2_like(config, spec), config, spec,
                                               ours.meta["batch"], False)}
  compile_s = None
  if args.compile:
    runs["compiled"] = train_fn(gpt2_like(config, spec), config, spec, ours.meta["batch"], True)
    compile_s = compare.first_call(runs["compiled"])
  t = compare.alternate(runs, args.repeats)
  row = train_step.result(ours, t["ours"], peak)
  for k in runs.keys() - {"ours"}:
    row[f"transformers_{k}_tokens_per_s"] = ours.items / t[k]
    row[f"ratio_{k}"] = t[k] / t["ours"]
  if compile_s is not None:
    row["transformers_compile_s"] = compile_s
  out["train"] = [row]
  measure.report(out, args.json)


if __name__ == "__main__":
  main()
