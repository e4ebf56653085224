"""LoRA (gen.core.lora): the merged view, the chain rule to A and B, a frozen base, PEFT's
scaling, resume equality, LoRA with feedback fine-tuning, and one-line errors."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_DIFFUSION, TINY_GAN, TINY_LM, config_path

from gen import cli
from gen.core import config as config_lib
from gen.core import lora, runs
from gen.core import train as train_lib
from gen.core.family import DataSpec
from gen.lm import steps as lm
from gen.lm.data import token_spec
from gen.lm.finetune import steps as ft

VOCAB, CTX = 11, 8
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 40


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _lm_config(name="shakespeare_char_cpu.py", **overrides):
  c = config_lib.load_file(config_path("lm", name))
  config_lib.apply_overrides(c, {**TINY_LM, "model.dropout": 0.0, "optim.lora.rank": 2,
                                 "optim.lora.alpha": 3.0, **overrides})
  config_lib.validate(c)
  return c


def _pipeline(config):
  spec = token_spec(CTX, vocab_size=VOCAB, start_ids=[0])
  p = runs.build(config, spec)
  return p, p.init(jax.random.key(0), spec.example_batch(1)), lm.parts(config, spec)


def _batch(seed=0):
  return {"tokens": jax.random.randint(jax.random.key(seed), (4, CTX + 1), 0, VOCAB)}


# ------------------------------------------------------------------------ the transform


def test_merged_is_base_plus_scaled_product_with_pytorchs_layout():
  """W = W0 + (alpha/r) A B on each target, in the target's shape; untouched elsewhere; the
  same matrix as PEFT's W_torch + s B_torch A_torch with A = lora_A.weight.T, B = lora_B.T."""
  rng = np.random.default_rng(0)
  params = {"attn": {"qkv": {"kernel": rng.normal(size=(6, 3, 2, 4)).astype(np.float32),
                             "bias": np.zeros((3, 2, 4), np.float32)},
                     "out": {"kernel": rng.normal(size=(2, 4, 6)).astype(np.float32)}},
            "embed": {"embedding": rng.normal(size=(5, 6)).astype(np.float32)}}
  s = {"rank": 3, "alpha": 5.0, "targets": r"attn/\w+/kernel$", "base_dtype": "",
       "dropout": 0.0, "rslora": False}
  plan = lora.make_plan(s, params, lm.lora_in_axes)
  assert [(t.path, t.dims) for t in plan.targets] == [("attn/out/kernel", (8, 6)),
                                                      ("attn/qkv/kernel", (6, 24))]
  assert plan.scale == 5.0 / 3
  factors = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
                         lora.init_factors(plan, jax.random.key(0)))
  merged = lora.merge(plan, params, factors)
  f = factors["attn"]["qkv"]["kernel"]
  a_torch, b_torch = np.asarray(f["a"]).T, np.asarray(f["b"]).T  # [r, in], [out, r]
  w_torch = params["attn"]["qkv"]["kernel"].reshape(6, 24).T  # Linear.weight [out, in]
  peft = w_torch + 5.0 / 3 * b_torch @ a_torch
  np.testing.assert_allclose(np.asarray(merged["attn"]["qkv"]["kernel"]).reshape(6, 24).T, peft,
                             rtol=1e-6, atol=1e-6)
  f = factors["attn"]["out"]["kernel"]  # Two input axes: [heads * head_dim, width].
  np.testing.assert_allclose(
      merged["attn"]["out"]["kernel"],
      params["attn"]["out"]["kernel"] + (5.0 / 3 * f["a"] @ f["b"]).reshape(2, 4, 6), atol=1e-6)
  for path in (("attn", "qkv", "bias"), ("embed", "embedding")):
    x, y = merged, params
    for k in path:
      x, y = x[k], y[k]
    np.testing.assert_array_equal(x, y)


def test_scaling_and_init_follow_peft():
  assert lora.scale_of(8, 16.0) == 2.0  # lora_alpha / r
  assert lora.scale_of(4, 8.0, rslora=True) == 4.0  # use_rslora: lora_alpha / sqrt(r)
  plan = lora.make_plan({"rank": 4, "alpha": 1.0, "targets": "w", "base_dtype": "",
                         "dropout": 0.0, "rslora": False}, {"w": jnp.zeros((400, 300))})
  f = lora.init_factors(plan, jax.random.key(1))["w"]
  assert not np.any(np.asarray(f["b"]))  # B = 0
  a = np.asarray(f["a"])  # kaiming_uniform_(a=sqrt(5)) on [r, in]: U(+-1/sqrt(in)).
  bound = 1 / np.sqrt(400)
  assert a.shape == (400, 4) and np.abs(a).max() <= bound and np.abs(a).max() > 0.95 * bound
  assert abs(a.std() - bound / np.sqrt(3)) < 0.05 * bound


def test_fresh_lora_model_computes_exactly_what_its_base_does():
  c = _lm_config()
  p, state, net = _pipeline(c)
  assert isinstance(state, lora.LoraState) and state.params is None
  tokens = _batch()["tokens"][:, :-1]
  out = lm.logits(net, state.view().params, tokens)
  np.testing.assert_array_equal(out, lm.logits(net, state.base_params, tokens))
  np.testing.assert_array_equal(p.sample_params(state)["embed"]["embedding"],
                                state.base["embed"]["embedding"])


def test_training_moves_only_the_factors_and_keeps_the_base_bitwise():
  c = _lm_config(**{"optim.ema_decay": 0.9, "optim.lora.targets": r"attn/(qkv|out)/kernel$"})
  p, state, net = _pipeline(c)
  base = _leaves(state.base)
  step = jax.jit(p.train_step)
  new = state
  for i in range(3):
    new, _ = step(new, _batch(i), jax.random.key(i))
  assert new.params is None and int(new.step) == 3
  for x, y in zip(base, _leaves(new.base)):
    np.testing.assert_array_equal(x, y)  # The frozen base, bitwise.
  for blk in ("block0", "block1"):
    for name in ("qkv", "out"):
      assert np.any(np.asarray(new.factors[blk]["attn"][name]["kernel"]["b"]))
  # The optimizer holds the factors' moments only.
  assert {x.shape for x in jax.tree.leaves(new.opt_state) if x.ndim} <= {
      x.shape for x in jax.tree.leaves(state.factors)}
  # The merged view differs from the base only where a factor is: the MLP stays the base's.
  merged = new.view().params
  np.testing.assert_array_equal(merged["block0"]["mlp"]["fc"]["kernel"],
                                new.base["block0"]["mlp"]["fc"]["kernel"])
  assert not np.array_equal(merged["block0"]["attn"]["qkv"]["kernel"],
                            new.base["block0"]["attn"]["qkv"]["kernel"])
  # Sampling reads the EMA of the factors.
  ema = lora.merge(new.plan, new.base, new.factors_ema)
  for x, y in zip(_leaves(p.sample_params(new)), _leaves(ema)):
    np.testing.assert_array_equal(x, y)


def test_the_gradient_reaches_a_and_b_by_the_chain_rule():
  """The factors' update equals one computed from d loss / d (A, B) directly."""
  c = _lm_config(**{"optim.name": "sgd", "optim.b1": 0.0, "optim.grad_clip": 0.0,
                    "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.lr": 0.5})
  p, state, net = _pipeline(c)
  batch = _batch(1)
  state = state.replace(factors=jax.tree.map(  # Non-zero B, so both gradients are non-zero.
      lambda x: x + 0.1, state.factors))
  new, _ = jax.jit(p.train_step)(state, batch, jax.random.key(0))

  def loss(factors):
    params = lora.merge(state.plan, state.base, factors)
    return jnp.mean(lm.token_nll(net, params, batch["tokens"]))
  grads = jax.grad(loss)(state.factors)
  want = jax.tree.map(lambda f, g: f - 0.5 * g, state.factors, grads)
  for x, y in zip(_leaves(new.factors), _leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


def test_bfloat16_base_is_stored_once_in_bfloat16():
  c = _lm_config(**{"optim.lora.base_dtype": "bfloat16"})
  p, state, net = _pipeline(c)
  assert {x.dtype for x in jax.tree.leaves(state.base)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(state.view().params)} == {jnp.dtype(jnp.float32)}
  assert "trainable params" in lora.summary(state) and "bfloat16" in lora.summary(state)


# --------------------------------------------------------------------- through the trainer


@pytest.fixture(scope="module")
def play(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "play.txt"
  path.write_text(TEXT)
  return str(path)


@pytest.fixture(scope="module")
def source(play, tmp_path_factory):
  """A tiny trained full-parameter run to start LoRA runs from."""
  workdir = str(tmp_path_factory.mktemp("src") / "src")
  c = _lm_config(**{"data.name": f"text:{play}", "optim.lora.rank": 0, "train.num_steps": 2,
                    "train.checkpoint_every": 0})
  train_lib.train(c, workdir, handle_signals=False)
  return workdir


def test_resumed_lora_run_is_bitwise_identical_and_starts_from_init_from(play, source, tmp_path):
  c = _lm_config(**{"data.name": f"text:{play}", "init_from": source, "train.num_steps": 4,
                    "optim.ema_decay": 0.5})
  straight = train_lib.train(c, str(tmp_path / "straight"), handle_signals=False)
  workdir = str(tmp_path / "resumed")
  assert int(train_lib.train(c, workdir, stop_at_step=2, handle_signals=False).step) == 2
  resumed = train_lib.train(c, workdir, handle_signals=False)
  a, b = _leaves(straight), _leaves(resumed)
  assert len(a) == len(b) and int(resumed.step) == 4
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)  # Base, factors, their EMA, moments, step.
  # init_from filled the base with the source's params; training left it as it was.
  _, _, src_pipeline, src_state, _ = runs.load_workdir(source)
  for x, y in zip(_leaves(resumed.base), _leaves(src_pipeline.sample_params(src_state))):
    np.testing.assert_array_equal(x, y)
  # A LoRA run loads back as one (gen sample / eval / export read the merged params).
  _, _, pipeline, loaded, _ = runs.load_workdir(workdir)
  for x, y in zip(_leaves(pipeline.sample_params(loaded)), _leaves(resumed.sample_params)):
    np.testing.assert_array_equal(x, y)
  # Turning LoRA off (or changing its rank) on this workdir is refused, nothing written.
  off = _lm_config(**{"data.name": f"text:{play}", "init_from": source, "optim.lora.rank": 0})
  with pytest.raises(config_lib.ConfigError, match=r"optim.lora.rank: 2 -> 0"):
    train_lib.train(off, workdir, handle_signals=False)


def test_feedback_fine_tuning_uses_the_frozen_base_as_its_reference(play, source, tmp_path):
  c = _lm_config("shakespeare_char_rl.py", **{
      "data.name": f"text:{play}", "init_from": source, "finetune.prompt_len": 3,
      "finetune.target": 5.0, "train.num_steps": 2, "train.checkpoint_every": 0,
      "finetune.method": "ppo", "finetune.ppo_epochs": 2, "data.batch_size": 4})
  state = train_lib.train(c, str(tmp_path / "ppo"), handle_signals=False)
  assert isinstance(state, ft.FinetuneState) and isinstance(state, lora.LoraState)
  assert state.ref_params is None  # No second copy of the weights.
  _, _, src_pipeline, src_state, _ = runs.load_workdir(source)
  for x, y in zip(_leaves(ft.reference(state)), _leaves(src_pipeline.sample_params(src_state))):
    np.testing.assert_array_equal(x, y)
  rows = [json.loads(x) for x in open(tmp_path / "ppo" / "metrics.jsonl")]
  first = [r for r in rows if r["split"] == "train"][0]
  assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # Policy == base at the start.
  assert any(np.any(np.asarray(x["b"])) for x in
             jax.tree.leaves(state.factors, is_leaf=lambda t: isinstance(t, dict) and "b" in t))
  # The measurement tool scores the KL to the frozen base too.
  from gen.lm.finetune import score

  out = tmp_path / "scored" / "s.txt"
  assert score.main([f"--workdir={tmp_path / 'ppo'}", "--num=4", f"--out={out}",
                     "--write=1"]) == 0
  assert json.loads((tmp_path / "scored" / "s.json").read_text())["kl"] > -1e-6


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("overrides, message", [
    ({"optim.lora.targets": "nothing_here"},
     r"optim.lora.targets='nothing_here' matches no matrix among the params: .*"
     r"block0/attn/qkv/kernel \(16, 3, 2, 8\)"),
    ({"optim.lora.rank": 17}, r"optim.lora.rank=17 is larger than block0/attn/out/kernel allows: "
                              r"\(2, 8, 16\) is a 16 x 16 matrix"),
    ({"optim.lora.dropout": 0.1}, r"optim.lora.dropout=0.1: unsupported, this LoRA merges"),
    ({"optim.lora.base_dtype": "int8"}, r"optim.lora.base_dtype must be one of"),
    ({"optim.lora.targets": "("}, r"is not a regular expression"),
])
def test_bad_settings_are_one_line_usage_errors(overrides, message, play, tmp_path, capsys):
  args = {**TINY_LM, "data.name": f"text:{play}", "optim.lora.rank": 2, **overrides}
  workdir = tmp_path / "run"
  rc = cli.main(["train", f"--config={config_path('lm', 'shakespeare_char_cpu.py')}",
                 f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in args.items()])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and not os.path.exists(workdir)
  assert len(err) == 1 and re.search(message, err[0]), err


def test_a_family_with_its_own_state_refuses_lora():
  c = config_lib.load_file(config_path("gan", "digits.py"))
  config_lib.apply_overrides(c, {**TINY_GAN, "optim.lora.rank": 2})
  spec = DataSpec.images((8, 8, 1), 10, "scale")
  with pytest.raises(config_lib.ConfigError, match=r"optim.lora: the gan family keeps its own "
                                                   r"state \(\w+, not one TrainState\)"):
    runs.build(c, spec)


def test_another_family_gets_lora_unchanged():
  """The diffusion UNet (convolutions [kh, kw, in, out]: every axis but the last is an input)
  trains its factors through its own, unchanged step; its base stays bitwise."""
  c = config_lib.load_file(config_path("diffusion", "digits.py"))
  # Every convolution, the zero-initialized output one too (frozen at zero, it would stop every
  # gradient of a fresh network); rank 1 fits its single output channel.
  config_lib.apply_overrides(c, {**TINY_DIFFUSION, "optim.lora.rank": 1,
                                 "optim.lora.targets": r"Conv_\d+/kernel$"})
  spec = DataSpec.images((8, 8, 1), 10, "scale")
  p = runs.build(c, spec)
  state = p.init(jax.random.key(0), spec.example_batch(2))
  assert isinstance(state, lora.LoraState)
  convs = [t for t in state.plan.targets if len(t.shape) == 4]
  assert convs and all(t.n_in == 3 for t in convs)
  batch = {"image": jax.random.normal(jax.random.key(1), (2, 8, 8, 1)),
           "label": jnp.array([1, 2], jnp.int32)}
  step = jax.jit(p.train_step)
  new = state
  for i in range(3):  # The warmup's first step has lr 0; then the output conv, then the rest.
    new, metrics = step(new, batch, jax.random.key(i))
  assert np.isfinite(float(metrics["loss"])) and new.factors_ema is not None
  for x, y in zip(_leaves(state.base), _leaves(new.base)):
    np.testing.assert_array_equal(x, y)
  moved = {k for k, v in lora.named_leaves(new.factors).items() if k.endswith("/b") and np.any(
      np.asarray(v))}
  assert "Conv_1/kernel/b" in moved and any(k.startswith("ResBlock_") for k in moved), moved
