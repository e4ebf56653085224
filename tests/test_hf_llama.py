"""LLaMA, Mistral, Qwen2, Qwen3 and Gemma from transformers: `gen import` of a saved folder gives
transformers' logits (full context and cached decoding) and greedy tokens, its tokenizer.json
gives transformers' ids, the workdir samples from a prompt, and bad folders are one-line errors
that write nothing.

The default run reads the committed fixtures (tests/fixtures/transformers_llama, written by
tests/fixtures/make_transformers_llama.py with transformers' reference outputs beside them): no
torch needed. The `peers` tests build fresh random models with torch and transformers and
compare live; they are skipped where those are not installed.
"""

import functools
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, cli_import, fixture_script

from gen import cli
from gen.core import config as config_lib
from gen.core import runs
from gen.core import train as train_lib
from gen.lm import hf_llama
from gen.lm import steps as lm
from gen.lm.data import tokenizer_json, tokenizer_of

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "transformers_llama")
NAMES = ["llama", "qwen2", "qwen3", "gemma", "mistral"]
TOLERANCE = 1e-5  # Max |logit difference| in float32.


def _ref(folder):
  with open(os.path.join(folder, "reference.json"), encoding="utf-8") as f:
    ref = json.load(f)
  return ref, np.load(os.path.join(folder, "reference.npz"))["logits"]


@functools.cache
def _read(name):
  """(architecture, config, spec, params) of a fixture, read as `gen import` does."""
  a, config, spec, _, params = hf_llama.read(os.path.join(FIXTURES, name))
  return a, config, spec, params


def _compare(config, spec, params, prompt, greedy, logits_ref):
  """(max |full-context logit difference|, max |cached-decoding logit difference|, greedy ids,
  full-context logits) of gen's model against transformers' reference.

  One decoding of two rows: the prompt alone, continued greedily (gen's greedy tokens), and
  the prompt with transformers' greedy tokens, which are fed one at a time through the cache
  (so the cached logits follow transformers' path even where a near-tie could flip)."""
  model = lm.parts(config, spec)
  full = np.asarray(jax.jit(lambda p, x: lm.logits(model, p, x))(
      params, jnp.array([prompt + greedy])))[0]
  n, g = len(prompt), len(greedy)
  rows = jnp.array([prompt + [0] * g, prompt + greedy])
  tokens, cached = jax.jit(lambda p: lm.decode(
      model, p, jax.random.key(0), rows, jnp.array([n, n + g]), g, temperature=0.0,
      return_logits=True))(params)
  cached = np.asarray(cached)[1, n - 1:n + g - 1]  # The logits after each forced token.
  return (float(np.abs(full - logits_ref).max()),
          float(np.abs(cached - logits_ref[n - 1:-1]).max()),
          np.asarray(tokens)[0, n:n + g].tolist(), full)


@pytest.mark.parametrize("name", NAMES)
def test_imported_model_matches_transformers(name):
  """Measured (float32, CPU), full context / cached decoding: llama 5.7e-6 / 4.3e-6, qwen2
  2.6e-6 / 3.4e-6, qwen3 3.6e-6 / 3.1e-6, gemma 5.1e-7 / 6.0e-7, mistral 5.6e-6 / 7.3e-6, with
  logits up to 3.5; transformers' own float32 logits are 3.3e-7 to 4.3e-6 from its float64
  ones (reference.json's f32_vs_f64)."""
  folder = os.path.join(FIXTURES, name)
  ref, logits_ref = _ref(folder)
  _, config, spec, params = _read(name)
  full, cached, greedy, _ = _compare(config, spec, params, ref["prompt"], ref["greedy"],
                                     logits_ref)
  assert full <= TOLERANCE and cached <= TOLERANCE, (full, cached)
  assert greedy == ref["greedy"]


def test_transformers_4_config_reads_the_same(tmp_path):
  """transformers 4's config.json (rope_theta and rope_scaling at the top, "type" for the
  older files) reads as transformers 5's rope_parameters does."""
  src = tmp_path / "src"
  shutil.copytree(os.path.join(FIXTURES, "llama"), src)
  new = hf_llama.read_config(str(src))
  rope = dict(new["rope_scaling"])
  rope_type = rope.pop("rope_type")
  for key in ("rope_type", "type"):
    _edit_config(str(src), rope_parameters=None, rope_theta=new["rope_theta"],
                 rope_scaling={key: rope_type, **rope})
    assert hf_llama.read_config(str(src)) == new
  _edit_config(str(src), rope_scaling=None)  # No scaling: the default rotation of rope_theta.
  old = hf_llama.read_config(str(src))
  assert old["rope_scaling"] == {"rope_type": "default"} and old["rope_theta"] == 5e5


def test_the_fixtures_cover_the_architecture():
  """Each fixture exercises what it is there for (a test passing on a fixture without GQA or
  rope scaling would prove nothing)."""
  a = {n: _read(n)[0] for n in NAMES}
  assert a["llama"]["num_key_value_heads"] == 2 and a["llama"]["num_attention_heads"] == 6
  assert a["llama"]["head_dim"] * 6 != a["llama"]["hidden_size"] and not a["llama"]["tied"]
  assert a["llama"]["rope_scaling"]["rope_type"] == "llama3" and a["llama"]["rope_theta"] != 1e4
  assert a["llama"]["rope_scaling"]["original_max_position_embeddings"] < 64
  assert a["qwen2"]["qkv_bias"] and a["qwen2"]["num_key_value_heads"] == 1 and a["qwen2"]["tied"]
  config = _read("qwen3")[1]
  assert config.model.qk_norm and config.model.head_dim * 4 != config.model.width
  config = _read("gemma")[1]
  assert (config.model.norm, config.model.mlp, config.model.embed_scale) == (
      "rmsnorm_1p", "geglu", True)
  for name in NAMES:  # Norm weights (and Qwen2's biases) far from their initial values.
    params = _read(name)[3]
    scale = np.asarray(params["block0"]["norm1"]["scale"])
    assert scale.std() > 0.1, name
  assert np.asarray(_read("qwen2")[3]["block0"]["attn"]["kv"]["bias"]).std() > 0.1


def test_as_many_key_value_heads_as_query_heads(tmp_path):
  """The llama fixture with each key/value head repeated for the 3 query heads it serves
  (num_key_value_heads 6 = num_attention_heads, transformers' grouping) computes the same
  logits; gen reads it into one qkv kernel, GPT-2's layout."""
  from gen.lm import hf_export

  src = os.path.join(FIXTURES, "llama")
  tensors = hf_llama.Tensors(src)
  out = {}
  for name in tensors.files:
    x = tensors.read(name)
    if name.endswith(("k_proj.weight", "v_proj.weight")):  # [2 * 16, E] -> [6 * 16, E]
      x = np.repeat(x.reshape(2, 16, -1), 3, axis=0).reshape(96, -1)
    out[name] = x
  dest = tmp_path / "mha"
  shutil.copytree(src, dest)
  hf_export.save_safetensors(str(dest / "model.safetensors"), out)
  _edit_config(str(dest), num_key_value_heads=6)
  a, config, spec, _, params = hf_llama.read(str(dest))
  assert set(params["block0"]["attn"]) == {"qkv", "out"} and config.model.num_kv_heads == 6
  ref, logits_ref = _ref(src)
  full, cached, greedy, _ = _compare(config, spec, params, ref["prompt"], ref["greedy"],
                                     logits_ref)
  assert full <= TOLERANCE and cached <= TOLERANCE, (full, cached)
  assert greedy == ref["greedy"]


def test_a_wrong_mapping_would_not_pass():
  """The fixtures tell the mappings apart: without the llama3 scaling, with the default
  rope_theta, with query heads grouped the other way round, or without Gemma's embedding scale,
  the logits move far beyond the tolerance."""
  def diff(name, edit=None, params_edit=None):
    ref, logits_ref = _ref(os.path.join(FIXTURES, name))
    _, config, spec, params = _read(name)
    config = config_lib.ConfigDict(config.to_dict())
    if edit:
      edit(config.model)
    params = params_edit(params) if params_edit else params
    seq = jnp.array([ref["prompt"] + ref["greedy"]])
    out = np.asarray(lm.logits(lm.parts(config, spec), params, seq))[0]
    return float(np.abs(out - logits_ref).max())

  def no_scaling(m):
    m.rope_scaling = config_lib.ConfigDict({"rope_type": "default"})

  def regroup(params):  # Query head i on key/value head i % 2 instead of i // 3.
    q = params["block0"]["attn"]["q"]
    order = np.arange(6).reshape(2, 3).T.reshape(-1)
    block = {**params["block0"], "attn": {**params["block0"]["attn"],
                                         "q": {"kernel": q["kernel"][:, order]}}}
    return {**params, "block0": block}

  assert diff("llama") <= TOLERANCE
  assert diff("llama", no_scaling) > 100 * TOLERANCE
  assert diff("llama", lambda m: setattr(m, "rope_theta", 10000.0)) > 100 * TOLERANCE
  assert diff("llama", params_edit=regroup) > 100 * TOLERANCE
  assert diff("gemma", lambda m: setattr(m, "embed_scale", False)) > 100 * TOLERANCE


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_tokenizer_matches_transformers(name):
  """tokenizer.json (SentencePiece-style for llama, gemma and mistral; byte-level for qwen2 and
  qwen3) gives AutoTokenizer's ids and decodings: spaces, newlines, tabs, accents, CJK (byte
  fallback), special tokens in the text; so does the tokenizer rebuilt from the run's spec."""
  ref, _ = _ref(os.path.join(FIXTURES, name))
  spec = _read(name)[2]
  tok = tokenizer_of(spec)
  again = tokenizer_json.JSONTokenizer.from_json(json.loads(json.dumps(tok.to_json())))
  for case in ref["tokenizer"]:
    for t in (tok, again):
      assert t.encode(case["text"]) == case["ids"], case["text"]
      assert t.decode(case["ids"]) == case["decoded"], case["text"]
  assert tok.vocab_size == 400  # The model's (padded) vocabulary, not the tokenizer's.
  if name == "llama":
    assert tok.start_ids == [1] and tok.end_ids == [2] and tok.encode("")[:1] == [1]
  else:  # Qwen: no start token; <|im_end|> ends a sample, <|endoftext|> pads.
    assert tok.start_ids == [] and tok.end_ids == [2] and tok.pad_id == 0
    assert "<|im_start|>" in tok.chat_template


def test_chat_template_renders_as_transformers():
  """The chat template (chat_template.jinja) gives apply_chat_template's text and ids, with and
  without a system message; a role it refuses is a TokenizerError naming its message."""
  ref, _ = _ref(os.path.join(FIXTURES, "qwen2"))
  tok = tokenizer_of(_read("qwen2")[2])
  assert len(ref["chats"]) == 2
  for chat in ref["chats"]:
    assert tok.render_chat(chat["messages"]) == chat["text"]
    assert tok.encode_chat(chat["messages"]) == chat["ids"]
  with pytest.raises(tokenizer_json.TokenizerError, match="unknown role tool"):
    tok.encode_chat([{"role": "tool", "content": "x"}])
  with pytest.raises(tokenizer_json.TokenizerError, match="no chat template"):
    tokenizer_of(_read("llama")[2]).encode_chat([{"role": "user", "content": "x"}])


def test_cli_sample_chat(tmp_path, capsys):
  """`gen sample --chat --system=... --prompt=...` continues the rendered conversation; --chat
  without a template, or --system without --chat, are one-line usage errors."""
  rc, err = cli_import(os.path.join(FIXTURES, "qwen2"), tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  ref, _ = _ref(os.path.join(FIXTURES, "qwen2"))
  chat = ref["chats"][0]
  rc = cli.main(["sample", f"--workdir={tmp_path / 'w'}", "--chat",
                 f"--system={chat['messages'][0]['content']}",
                 f"--prompt={chat['messages'][1]['content']}", "--max_new_tokens=3",
                 "--temperature=0", f"--out={tmp_path / 's.txt'}"])
  out, err = capsys.readouterr()
  assert rc == 0, err
  assert chat["text"] in out  # The prompt as rendered, then the reply.
  rc = cli.main(["sample", f"--workdir={tmp_path / 'w'}", "--system=x", "--prompt=y"])
  assert_one_line_error(rc, capsys.readouterr().err, "sample", "--system", "add --chat")


def test_special_tokens_come_from_the_folder(tmp_path):
  """generation_config.json's eos list wins (several end tokens end a sample), then
  tokenizer_config.json's, special_tokens_map.json's and config.json's."""
  src = tmp_path / "src"
  shutil.copytree(os.path.join(FIXTURES, "qwen2"), src)
  _write_json(src / "generation_config.json", {"eos_token_id": [2, 0], "bos_token_id": 1})
  a = hf_llama.read_config(str(src))
  tok = hf_llama.read_tokenizer(str(src), a)
  assert tok.end_ids == [2, 0] and tok.end_id == 2 and tok.start_ids == [1]
  os.remove(src / "generation_config.json")
  _write_json(src / "tokenizer_config.json", {"eos_token": {"content": "<|endoftext|>"}})
  assert hf_llama.read_tokenizer(str(src), a).end_ids == [0]
  _write_json(src / "tokenizer_config.json", {})
  _write_json(src / "special_tokens_map.json", {"eos_token": "<|im_start|>"})
  assert hf_llama.read_tokenizer(str(src), a).end_ids == [1]
  os.remove(src / "special_tokens_map.json")
  assert hf_llama.read_tokenizer(str(src), a).end_ids == [a["config_ids"]["eos_token_id"]]


def test_several_end_tokens_stop_a_sample():
  """With end ids (a, b), greedy decoding stops at the first of either and pads with -1."""
  ref, _ = _ref(os.path.join(FIXTURES, "qwen2"))
  _, config, spec, params = _read("qwen2")
  model = lm.parts(config, spec)
  prompt, greedy = ref["prompt"], ref["greedy"]
  stop = greedy[4]
  first = greedy.index(stop)
  ends = (stop, 10**6)  # One that never comes.
  out = lm.decode(model, params, jax.random.key(0), jnp.array([prompt]),
                  jnp.array([len(prompt)]), len(greedy), temperature=0.0, end_id=ends)
  row = np.asarray(out)[0, len(prompt):].tolist()
  assert row[:first + 1] == greedy[:first + 1] and set(row[first + 1:]) == {-1}


def test_gqa_cache_holds_the_key_value_heads():
  _, config, spec, _ = _read("llama")
  model = lm.parts(config, spec)
  cache = model.init_cache(3)
  assert len(cache) == 2 and cache[0]["k"].shape == (3 * 2, 64, 16)  # Not 6 heads of 8.
  assert model.cache_bytes(3) == sum(x.nbytes for c in cache for x in c.values())
  assert "2 key/value heads (shared by 6 query heads) x 64 positions x 16" in \
      lm.cache_line(model, 3)


def test_half_precision_weights_are_kept_or_widened(tmp_path):
  """bfloat16 weights (llama) become exactly their float32 values by default, and stay the
  very same bfloat16 bits with model.param_dtype=bfloat16; float16 ones (mistral) widen
  exactly."""
  import ml_dtypes

  folder = os.path.join(FIXTURES, "llama")
  tensors = hf_llama.Tensors(folder)
  raw = tensors.read("model.layers.1.mlp.down_proj.weight")
  assert raw.dtype == ml_dtypes.bfloat16
  params = _read("llama")[3]
  np.testing.assert_array_equal(params["block1"]["mlp"]["proj"]["kernel"],
                                raw.astype(np.float32).T)
  _, config, _, _, kept = hf_llama.read(folder, ["--config.model.param_dtype=bfloat16"])
  assert config.model.param_dtype == "bfloat16"
  assert all(x.dtype == ml_dtypes.bfloat16 for x in jax.tree.leaves(kept))
  np.testing.assert_array_equal(kept["block1"]["mlp"]["proj"]["kernel"].view(np.uint16),
                                raw.T.view(np.uint16))
  mistral = hf_llama.Tensors(os.path.join(FIXTURES, "mistral"))
  assert mistral.read("model.norm.weight").dtype == np.float16
  np.testing.assert_array_equal(_read("mistral")[3]["final_norm"]["scale"],
                                mistral.read("model.norm.weight").astype(np.float32))


def test_bfloat16_compute_and_parameters():
  """model.dtype=bfloat16 with model.param_dtype=bfloat16 (llama's bfloat16 weights as they
  are) computes within bfloat16's rounding of transformers' float32 logits, full and cached
  (measured: 0.055 and 0.071, logits up to 2.9), with a cache of half the bytes."""
  ref, logits_ref = _ref(os.path.join(FIXTURES, "llama"))
  _, config, spec, _, params = hf_llama.read(os.path.join(FIXTURES, "llama"), [
      "--config.model.dtype=bfloat16", "--config.model.param_dtype=bfloat16"])
  full, cached, greedy, _ = _compare(config, spec, params, ref["prompt"], ref["greedy"],
                                     logits_ref)
  assert full <= 0.15 and cached <= 0.15, (full, cached)
  assert greedy == ref["greedy"]
  model = lm.parts(config, spec)
  assert model.init_cache(1)[0]["k"].dtype == jnp.bfloat16
  assert model.cache_bytes(1) * 2 == lm.parts(_read("llama")[1], spec).cache_bytes(1)


def test_imported_architecture_trains():
  """A train step on the imported Qwen3 (grouped queries, q/k norm, head_dim != width / heads)
  gives a finite loss near log(vocab) and finite gradients reaching every parameter."""
  import optax

  _, config, spec, params = _read("qwen3")
  model = lm.parts(config, spec)
  tokens = jax.random.randint(jax.random.key(0), (2, 17), 0, 400)
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p: jnp.mean(lm.token_nll(model, p, tokens))))(params)
  assert np.isfinite(loss) and abs(float(loss) - np.log(400)) < 2
  norms = jax.tree.map(lambda g: float(jnp.linalg.norm(g)), grads)
  assert all(np.isfinite(v) and v > 0 for v in jax.tree.leaves(norms)), norms
  assert np.isfinite(float(optax.global_norm(grads)))


def test_sharded_safetensors_read_the_same(tmp_path):
  """Shards listed in model.safetensors.index.json (bfloat16 tensors split over two files) give
  the very same params."""
  src = tmp_path / "src"
  shutil.copytree(os.path.join(FIXTURES, "llama"), src)
  _shard(src)
  a, config, spec, _, params = hf_llama.read(str(src))
  jax.tree.map(np.testing.assert_array_equal, params, _read("llama")[3])


def test_cli_import_and_sample(tmp_path, capsys):
  """`gen import` writes a workdir whose greedy `gen sample --prompt` continues as
  transformers' greedy decoding did, says the size of its key/value cache, and starts a
  fine-tuning run."""
  folder = os.path.join(FIXTURES, "llama")
  ref, _ = _ref(folder)
  rc, err = cli_import(folder, tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  assert "LlamaForCausalLM" in err and "6 heads (2 key/value)" in err
  rc = cli.main(["sample", f"--workdir={tmp_path / 'w'}", "--prompt=the cat sat on the mat",
                 f"--max_new_tokens={len(ref['greedy'])}", "--temperature=0",
                 f"--out={tmp_path / 's.txt'}"])
  out, err = capsys.readouterr()
  assert rc == 0, err
  tok = tokenizer_of(train_lib.load_workdir(str(tmp_path / "w"))[1])
  assert tok.decode(ref["prompt"] + ref["greedy"]) in out
  assert "KV cache: 2 layers x 2 key/value heads" in err
  # A fine-tuning run from it (a shorter context; lr 0 keeps the params), which resumes: the
  # new model keys (rope_scaling, num_kv_heads...) go through the trainer and config.json.
  text = tmp_path / "corpus.txt"
  text.write_text("the cat sat on the mat. " * 100)
  config = config_lib.load_json(os.path.join(tmp_path / "w", "config.json"))
  config.unlock()
  config_lib.apply_overrides(config, {
      "init_from": str(tmp_path / "w"), "data.name": f"text:{text}", "data.seq_len": 16,
      "data.batch_size": 2, "train.num_steps": 1, "train.eval_every": 0,
      "train.sample_every": 0, "train.checkpoint_every": 1, "train.progress": False})
  config.lock()
  state = train_lib.train(config, str(tmp_path / "ft"), handle_signals=False)
  capsys.readouterr()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
               jax.device_get(train_lib.load_workdir(str(tmp_path / "w"))[3].params))
  again = train_lib.load_workdir(str(tmp_path / "ft"))
  assert again[4] == 1 and again[0].model.rope_scaling.rope_type == "llama3"


# ------------------------------------------------------------------------------ bad input


def _write_json(path, d):
  with open(path, "w") as f:
    json.dump(d, f)


def _edit_config(folder, **fields):
  path = os.path.join(folder, "config.json")
  with open(path) as f:
    d = json.load(f)
  for k, v in fields.items():
    if v is None:
      d.pop(k, None)
    else:
      d[k] = v
  _write_json(path, d)


def _edit_tensors(folder, fn):
  from safetensors.numpy import load_file, save_file

  path = os.path.join(folder, "model.safetensors")
  tensors = load_file(path)
  fn(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def _shard(folder):
  """Splits model.safetensors into two shards and an index, the bytes as they are."""
  st = hf_llama.SafetensorsFile(os.path.join(folder, "model.safetensors"))
  names = sorted(st.tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for file, part in shards.items():
    _save_raw({k: (st.dtype(k), st.shape(k), st.read(k).tobytes()) for k in part},
              os.path.join(folder, file))
  os.remove(os.path.join(folder, "model.safetensors"))
  _write_json(os.path.join(folder, "model.safetensors.index.json"),
              {"metadata": {}, "weight_map": {k: f for f, part in shards.items() for k in part}})


def _save_raw(tensors, path):
  """A safetensors file of (dtype name, shape, bytes) tensors (numpy has no bfloat16)."""
  header, offset = {}, 0
  for name, (dtype, shape, data) in tensors.items():
    header[name] = {"dtype": dtype, "shape": list(shape),
                    "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
  blob = json.dumps(header).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(len(blob).to_bytes(8, "little") + blob)
    for _, _, data in tensors.values():
      f.write(data)


# case: (fixture, edit of the copied folder, extra flags, what the one-line error says)
BAD = {
    "architecture": ("qwen2", lambda d: _edit_config(d, model_type="phi3"), [],
                     ["config.json: model_type='phi3' is not supported"]),
    "class": ("qwen2", lambda d: _edit_config(d, architectures=["Qwen2Model"]), [],
              ["config.json: architectures=['Qwen2Model'] is not supported"]),
    "rope type": ("llama", lambda d: _edit_config(d, rope_parameters={
        "rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}), [],
                  ["config.json: rope_parameters.rope_type='yarn' is not supported"]),
    "old rope_scaling": ("llama", lambda d: _edit_config(
        d, rope_parameters=None, rope_theta=1e4, rope_scaling={"type": "dynamic", "factor": 2.0}),
                         [], ["config.json: rope_scaling.rope_type='dynamic' is not supported"]),
    "sliding window": ("mistral", lambda d: _edit_config(d, sliding_window=16), [],
                       ["config.json: sliding_window=16 is not supported"]),
    "qwen sliding": ("qwen2", lambda d: _edit_config(d, use_sliding_window=True), [],
                     ["config.json: use_sliding_window=True is not supported"]),
    "activation": ("llama", lambda d: _edit_config(d, hidden_act="gelu"), [],
                   ["config.json: hidden_act='gelu' is not supported"]),
    "some biases": ("llama", lambda d: _edit_config(d, attention_bias=True), [],
                    ["config.json: attention_bias=True is not supported", "every layer or none"]),
    "layer types": ("qwen3", lambda d: _edit_config(d, layer_types=["full_attention",
                                                                    "sliding_attention"]), [],
                    ["config.json: layer_types=['full_attention', 'sliding_attention'] is not"]),
    "partial rotary": ("qwen3", lambda d: _edit_config(d, partial_rotary_factor=0.5), [],
                       ["config.json: partial_rotary_factor=0.5 is not supported"]),
    "no tokenizer": ("qwen2", lambda d: os.remove(os.path.join(d, "tokenizer.json")), [],
                     ["tokenizer.json: missing"]),
    "tokenizer mismatch": ("llama", lambda d: _edit_config(d, vocab_size=300), [],
                           ["tokenizer.json: token", "outside the model's vocab_size=300"]),
    "bad eos": ("qwen2", lambda d: _write_json(os.path.join(d, "generation_config.json"),
                                               {"eos_token_id": [2, 999]}), [],
                ["generation_config.json: eos_token_id=[2, 999] is not a token id"]),
    "missing tensor": ("qwen2", lambda d: _edit_tensors(
        d, lambda t: t.pop("model.layers.1.self_attn.k_proj.bias")), [],
                       ["model.safetensors: tensor model.layers.1.self_attn.k_proj.bias is "
                        "missing"]),
    "extra tensor": ("qwen2", lambda d: _edit_tensors(
        d, lambda t: t.update({"model.layers.2.input_layernorm.weight": np.ones(32, np.float32)})),
                     [], ["model.safetensors: tensor model.layers.2.input_layernorm.weight (32,) "
                          "is not a weight"]),
    "ill-shaped tensor": ("qwen2", lambda d: _edit_tensors(d, lambda t: t.update(
        {"model.layers.0.self_attn.o_proj.weight":
         t["model.layers.0.self_attn.o_proj.weight"][:, :16].copy()})), [],
                          ["model.safetensors: tensor model.layers.0.self_attn.o_proj.weight has "
                           "shape (32, 16), config.json implies (32, 32)"]),
    "corrupt weights": ("qwen2", lambda d: open(os.path.join(d, "model.safetensors"), "wb").write(
        b"x" * 40), [], ["model.safetensors: not a readable safetensors file"]),
    "context too long": ("qwen2", None, ["--config.data.seq_len=65"],
                         ["data.seq_len=65: the context must be in 1..64"]),
    "override changes the model": ("qwen2", None, ["--config.model.num_layers=3"],
                                   ["builds another model than"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_errors_and_write_nothing(case, tmp_path, capsys):
  name, edit, extra, needles = BAD[case]
  src = tmp_path / "src"
  shutil.copytree(os.path.join(FIXTURES, name), src)
  if edit is not None:
    edit(str(src))
  rc, err = cli_import(src, tmp_path / "out", *extra, capsys=capsys)
  assert_one_line_error(rc, err, "import", *needles)
  assert sorted(os.listdir(tmp_path)) == ["src"]  # No workdir, no temporary folder.


def test_rope_frequencies():
  """linear divides every frequency by the factor; llama3 keeps the high ones, divides the low
  ones and blends those between (transformers' formula, float32)."""
  from gen.lm.models import rope_frequencies

  base = np.asarray(rope_frequencies(16, 5e5))
  inv = 1 / 5e5 ** (np.arange(0, 16, 2) / 16)
  np.testing.assert_allclose(base, inv, rtol=1e-6)
  linear = np.asarray(rope_frequencies(16, 5e5, (("factor", 4.0), ("rope_type", "linear"))))
  np.testing.assert_allclose(linear, inv / 4, rtol=1e-6)
  llama3 = np.asarray(rope_frequencies(16, 5e5, tuple(sorted({
      "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 48}.items()))))
  wavelen = 2 * np.pi / inv
  high, low = wavelen < 48 / 4, wavelen > 48
  assert high.any() and low.any() and (~high & ~low).any()  # All three kinds present.
  np.testing.assert_allclose(llama3[high], inv[high], rtol=1e-6)
  np.testing.assert_allclose(llama3[low], inv[low] / 4, rtol=1e-6)
  mid = ~high & ~low
  assert np.all((llama3[mid] < inv[mid]) & (llama3[mid] > inv[mid] / 4))


def test_old_configs_build_the_old_model():
  """A config without the new model keys (every saved run before them) builds the model the
  defaults describe: full multi-head attention, no scaling, float32 parameters."""
  from gen.lm.models import make_model

  saved = {"family": "lm", "model": {
      "num_layers": 1, "num_heads": 2, "width": 8, "norm": "rmsnorm", "mlp": "swiglu",
      "positions": "rotary", "tie_embeddings": True, "use_bias": False, "dropout": 0.0,
      "dtype": "float32", "remat": False}}
  c = config_lib.from_dict(runs.complete(saved))  # As a saved config.json loads.
  m = make_model(c, 11, 4)
  assert (m.kv_heads, m.head_width, m.rope_theta, m.rope_scaling, m.param_dtype) == (
      2, 4, 10000.0, (), "float32")
  params = m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  assert set(params["block0"]["attn"]) == {"qkv", "out"}


# ---------------------------------------------------------------------- peers (live)

HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch and transformers")


@peers
@pytest.mark.parametrize("name", NAMES)
def test_peers_random_model_matches_transformers_live(name, tmp_path, capsys):
  """A fresh random model of each kind (another seed), saved by transformers and imported
  through `gen import`; transformers' own float32-vs-float64 distance is stated beside ours."""
  maker = fixture_script("make_transformers_llama")
  src = str(tmp_path / "src")
  ref = maker.make(name, src, seed=7)
  rc, err = cli_import(src, tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  config, spec, _, state, _ = train_lib.load_workdir(str(tmp_path / "w"))
  full, cached, greedy, logits = _compare(config, spec, state.params, ref["prompt"],
                                          ref["greedy"], ref["logits"])
  ours64 = float(np.abs(logits - ref["logits64"]).max())
  # gen's float32 is about as far from transformers' float64 as transformers' own float32 is.
  assert ours64 <= 3 * max(ref["f32_vs_f64"], 1e-6), (ours64, ref["f32_vs_f64"])
  print(f"{name}: gen vs transformers float32 {full:.2g} (cached {cached:.2g}); vs float64 "
        f"{ours64:.2g}; transformers' float32 vs float64 {ref['f32_vs_f64']:.2g}")
  assert full <= TOLERANCE and cached <= TOLERANCE, (full, cached)
  if ref["margin"] > 1e-4:  # (Near-ties could flip on rounding alone.)
    assert greedy == ref["greedy"]
  tok = tokenizer_of(spec)
  for case in ref["tokenizer"]:
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["decoded"]


LLAMA_VARIANTS = {
    "linear-tied": dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "linear", "rope_theta": 20000.0, "factor": 2.0}),
    "mha-biases": dict(num_key_value_heads=6, attention_bias=True, mlp_bias=True),
}


@peers
@pytest.mark.parametrize("variant", list(LLAMA_VARIANTS))
def test_peers_llama_variants_live(variant, tmp_path):
  """LLaMAs the fixture does not cover: linear RoPE scaling (factor 2, rope_theta 20000) with a
  tied head; as many key/value heads as query heads, with biases on every layer."""
  maker = fixture_script("make_transformers_llama")
  src = str(tmp_path / "src")
  ref = maker.make("llama", src, seed=5, **LLAMA_VARIANTS[variant])
  a, config, spec, _, params = hf_llama.read(src)
  if variant == "linear-tied":
    assert a["rope_scaling"] == {"rope_type": "linear", "factor": 2.0} and a["tied"]
  else:
    assert config.model.use_bias and set(params["block0"]["attn"]) == {"qkv", "out"}
  full, cached, greedy, _ = _compare(config, spec, params, ref["prompt"], ref["greedy"],
                                     ref["logits"])
  print(f"{variant}: {full:.2g} / {cached:.2g}; transformers' float32 vs float64 "
        f"{ref['f32_vs_f64']:.2g}")
  assert full <= TOLERANCE and cached <= TOLERANCE, (full, cached)
  if ref["margin"] > 1e-4:
    assert greedy == ref["greedy"]


@peers
def test_peers_pytorch_bin_reads_the_same(tmp_path):
  """The same weights as a PyTorch state dict (pytorch_model.bin, bfloat16) give the same
  params as the safetensors file."""
  import torch
  from safetensors.torch import load_file

  src = tmp_path / "src"
  shutil.copytree(os.path.join(FIXTURES, "llama"), src)
  torch.save(load_file(str(src / "model.safetensors")), str(src / "pytorch_model.bin"))
  os.remove(src / "model.safetensors")
  params = hf_llama.read(str(src))[4]
  jax.tree.map(np.testing.assert_array_equal, params, _read("llama")[3])


# ---------------------------------------------------------------------------- export


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trips(name, tmp_path):
  """An imported model written back as a transformers folder (gen.lm.hf_export) imports to the
  very same params, config and tokenizer; its config.json keeps the architecture's fields."""
  from gen.lm import hf_export

  a, config, spec, params = _read(name)
  summary = hf_export.write(config, spec, params, str(tmp_path))
  assert "tokenizer.json" in summary
  a2, config2, spec2, _, params2 = hf_llama.read(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  assert config2.model.to_dict() == config.model.to_dict()
  assert tokenizer_of(spec2).to_json() == tokenizer_of(spec).to_json()
  for key in ("num_key_value_heads", "head_dim", "rope_theta", "rope_scaling", "tied",
              "qkv_bias", "norm_eps"):
    assert a2[key] == a[key], key


def test_export_gpt2_round_trips(tmp_path):
  """The GPT-2 fixture, imported and written back, imports to the same params and tokenizer."""
  from gen.lm import hf, hf_export
  from gen.lm.data import token_spec

  folder = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2")
  a = hf.read_config(folder)
  params = hf.to_params(hf.read_tensors(folder), a)
  spec = token_spec(a["n_positions"], hf.read_tokenizer(folder, a))
  config = hf.workdir_config(a)
  assert "GPT2LMHeadModel" in hf_export.write(config, spec, params, str(tmp_path))
  a2 = hf.read_config(str(tmp_path))
  assert a2 == a
  jax.tree.map(np.testing.assert_array_equal, hf.to_params(hf.read_tensors(str(tmp_path)), a2),
               params)
  assert hf.read_tokenizer(str(tmp_path), a2).to_json() == spec.extra["tokenizer"]


SPM = os.path.join(ROOT, "tests", "fixtures", "sentencepiece_llama")


def _spm_folder(tmp_path, settings: dict, cls: str = "LlamaTokenizer"):
  """The SentencePiece fixture's tokenizer.model with a tokenizer_config.json of `settings`."""
  folder = tmp_path / "spm"
  folder.mkdir()
  shutil.copy(os.path.join(SPM, "tokenizer.model"), folder)
  with open(folder / "tokenizer_config.json", "w") as f:
    json.dump({"tokenizer_class": cls, "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", **settings}, f)
  return str(folder)


SPM_A = {"vocab_size": 400, "config_ids": {"bos_token_id": 1, "eos_token_id": 2,
                                           "pad_token_id": None}}


@pytest.mark.parametrize("config", ["llama2", "nonlegacy_eos"])
def test_sentencepiece_model_tokenizes_as_transformers(config, tmp_path):
  """A folder with tokenizer.model and no tokenizer.json (LLaMA 2's, Mistral's): the converted
  tokenizer gives AutoTokenizer's ids and decodings (tests/fixtures/sentencepiece_llama), for
  LLaMA 2's settings and for legacy=false with an end token, on spaces, newlines, tabs,
  non-ASCII, and special and user-defined tokens inside the text."""
  with open(os.path.join(SPM, "reference.json"), encoding="utf-8") as f:
    ref = json.load(f)
  want = ref["configs"][config]
  tok = hf_llama.read_tokenizer(_spm_folder(tmp_path, want["settings"]), SPM_A)
  for text, ids, decoded in zip(ref["strings"], want["ids"], want["decoded"], strict=True):
    assert tok.encode(text) == ids, text
    assert tok.decode(ids) == decoded, text
  assert tok.start_ids == [1] and tok.end_ids == [2]


def test_sentencepiece_model_imports_and_refuses_other_classes(tmp_path, capsys):
  """`gen import` of the llama fixture with tokenizer.model in place of tokenizer.json keeps the
  SentencePiece tokenization; a tokenizer.model of another class is refused by name."""
  src = tmp_path / "src"
  shutil.copytree(os.path.join(FIXTURES, "llama"), src)
  os.remove(src / "tokenizer.json")
  shutil.copy(os.path.join(SPM, "tokenizer.model"), src)
  shutil.copy(os.path.join(SPM, "tokenizer_config.json"), src)
  rc, err = cli_import(str(src), tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  with open(os.path.join(SPM, "reference.json"), encoding="utf-8") as f:
    ref = json.load(f)
  spec = train_lib.DataSpec.load(str(tmp_path / "w"))
  assert tokenizer_of(spec).encode(ref["strings"][0]) == ref["configs"]["llama2"]["ids"][0]
  folder = _spm_folder(tmp_path, {}, cls="GemmaTokenizer")
  with pytest.raises(hf_llama.InputError) as e:
    hf_llama.read_tokenizer(folder, SPM_A)
  assert "tokenizer.model: tokenizer_class 'GemmaTokenizer'" in str(e.value)
  assert "needs its tokenizer.json" in str(e.value)
  os.remove(os.path.join(folder, "tokenizer.model"))
  with pytest.raises(hf_llama.InputError) as e:
    hf_llama.read_tokenizer(folder, SPM_A)
  assert "tokenizer.json: missing, and no tokenizer.model either" in str(e.value)


@peers
def test_peers_sentencepiece_model_tokenizes_as_transformers(tmp_path):
  """Live, with settings the fixture does not hold (no prefix space, no start token)."""
  from transformers import AutoTokenizer

  with open(os.path.join(SPM, "reference.json"), encoding="utf-8") as f:
    strings = json.load(f)["strings"]
  folder = _spm_folder(tmp_path, {"legacy": False, "add_prefix_space": False,
                                  "add_bos_token": False})
  theirs = AutoTokenizer.from_pretrained(folder)
  ours = hf_llama.read_tokenizer(folder, SPM_A)
  for text in strings:
    ids = theirs(text)["input_ids"]
    assert ours.encode(text) == ids, text
    assert ours.decode(ids) == theirs.decode(ids), text


CHAR_TEXTS = ["First Citizen:\nBefore we proceed, hear me speak.", "  \n\nAll: Speak, speak!  "]
BYTE_TEXTS = CHAR_TEXTS + ["héllo wörld, 日本語\t\r\n", "\x00\x7f end"]


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_export_char_and_byte_tokenizers(kind, tmp_path):
  """A gen model with gen's own char or byte tokenizer exports a tokenizer.json that the
  `tokenizers` library runs with gen's ids and decodings, and the folder imports back to the
  same params and the same ids."""
  from tokenizers import Tokenizer

  from gen.lm import hf_export
  from gen.lm.data import token_spec
  from gen.lm.data.tokenizers import ByteTokenizer, CharTokenizer

  tok = CharTokenizer.build("".join(CHAR_TEXTS)) if kind == "char" else ByteTokenizer()
  texts = CHAR_TEXTS if kind == "char" else BYTE_TEXTS
  config = _read("llama")[1]
  spec = token_spec(32, tok)
  params = lm.parts(config, spec).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  summary = hf_export.write(config, spec, params, str(tmp_path))
  assert "tokenizer: tokenizer.json, tokenizer_config.json" in summary, summary
  theirs = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  for text in texts:
    ids = tok.encode(text)
    assert theirs.encode(text).ids == ids, text
    assert theirs.decode(ids) == text
  _, config2, spec2, _, params2 = hf_llama.read(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  assert spec2.extra["vocab_size"] == tok.vocab_size
  for text in texts:
    assert tokenizer_of(spec2).encode(text) == tok.encode(text), text


@peers
@pytest.mark.parametrize("kind", ["char", "byte"])
def test_peers_exported_char_and_byte_tokenizers_load_in_transformers(kind, tmp_path):
  """transformers' AutoTokenizer loads the exported char / byte tokenizer and gives gen's ids
  and decodings."""
  from transformers import AutoTokenizer

  from gen.lm import hf_export
  from gen.lm.data import token_spec
  from gen.lm.data.tokenizers import ByteTokenizer, CharTokenizer

  tok = CharTokenizer.build("".join(CHAR_TEXTS)) if kind == "char" else ByteTokenizer()
  config = _read("llama")[1]
  spec = token_spec(32, tok)
  params = lm.parts(config, spec).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  hf_export.write(config, spec, params, str(tmp_path))
  theirs = AutoTokenizer.from_pretrained(str(tmp_path))
  for text in CHAR_TEXTS if kind == "char" else BYTE_TEXTS:
    ids = tok.encode(text)
    assert theirs(text)["input_ids"] == ids, text
    assert theirs.decode(ids) == text


@pytest.mark.parametrize("edit, needle", [
    ({"norm": "layernorm"}, "model.norm='layernorm' cannot be exported"),
    ({"mlp": "gelu"}, "model.mlp='gelu' cannot be exported"),
    ({"positions": "learned"}, "model.norm='rmsnorm' cannot be exported (a model with learned "
                               "positions is a GPT-2"),
    ({"qkv_bias": True, "use_bias": True}, "model.qkv_bias=True cannot be exported"),
    ({"embed_scale": True}, "model.norm='rmsnorm' cannot be exported (Gemma"),
])
def test_export_refuses_what_transformers_cannot_express(edit, needle):
  from gen.lm import hf_export

  m = config_lib.ConfigDict(_read("llama")[1].model.to_dict())
  assert hf_export.kind_of(m) == "llama"
  for k, v in edit.items():
    setattr(m, k, v)
  with pytest.raises(hf_llama.InputError) as e:
    hf_export.kind_of(m)
  assert needle in str(e.value)


def test_cli_export(tmp_path, capsys):
  """`gen export` writes the folder whole; an existing folder is refused and left alone."""
  rc, err = cli_import(os.path.join(FIXTURES, "qwen3"), tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  rc = cli.main(["export", f"--workdir={tmp_path / 'w'}", f"--to={tmp_path / 'out'}"])
  err = capsys.readouterr().err
  assert rc == 0, err
  assert "step 0 as Qwen3ForCausalLM" in err
  assert sorted(os.listdir(tmp_path / "out")) == [
      "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
      "tokenizer_config.json"]
  rc = cli.main(["export", f"--workdir={tmp_path / 'w'}", f"--to={tmp_path / 'out'}"])
  assert_one_line_error(rc, capsys.readouterr().err, "export", "already exists and is not empty")


@peers
@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma"])
def test_peers_exported_gen_model_loads_in_transformers(name, tmp_path):
  """A model with gen's own random params (norm scales perturbed), exported:
  AutoModelForCausalLM.from_pretrained computes gen's logits, and the fixtures written back
  give transformers' reference logits exactly."""
  import torch
  from transformers import AutoModelForCausalLM

  from gen.lm import hf_export

  _, config, spec, fixture_params = _read(name)
  model = lm.parts(config, spec)
  params = model.init(jax.random.key(3), jnp.zeros((1, 8), jnp.int32))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: np.asarray(x) * (1 + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
      if "scale" in jax.tree_util.keystr(p) else np.asarray(x) * 8, params)
  ref, logits_ref = _ref(os.path.join(FIXTURES, name))
  seq = ref["prompt"] + ref["greedy"]
  for p, want in ((params, None), (fixture_params, logits_ref)):
    folder = tmp_path / ("gen" if want is None else "fixture")
    folder.mkdir()
    hf_export.write(config, spec, p, str(folder))
    ours = np.asarray(lm.logits(model, p, jnp.array([seq])))[0]
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
      theirs = hf(torch.tensor([seq])).logits[0].numpy()
    if want is None:
      print(f"{name}: gen's own params exported, transformers vs gen "
            f"{np.abs(theirs - ours).max():.2g} (logits up to {np.abs(ours).max():.2g})")
      assert np.abs(ours).max() > 0.5  # Logits that tell a wrong mapping apart.
      assert np.abs(theirs - ours).max() <= TOLERANCE, np.abs(theirs - ours).max()
    else:
      np.testing.assert_array_equal(theirs, want)


@pytest.mark.slow
@peers
def test_peers_llama_benchmark_runs(capsys):
  """benchmarks/peers/llama.py end to end at a tiny shape: both decoders ran every token."""
  import sys

  pytest.importorskip("diffusers")  # (compare.setup reports its version.)
  folder = os.path.join(ROOT, "benchmarks", "peers")
  sys.path.insert(0, folder)
  spec = importlib.util.spec_from_file_location("peer_llama", os.path.join(folder, "llama.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  module.main(["--layers=1", "--width=32", "--heads=4", "--kv_heads=2", "--mlp=48",
               "--vocab=64", "--context=16", "--new_tokens=4", "--batch=1", "--repeats=1",
               "--json"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  row = out["decode"][0]
  assert (row["batch"], row["new_tokens"]) == (1, 4) and out["shape"]["num_key_value_heads"] == 2
  assert row["tokens_per_s"] > 0 and row["transformers_tokens_per_s"] > 0
