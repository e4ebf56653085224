"""Our LLaMA-architecture decoding against transformers' LlamaForCausalLM of the same shape.

  python benchmarks/peers/llama.py [--batch=1,8] [--new_tokens=64] [--context=256]
      [--layers=30] [--width=576] [--heads=9] [--kv_heads=3] [--mlp=1536] [--vocab=49152]
      [--json]

The default shape is SmolLM-135M's: 30 layers, width 576, 9 query heads sharing 3 key/value
heads of 64, SwiGLU 1536 wide, a 49152-token vocabulary, tied embeddings, rope_theta 10000.
Both models have random weights in float32. Our model is the one `gen import` builds for that
config.json (gen.lm.hf_llama), with a key/value cache of `--context` positions; theirs is
transformers' with its dynamic cache. Each decodes greedily from a 1-token prompt for
`--new_tokens` tokens: ours in one compiled loop, theirs with `generate` and
`min_new_tokens = max_new_tokens`, so that neither stops early. Each pair is timed in turns;
`ratio` is our throughput over theirs.

`bound_tokens_per_s` is the memory bound on decoding at that batch: the batch over the time
of one compiled program that reads every weight once (a sum of each parameter array), timed
in the same turns. A decoding step reads every weight at least once, so no program on this
machine decodes faster; `bound_ratio` is that bound over transformers' throughput, the
highest `ratio` any implementation could reach here.
"""

from __future__ import annotations

import argparse

import compare
import torch
import jax
import jax.numpy as jnp
from transformers import LlamaConfig, LlamaForCausalLM

import measure
import sampling
from gen.lm import hf_llama, make
from gen.lm.data import token_spec


def shape(args) -> dict:
  """The architecture, as gen.lm.hf_llama.read_config gives it."""
  return {"kind": "llama", "arch": "LlamaForCausalLM", "vocab_size": args.vocab,
          "hidden_size": args.width, "intermediate_size": args.mlp,
          "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
          "num_key_value_heads": args.kv_heads, "head_dim": args.width // args.heads,
          "max_position_embeddings": args.context, "norm_eps": 1e-5, "tied": True,
          "use_bias": False, "qkv_bias": False, "rope_theta": 10000.0,
          "rope_scaling": {"rope_type": "default"}, "config_ids": {}}


def theirs(a: dict) -> LlamaForCausalLM:
  cfg = LlamaConfig(vocab_size=a["vocab_size"], hidden_size=a["hidden_size"],
                    intermediate_size=a["intermediate_size"],
                    num_hidden_layers=a["num_hidden_layers"],
                    num_attention_heads=a["num_attention_heads"],
                    num_key_value_heads=a["num_key_value_heads"],
                    max_position_embeddings=a["max_position_embeddings"], rms_norm_eps=1e-5,
                    tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=1)
  return LlamaForCausalLM(cfg).eval()


def generate_fn(model, batch: int, new_tokens: int):
  prompt = torch.zeros((batch, 1), dtype=torch.long)

  def run():
    with torch.inference_mode():
      out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True)
    assert out.shape == (batch, 1 + new_tokens), out.shape
  return run


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--batch", default="1,8", help="decoding batch sizes")
  ap.add_argument("--new_tokens", type=int, default=64)
  ap.add_argument("--context", type=int, default=256)
  ap.add_argument("--layers", type=int, default=30)
  ap.add_argument("--width", type=int, default=576)
  ap.add_argument("--heads", type=int, default=9)
  ap.add_argument("--kv_heads", type=int, default=3)
  ap.add_argument("--mlp", type=int, default=1536)
  ap.add_argument("--vocab", type=int, default=49152)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  versions = compare.setup(args.threads)
  a = shape(args)
  config = hf_llama.workdir_config(a, args.context)
  config.sample.temperature, config.sample.top_k = 0.0, 0  # Greedy, as theirs.
  spec = token_spec(args.context, vocab_size=args.vocab)
  pipe = make(config, spec)
  peak = measure.peaks("float32")
  out = {"shape": {k: v for k, v in a.items() if k not in ("kind", "arch", "config_ids")},
         **measure.device_info(), **versions, "peak": peak}
  model = theirs(a)
  params = sampling.init_params(pipe, spec)
  read_all = jax.jit(lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(p)))
  out["weight_bytes"] = sum(x.nbytes for x in jax.tree.leaves(params))
  decode = []
  for bench in sampling.benches(config, spec, pipe, [int(b) for b in args.batch.split(",")],
                                new_tokens=args.new_tokens):
    m = bench.meta
    t = compare.alternate({"ours": bench.run,
                           "theirs": generate_fn(model, m["batch"], m["new_tokens"]),
                           "read": lambda: read_all(params)},
                          args.repeats)
    row = bench.result(t["ours"], peak)
    row["transformers_tokens_per_s"] = bench.items / t["theirs"]
    row["ratio"] = t["theirs"] / t["ours"]
    row["bound_tokens_per_s"] = m["batch"] / t["read"]
    row["bound_ratio"] = row["bound_tokens_per_s"] / row["transformers_tokens_per_s"]
    decode.append(row)
  out["decode"] = decode
  measure.report(out, args.json)


if __name__ == "__main__":
  main()
