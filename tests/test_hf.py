"""GPT-2 from transformers: `gen import` of a saved folder gives transformers' logits and greedy
tokens, its tokenizer gives GPT2Tokenizer's ids, the workdir samples, evaluates and starts a
fine-tuning run, and bad folders are one-line errors that write nothing.

The default run reads the committed fixture (tests/fixtures/hf_gpt2, written by
tests/fixtures/make_hf_gpt2.py with transformers' reference outputs beside it): no torch
needed. The `peers` tests build other random GPT-2s with torch and transformers and compare
live; they are skipped where those are not installed.
"""

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
from gen.lm import hf
from gen.lm import steps as lm
from gen.lm.data import bpe, tokenizer_of

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2")
with open(os.path.join(FIXTURE, "reference.json"), encoding="utf-8") as _f:
  REF = json.load(_f)
TOLERANCE = 1e-5  # Max |logit difference| in float32.


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  dest = str(tmp_path_factory.mktemp("hf") / "gpt2")
  assert cli.main(["import", f"--from={FIXTURE}", f"--workdir={dest}"]) == 0
  return dest


def _compare(workdir, prompt, greedy, logits_ref):
  """(max |full-context logit difference|, max |cached-decoding logit difference|, greedy ids)
  of the imported model against transformers' reference."""
  config, spec, _, state, step = runs.load_workdir(workdir)
  assert step == 0
  model = lm.parts(config, spec)
  full = np.asarray(jax.jit(lambda p, x: lm.logits(model, p, x))(
      state.params, jnp.array([prompt + greedy])))[0]
  n = len(prompt)
  tokens, cached = jax.jit(lambda p: lm.decode(
      model, p, jax.random.key(0), jnp.array([prompt]), jnp.array([n]), len(greedy),
      temperature=0.0, return_logits=True))(state.params)
  cached = np.asarray(cached)[0, n - 1:]  # The logits that chose each new token.
  return (float(np.abs(full - logits_ref).max()),
          float(np.abs(cached - logits_ref[n - 1:-1]).max()),
          np.asarray(tokens)[0, n:].tolist())


def test_imported_gpt2_matches_transformers(imported):
  """Measured: 3.6e-7 (full context) and 2.4e-7 (cached decoding); logits reach 0.88."""
  logits_ref = np.load(os.path.join(FIXTURE, "reference.npz"))["logits"]
  full, cached, greedy = _compare(imported, REF["prompt"], REF["greedy"], logits_ref)
  assert full <= TOLERANCE and cached <= TOLERANCE, (full, cached)
  assert greedy == REF["greedy"]


def test_a_wrong_mapping_would_not_pass(imported, tmp_path):
  """The fixture tells the mappings apart: flax's LayerNorm epsilon (the old default), or q
  and k swapped, move the logits far beyond the tolerance."""
  logits_ref = np.load(os.path.join(FIXTURE, "reference.npz"))["logits"]
  config, spec, _, state, _ = runs.load_workdir(imported)
  seq = jnp.array([REF["prompt"] + REF["greedy"]])

  def diff(cfg, params):
    return float(np.abs(np.asarray(lm.logits(lm.parts(cfg, spec), params, seq))[0]
                        - logits_ref).max())

  old_eps = config_lib.ConfigDict(config.to_dict())
  old_eps.model.norm_eps = 1e-6
  assert diff(old_eps, state.params) > 10 * TOLERANCE  # Measured: 7.8e-4.
  qkv = state.params["block0"]["attn"]["qkv"]
  swapped = {**qkv, "kernel": qkv["kernel"][:, jnp.array([1, 0, 2])],
             "bias": qkv["bias"][jnp.array([1, 0, 2])]}
  params = {**state.params, "block0": {**state.params["block0"],
                                       "attn": {**state.params["block0"]["attn"], "qkv": swapped}}}
  assert diff(config, params) > 100 * TOLERANCE


def test_tokenizer_matches_gpt2_tokenizer(imported, tmp_path):
  """The workdir's tokenizer (rebuilt from data_spec.json) encodes and decodes as transformers'
  GPT2Tokenizer did; so does one read from tokenizer.json alone."""
  tok = tokenizer_of(runs.load_workdir(imported)[1])
  assert isinstance(tok, bpe.ByteBPETokenizer) and tok.vocab_size == 271
  assert tok.start_ids == [270] and tok.end_id == 270  # <|endoftext|>, from config.json.
  only_json = tmp_path / "only_json"
  shutil.copytree(FIXTURE, only_json)
  os.remove(only_json / "vocab.json")
  os.remove(only_json / "merges.txt")
  from_json = hf.read_tokenizer(str(only_json), hf.read_config(str(only_json)))
  for case in REF["tokenizer"]:
    for t in (tok, from_json):
      assert t.encode(case["text"]) == case["ids"], case["text"]
      assert t.decode(case["ids"]) == case["decoded"] == case["text"]
  assert tok.decode([65, 271, 300]) == "b"  # Ids past the vocabulary decode to nothing.


def test_cli_sample_eval_and_init_from(imported, tmp_path, capsys):
  rc = cli.main(["sample", f"--workdir={imported}", "--prompt=the cat sat on the mat",
                 "--max_new_tokens=20", "--temperature=0", f"--out={tmp_path / 's.txt'}"])
  out = capsys.readouterr().out
  assert rc == 0
  tok = bpe.ByteBPETokenizer.from_files(os.path.join(FIXTURE, "vocab.json"),
                                        os.path.join(FIXTURE, "merges.txt"))
  assert tok.decode(REF["prompt"] + REF["greedy"]) in out  # The greedy continuation.
  text = tmp_path / "corpus.txt"
  text.write_text("the cat sat on the mat. " * 60)
  rc = cli.main(["eval", f"--workdir={imported}", f"--config.data.name=text:{text}",
                 f"--out={tmp_path / 'eval.json'}"])
  capsys.readouterr()
  assert rc == 0
  metrics = json.loads((tmp_path / "eval.json").read_text())
  assert np.isfinite(metrics["loss"]) and metrics["perplexity"] > 1
  # A fine-tuning run from it: its config, the imported params (lr 0 keeps them), its tokenizer.
  config = config_lib.load_json(os.path.join(imported, "config.json"))
  config.unlock()
  config_lib.apply_overrides(config, {
      "init_from": imported, "data.name": f"text:{text}", "optim.name": "adamw",
      "optim.b1": 0.9, "train.num_steps": 2, "train.eval_every": 0, "train.sample_every": 0,
      "train.checkpoint_every": 2, "train.progress": False, "data.batch_size": 2})
  config.lock()
  state = train_lib.train(config, str(tmp_path / "ft"), handle_signals=False)
  src = runs.load_workdir(imported)[3].params
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(src))
  assert int(state.step) == 2
  assert tokenizer_of(runs.load_workdir(str(tmp_path / "ft"))[1]).to_json() == \
      tokenizer_of(runs.load_workdir(imported)[1]).to_json()


def test_sharded_safetensors_import_the_same(imported, tmp_path, capsys):
  """A folder whose weights are split over shards (model.safetensors.index.json) imports to the
  very same params."""
  from safetensors.numpy import load_file, save_file

  src = tmp_path / "src"
  shutil.copytree(FIXTURE, src)
  tensors = load_file(str(src / "model.safetensors"))
  os.remove(src / "model.safetensors")
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for file, part in shards.items():
    save_file({k: tensors[k] for k in part}, str(src / file), metadata={"format": "pt"})
  _write_json(str(src / "model.safetensors.index.json"),
              {"weight_map": {k: f for f, part in shards.items() for k in part}})
  rc, err = cli_import(src, tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  got = runs.load_workdir(str(tmp_path / "w"))[3].params
  jax.tree.map(np.testing.assert_array_equal, got, runs.load_workdir(imported)[3].params)


# ------------------------------------------------------------------------------ bad input


def _edit_config(folder, **fields):
  path = os.path.join(folder, "config.json")
  with open(path) as f:
    d = json.load(f)
  d.update(fields)
  with open(path, "w") as f:
    json.dump(d, f)


def _write_json(path, d):
  with open(path, "w") as f:
    json.dump(d, f)


def _truncate(path):
  with open(path, "wb") as f:
    f.write(b"x" * 40)


def _edit_tensors(folder, fn):
  from safetensors.numpy import load_file, save_file

  path = os.path.join(folder, "model.safetensors")
  tensors = load_file(path)
  fn(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


BAD = {
    "no config": (lambda d: os.remove(os.path.join(d, "config.json")),
                  ["no importer reads this folder"]),
    "no weights": (lambda d: os.remove(os.path.join(d, "model.safetensors")),
                   ["no weights (model.safetensors"]),
    "no tokenizer": (lambda d: [os.remove(os.path.join(d, f)) for f in
                                ("vocab.json", "merges.txt", "tokenizer.json")],
                     ["vocab.json: missing"]),
    "activation": (lambda d: _edit_config(d, activation_function="relu"),
                   ["config.json: activation_function='relu' is not supported"]),
    "inner width": (lambda d: _edit_config(d, n_inner=48),
                    ["config.json: n_inner=48 is not supported"]),
    "layer scaling": (lambda d: _edit_config(d, scale_attn_by_inverse_layer_idx=True),
                      ["scale_attn_by_inverse_layer_idx=True is not supported"]),
    "added tokens": (lambda d: _write_json(os.path.join(d, "added_tokens.json"), {"<pad>": 271}),
                     ["added_tokens.json: tokens added beyond vocab.json are not supported"]),
    "tokenizer mismatch": (lambda d: _edit_config(d, vocab_size=260),
                           ["vocab.json: token", "outside the model's vocab_size=260"]),
    "missing tensor": (lambda d: _edit_tensors(d, lambda t: t.pop("transformer.h.1.ln_2.bias")),
                       ["model.safetensors: tensor transformer.h.1.ln_2.bias is missing"]),
    "extra tensor": (lambda d: _edit_tensors(
        d, lambda t: t.update({"transformer.h.2.ln_1.weight": np.ones(16, np.float32)})),
                     ["model.safetensors: tensor transformer.h.2.ln_1.weight (16,) is not"]),
    "ill-shaped tensor": (lambda d: _edit_tensors(d, lambda t: t.update(
        {"transformer.h.0.attn.c_attn.weight": t["transformer.h.0.attn.c_attn.weight"].T.copy()})),
                          ["model.safetensors: tensor transformer.h.0.attn.c_attn.weight has",
                           "shape (48, 16), config.json implies (16, 48)"]),
    "corrupt weights": (lambda d: _truncate(os.path.join(d, "model.safetensors")),
                        ["model.safetensors: not a readable safetensors file"]),
    "override changes the model": (None, ["builds another model than"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_errors_and_write_nothing(case, tmp_path, capsys):
  src = tmp_path / "src"
  shutil.copytree(FIXTURE, src)
  edit, needles = BAD[case]
  extra = ["--config.model.num_layers=3"] if edit is None else []
  if edit is not None:
    edit(str(src))
  out = tmp_path / "out"
  rc, err = cli_import(src, out, *extra, capsys=capsys)
  assert_one_line_error(rc, err, "import", *needles)
  assert sorted(os.listdir(tmp_path)) == ["src"]  # No workdir, no temporary folder.


def test_existing_workdir_is_refused(tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  rc, err = cli_import(FIXTURE, out, capsys=capsys)
  assert rc == 2 and "already exists and is not empty" in err
  assert os.listdir(out) == ["keep.txt"]


# ---------------------------------------------------------------------- peers (live)

HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch and transformers")


def _maker():
  return fixture_script('make_hf_gpt2')


@peers
@pytest.mark.parametrize("kind", ["tied-safetensors", "untied-torch-bin"])
def test_peers_random_gpt2_matches_transformers_live(kind, tmp_path, capsys):
  """A fresh random GPT-2 (3 layers, width 32, context 64) saved by transformers."""
  maker = _maker()
  src = str(tmp_path / "src")
  ref = maker.make(src, seed=11, n_layer=3, n_embd=32, n_head=4, n_positions=64,
                   tied=kind.startswith("tied"))
  if kind.endswith("torch-bin"):  # The same weights as a PyTorch state dict.
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(os.path.join(src, "model.safetensors")),
               os.path.join(src, "pytorch_model.bin"))
    os.remove(os.path.join(src, "model.safetensors"))
  rc, err = cli_import(src, tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  full, cached, greedy = _compare(str(tmp_path / "w"), ref["prompt"], ref["greedy"],
                                  ref["logits"])
  assert full <= TOLERANCE and cached <= TOLERANCE, (full, cached)
  if ref["margin"] > 1e-4:  # (Near-ties could flip on rounding alone.)
    assert greedy == ref["greedy"]
  tok = tokenizer_of(runs.load_workdir(str(tmp_path / "w"))[1])
  for case in ref["tokenizer"]:
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["decoded"]
