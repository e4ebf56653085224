"""PEFT LoRA adapters for the LLaMA-kind LM (gen.lm.hf_lora): an adapter merged by `gen import
--lora` gives peft's logits and merge_and_unload()'s, a LoRA run trained from an imported model
exports as its base plus an adapter that reads back to the same weights, and bad adapters are
one-line errors that write nothing.

The default run reads the committed fixtures (tests/fixtures/peft_lora, written with peft by
tests/fixtures/make_peft_lora.py, references beside them): no torch. The `peers` tests build
adapters and models live with peft.
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
from gen.core.interop import InputError
from gen.lm import hf_llama, hf_lora
from gen.lm import steps as lm

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "peft_lora")
BASE = os.path.join(ROOT, "tests", "fixtures", "transformers_llama", "llama")
TOLERANCE = 1e-5
HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch, transformers and peft")


def _base():
  _, config, spec, _, params = hf_llama.read(BASE)
  return config, spec, params


def _logits(config, spec, params, tokens):
  model = lm.parts(config, spec)
  return np.asarray(jax.jit(lambda p: lm.logits(model, p, jnp.array([tokens])))(params))[0]


@pytest.mark.parametrize("name", ["several", "rslora"])
def test_merged_adapter_gives_peft_logits(name):
  """Measured (float32, CPU), from peft's adapted model / from merge_and_unload(): several
  4.7e-6 / 4.2e-6, rslora 5.0e-6 / 5.5e-6, logits up to 3.1; peft's own float32 logits are
  6.0e-6 (several) and 3.3e-6 (rslora) from its float64 ones, and 4.4e-6 / 1.0e-6 from its
  merged model's (reference.json)."""
  folder = os.path.join(FIXTURES, name)
  ref = json.load(open(os.path.join(folder, "reference.json")))
  want = np.load(os.path.join(folder, "reference.npz"))
  config, spec, params = _base()
  merged, summary = hf_lora.merge(config, spec, params, folder)
  ours = _logits(config, spec, merged, ref["tokens"])
  for kind in ("peft", "merged"):
    diff = np.abs(ours - want[kind]).max()
    print(f"{name}: gen vs {kind} {diff:.2g}")
    assert diff <= TOLERANCE, (kind, diff)
  # The adapter matters: without it the logits are far from peft's.
  assert np.abs(_logits(config, spec, params, ref["tokens"]) - want["peft"]).max() > 0.05
  if name == "rslora":
    assert "rslora, scale 3.53553" in summary and "on 2 modules" in summary
    for n in ("q", "kv"):  # Layer 0 untouched (layers_to_transform=[1]).
      np.testing.assert_array_equal(merged["block0"]["attn"][n]["kernel"],
                                    params["block0"]["attn"][n]["kernel"])
    np.testing.assert_array_equal(merged["block1"]["attn"]["kv"]["kernel"][:, 0],
                                  params["block1"]["attn"]["kv"]["kernel"][:, 0])  # k: no LoRA.
  else:
    assert "scale 3 on 13 modules" in summary  # 6 per layer and lm_head.
    f = params["block0"]["mlp"]["fc"]["kernel"].shape[1] // 2  # gate adapted, up not.
    np.testing.assert_array_equal(merged["block0"]["mlp"]["fc"]["kernel"][:, f:],
                                  params["block0"]["mlp"]["fc"]["kernel"][:, f:])


def test_cli_import_lora_with_a_scale(tmp_path, capsys):
  rc, err = cli_import(BASE, tmp_path / "base", capsys=capsys)
  assert rc == 0, err
  adapter = os.path.join(FIXTURES, "several")
  rc = cli.main(["import", f"--lora={adapter}", f"--from={tmp_path / 'base'}",
                 f"--workdir={tmp_path / 'half'}", "--scale=0.5"])
  err = capsys.readouterr().err
  assert rc == 0 and "scale 1.5 on 13 modules" in err, err
  config, spec, params = _base()
  _, _, pipeline, state, _ = runs.load_workdir(str(tmp_path / "half"))
  half, _ = hf_lora.merge(config, spec, params, adapter, 0.5)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), half)
  # Bad adapters: one line, exit 2, nothing written.
  bad = tmp_path / "dora"
  shutil.copytree(adapter, bad)
  c = json.load(open(bad / "adapter_config.json"))
  json.dump({**c, "use_dora": True}, open(bad / "adapter_config.json", "w"))
  rc = cli.main(["import", f"--lora={bad}", f"--from={tmp_path / 'base'}",
                 f"--workdir={tmp_path / 'x'}"])
  assert_one_line_error(rc, capsys.readouterr().err, "import", "use_dora=True: DoRA")
  assert not os.path.exists(tmp_path / "x")


def _edited(tmp_path, config=None, tensors=None):
  folder = tmp_path / "adapter"
  shutil.copytree(os.path.join(FIXTURES, "several"), folder)
  if config:
    c = json.load(open(folder / "adapter_config.json"))
    json.dump(config(c), open(folder / "adapter_config.json", "w"))
  if tensors:
    from safetensors.numpy import load_file, save_file
    path = str(folder / "adapter_model.safetensors")
    save_file(tensors(load_file(path)), path)
  return str(folder)


def _rename(old, new):
  return lambda t: {k.replace(old, new): v for k, v in t.items()}


@pytest.mark.parametrize("config, tensors, message", [
    (lambda c: {**c, "peft_type": "LOHA"}, None, "peft_type='LOHA': LoHa adapters are not "
                                                 "supported"),
    (lambda c: {**c, "rank_pattern": {"q_proj": 8}}, None, "per-module ranks"),
    (lambda c: {**c, "r": 3}, None, "shape mismatch at "),
    (None, _rename("layers.1.", "layers.5."), "this model has no module model.layers.5."),
    (None, lambda t: {**t, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_"
                           "vector": np.ones(96, np.float32)}, "DoRA's magnitude vector"),
    (None, lambda t: {k: v for k, v in t.items() if "lm_head.lora_B" not in k},
     "lm_head has lora_B.weight missing"),
])
def test_bad_adapters_are_named(config, tensors, message, tmp_path):
  cfg, spec, params = _base()
  with pytest.raises(InputError, match=message):
    hf_lora.merge(cfg, spec, params, _edited(tmp_path, config, tensors))


# ------------------------------------------------------------------------------- export


def _lora_state(config, spec, params, kv_heads=None, seed=0):
  """A LoRA state on `params` (every linear layer and the head), its factors random."""
  c = config_lib.ConfigDict(config.to_dict())
  overrides = {"optim.lora.rank": 3, "optim.lora.alpha": 7.0,
               "optim.lora.targets": r"(attn/\w+|mlp/\w+|head)/kernel$"}
  if kv_heads is not None:
    overrides["model.num_kv_heads"] = kv_heads
  config_lib.apply_overrides(c, overrides)
  p = runs.build(c, spec)
  state = p.init(jax.random.key(seed), spec.example_batch(1))
  if kv_heads is None:
    state = state.replace(base=jax.tree.map(jnp.asarray, params))
  rng = np.random.default_rng(seed)
  factors = jax.tree.map(lambda x: jnp.asarray(0.05 * rng.standard_normal(x.shape), jnp.float32),
                         state.factors)
  return c, state.replace(factors=factors)


@pytest.mark.parametrize("kv_heads", [None, 6], ids=["grouped", "fused-qkv"])
def test_exported_adapter_reads_back_to_the_merged_weights(kv_heads, tmp_path):
  config, spec, params = _base()
  c, state = _lora_state(config, spec, params, kv_heads)
  base = jax.tree.map(np.asarray, state.base_params)
  summary = hf_lora.write(c, spec, base, state.plan, jax.device_get(state.factors),
                          str(tmp_path), "base")
  assert "on 15 modules" in summary  # q, k, v, o, gate, up, down per layer, and lm_head.
  ac = json.load(open(tmp_path / "adapter_config.json"))
  assert (ac["r"], ac["lora_alpha"], ac["peft_type"]) == (3, 7.0, "LORA")
  merged, _ = hf_lora.merge(c, spec, base, str(tmp_path))
  want = jax.device_get(state.sample_params)
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_lora_run_from_an_imported_llama_exports_base_and_adapter(tmp_path, capsys):
  """`gen train --config=IMPORTED --config.init_from=IMPORTED --config.optim.lora.rank=2`, then
  `gen export --lora`: the base folder imports to the imported weights, the adapter merges back
  to the run's weights."""
  rc, err = cli_import(BASE, tmp_path / "llama", capsys=capsys)
  assert rc == 0, err
  text = tmp_path / "corpus.txt"
  text.write_text("the cat sat on the mat. " * 100)
  flags = {"init_from": tmp_path / "llama", "data.name": f"text:{text}", "data.seq_len": 16,
           "data.batch_size": 2, "train.num_steps": 2, "train.eval_every": 0,
           "train.sample_every": 0, "train.checkpoint_every": 0, "train.progress": False,
           "optim.name": "adamw", "optim.lr": 1e-2, "optim.lora.rank": 2}
  rc = cli.main(["train", f"--config={tmp_path / 'llama'}", f"--workdir={tmp_path / 'ft'}"]
                + [f"--config.{k}={v}" for k, v in flags.items()])
  err = capsys.readouterr().err
  assert rc == 0, err
  assert "LoRA rank 2 (scale 8) on 10 matrices" in err  # q, kv, out, fc, proj x 2 layers.
  rc = cli.main(["export", f"--workdir={tmp_path / 'ft'}", f"--to={tmp_path / 'hf'}",
                 f"--lora={tmp_path / 'adapter'}"])
  err = capsys.readouterr().err
  assert rc == 0 and "PEFT LoRA adapter (r=2, lora_alpha=16.0)" in err, err
  _, _, _, _, exported_base = hf_llama.read(str(tmp_path / "hf"))
  _, spec, pipeline, state, _ = runs.load_workdir(str(tmp_path / "ft"))
  imported = runs.load_workdir(str(tmp_path / "llama"))[3].params
  jax.tree.map(np.testing.assert_array_equal, exported_base, jax.device_get(imported))
  config = runs.load_config(str(tmp_path / "ft"))
  merged, _ = hf_lora.merge(config, spec, exported_base, str(tmp_path / "adapter"))
  trained = jax.device_get(pipeline.sample_params(state))
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(trained),
                                                       jax.tree.leaves(exported_base)))
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(trained)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
  # --lora of a run that trained every param is refused.
  rc = cli.main(["export", f"--workdir={tmp_path / 'llama'}", f"--to={tmp_path / 'hf2'}",
                 f"--lora={tmp_path / 'adapter2'}"])
  assert_one_line_error(rc, capsys.readouterr().err, "export", "optim.lora.rank=0")
  assert not os.path.exists(tmp_path / "hf2") and not os.path.exists(tmp_path / "adapter2")


# ---------------------------------------------------------------------- peers (live)


@peers
def test_peers_random_adapter_matches_peft_live(tmp_path):
  script = fixture_script("make_peft_lora")
  ref = script.make("live", str(tmp_path), seed=7, r=3, lora_alpha=4, use_rslora=False,
                    target_modules=["q_proj", "v_proj", "up_proj", "down_proj", "o_proj"])
  want = np.load(tmp_path / "reference.npz")
  config, spec, params = _base()
  merged, _ = hf_lora.merge(config, spec, params, str(tmp_path))
  ours = _logits(config, spec, merged, ref["tokens"])
  print(f"live: gen vs peft {np.abs(ours - want['peft']).max():.2g}, vs merged "
        f"{np.abs(ours - want['merged']).max():.2g}; peft f32 vs f64 {ref['f32_vs_f64']:.2g}")
  assert np.abs(ours - want["peft"]).max() <= TOLERANCE
  assert np.abs(ours - want["merged"]).max() <= TOLERANCE


@peers
@pytest.mark.parametrize("kv_heads", [None, 6], ids=["grouped", "fused-qkv"])
def test_peers_exported_adapter_loads_in_peft(kv_heads, tmp_path):
  """gen's base (hf_export) + adapter (hf_lora.write): PeftModel.from_pretrained computes the
  LoRA state's logits."""
  import torch
  from peft import PeftModel
  from transformers import AutoModelForCausalLM

  from gen.lm import hf_export

  config, spec, params = _base()
  c, state = _lora_state(config, spec, params, kv_heads, seed=1)
  base = jax.tree.map(np.asarray, state.base_params)
  os.mkdir(tmp_path / "base")
  hf_export.write(c, spec, base, str(tmp_path / "base"))
  os.mkdir(tmp_path / "adapter")
  hf_lora.write(c, spec, base, state.plan, jax.device_get(state.factors),
                str(tmp_path / "adapter"), "base")
  model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.float32)
  model = PeftModel.from_pretrained(model, str(tmp_path / "adapter")).eval()
  seq = json.load(open(os.path.join(BASE, "reference.json")))["prompt"] * 3
  with torch.no_grad():
    theirs = model(torch.tensor([seq])).logits[0].numpy()
  ours = _logits(c, spec, jax.device_get(state.sample_params), seq)
  plain = _logits(c, spec, base, seq)
  print(f"exported ({kv_heads}): peft vs gen {np.abs(theirs - ours).max():.2g}, logits up to "
        f"{np.abs(ours).max():.2g}, the adapter moves them {np.abs(ours - plain).max():.2g}")
  assert np.abs(ours - plain).max() > 0.05
  assert np.abs(theirs - ours).max() <= TOLERANCE
