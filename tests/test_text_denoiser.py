"""Text to image from scratch (`model.kind = "text_denoiser"`): the word tokenizer and its
refusals, the text encoders' attention, caption dropout, guidance against the null caption
(w = 0 is the unconditional model), prompts and guidance traced in one program, and `gen
sample --prompt` end to end, on a made-up captioned source of coloured squares; and the frozen
CLIP text encoder of an imported Stable Diffusion run (the tiny sd1 fixture)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY_TRAIN, assert_one_line_error

from gen import cli
from gen.core import config as config_lib
from gen.core import runs
from gen.core import train as train_lib
from gen.core.data import sources
from gen.diffusion import caption_use, text, text_denoiser, text_to_image
from gen.diffusion.diffusers import unet2d_condition
from gen.diffusion.config import default_config
from gen.diffusion.models import DiT

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class Squares:
  """A 6x6 square of a colour on the left or the right of a 16x16 canvas, captioned."""

  shape = (16, 16, 3)
  num_classes = 6

  def __init__(self, split):
    self.n = 64 if split == "train" else 16

  def __len__(self):
    return self.n

  def attributes(self, i):
    return list(COLOURS)[i % 3], ("left", "right")[(i // 3) % 2]

  def caption(self, i):
    colour, side = self.attributes(i)
    return f"a {colour} square on the {side}"

  def __getitem__(self, i):
    colour, side = self.attributes(i)
    image = np.zeros(self.shape, np.uint8)
    x0 = 1 if side == "left" else 9
    image[5:11, x0:x0 + 6] = COLOURS[colour]
    return {"image": image, "label": np.int32(i % 6)}


sources.register("test_squares", lambda name, split, data_dir: Squares(split))

UNET = {"model.text_to_image.unet.block_out_channels": (8, 16),
        "model.text_to_image.unet.down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "model.text_to_image.unet.up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "model.text_to_image.unet.attention_head_dim": (2, 2),
        "model.text_to_image.unet.layers_per_block": (1, 1),
        "model.text_to_image.unet.transformer_layers_per_block": (1, 1),
        "model.text_to_image.unet.cross_attention_dim": 16,
        "model.text_to_image.unet.norm_num_groups": 4}


def tiny_config(**overrides):
  c = default_config()
  config_lib.apply_overrides(c, {
      **TINY_TRAIN, "train.num_steps": 2, "data.name": "test_squares",
      "model.kind": "text_denoiser", "model.arch": "dit", "model.text.width": 16,
      "model.text.layers": 1, "model.text.heads": 2, "model.text.max_length": 10,
      "model.text.caption_dropout": 0.3, "model.dit.patch": 4, "model.dit.dim": 16,
      "model.dit.depth": 1, "model.dit.heads": 2, "diffusion.sample_steps": 2,
      "diffusion.sampler": "euler", **overrides})
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("t2i"))
  train_lib.train(tiny_config(), workdir, handle_signals=False)
  return workdir


@pytest.fixture(scope="module")
def loaded(run):
  return runs.load_workdir(run)


def perturbed(params, scale=0.1):
  """`params` moved off their zero-initialized gates and projections, so the text matters."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return jax.tree.unflatten(tree, [v + scale * jax.random.normal(k, v.shape)
                                   for v, k in zip(leaves, keys)])


def test_tokenizer_refuses_unknown_words_and_long_prompts():
  tok = text.WordTokenizer.train([Squares("train").caption(i) for i in range(64)], 10)
  ids = tok(["A Red square on the LEFT", ""])
  assert ids.shape == (2, 10) and ids.dtype == np.int32
  assert ids[0, 0] == text.BOS and list(ids[1, :3]) == [text.BOS, text.EOS, text.PAD]
  assert tok.decode(ids[0]) == "a red square on the left"
  again = text.WordTokenizer.from_json(tok.to_json())
  np.testing.assert_array_equal(again(["a blue square on the right"]),
                                tok(["a blue square on the right"]))
  with pytest.raises(ValueError, match="unknown word.*purple, circle"):
    tok(["a purple circle on the left"])
  with pytest.raises(ValueError, match="11 tokens.*max_length = 10"):
    tok(["a red square on the left on the right"])


@pytest.mark.parametrize("kind,causal", [("clip", True), ("transformer", False)])
def test_text_encoders_attention(kind, causal):
  """CLIP's encoder is causal: a later word never changes an earlier state; the bidirectional
  one's first state reads the whole prompt."""
  t = config_lib.ConfigDict({"encoder": kind, "width": 16, "layers": 2, "heads": 2,
                             "mlp_ratio": 2, "max_length": 6})
  enc = text.encoder_of(t, 12)
  a = jnp.array([[2, 4, 5, 6, 3, 0]])
  b = a.at[0, 3].set(7)
  params = enc.init(jax.random.key(0), a)["params"]
  sa, sb = enc.apply({"params": params}, a), enc.apply({"params": params}, b)
  np.testing.assert_array_equal(sa[0, :3], sb[0, :3]) if causal else None
  assert causal != (float(jnp.abs(sa[0, :3] - sb[0, :3]).max()) > 1e-4)
  assert "text_model" in params and "final_layer_norm" in params["text_model"]


def test_dit_cross_attention_starts_as_identity_and_leaves_plain_dit_alone():
  net = DiT(3, patch=4, dim=16, depth=1, heads=2)
  x, cond = jnp.ones((2, 8, 8, 3)), jnp.zeros((2,))
  labels = jnp.zeros((2,), jnp.int32)
  plain = net.init(jax.random.key(0), x, cond, labels)["params"]
  context = jax.random.normal(jax.random.key(1), (2, 5, 16))
  crossed = net.init(jax.random.key(0), x, cond, labels, False, context)["params"]
  assert "cross_q" not in plain["DiTBlock_0"] and "cross_out" in crossed["DiTBlock_0"]
  # The other params are the plain DiT's, initialized the same.
  kept = {k: v for k, v in crossed["DiTBlock_0"].items() if not k.startswith("cross")}
  jax.tree.map(np.testing.assert_array_equal, kept, plain["DiTBlock_0"])
  # The zeroed output projection: at init the text changes nothing...
  crossed = jax.tree.map(lambda v: v + 0.01, crossed)  # ...once adaLN's zeros are moved.
  crossed["DiTBlock_0"]["cross_out"] = jax.tree.map(jnp.zeros_like,
                                                    crossed["DiTBlock_0"]["cross_out"])
  out = [net.apply({"params": crossed}, x, cond, labels, False, c)
         for c in (context, 2 * context)]
  np.testing.assert_array_equal(out[0], out[1])


def test_unet_positions_tell_the_attention_where_each_token_is():
  """model.unet_positions: with the same params (it adds none), a spatially constant input
  gives a spatially constant Transformer2D output without the position codes (its queries
  cannot tell places apart), and one that varies from place to place with them."""
  blocks = [unet2d_condition.Transformer2D(heads=2, groups=4, positions=p) for p in (False, True)]
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 1, 1, 8)), (1, 4, 4, 8))
  context = jax.random.normal(jax.random.key(1), (1, 3, 8))
  params = blocks[0].init(jax.random.key(2), x, context)["params"]
  assert (jax.tree.map(jnp.shape, params) ==
          jax.tree.map(jnp.shape, blocks[1].init(jax.random.key(2), x, context)["params"]))
  spread = [float(jnp.std(b.apply({"params": params}, x, context), axis=(1, 2)).max())
            for b in blocks]
  assert spread[0] < 1e-5 < 1e-2 < spread[1], spread
  # Through the config: the UNet backbone carries the flag.
  c = tiny_config(**{"model.arch": "unet2d_condition", **UNET, "model.unet_positions": True})
  net, *_ = text_denoiser.parts(c, runs.open_data(c).spec)
  assert net.backbone.positions


def test_parse_weight_teaches_the_encoder_the_objects(monkeypatch):
  """model.text.parse_weight: the batches carry the scenes' per-slot targets, a step reports
  the parser's loss and share of captions read right, and the parse loss's gradient reaches
  the text encoder (its params move otherwise than without it, from the same init and draws);
  the backbone's and encoder's init do not depend on the parser's presence."""
  from test_captions import _register

  _register(monkeypatch)
  glyphs = {"data.name": "captions:glyphs", "model.text.max_length": 32,
            "model.text.tokenizer_captions": 200, "model.dit.patch": 8,
            "optim.grad_clip": 0.0}
  states, pipes = [], []
  for weight in (0.0, 1.0):
    c = tiny_config(**glyphs, **{"model.text.parse_weight": weight})
    data = runs.open_data(c)
    assert ("targets" in data.spec.fields) == (weight > 0)
    pipeline = runs.build(c, data.spec)
    batch = jax.tree.map(jnp.asarray, data.example_batch())
    state = pipeline.init(jax.random.key(0), batch)
    assert ("parser" in state.params) == (weight > 0)
    new, _ = pipeline.train_step(state, batch, jax.random.key(1))  # Warm-up: rate 0.
    states.append(pipeline.train_step(new, batch, jax.random.key(2)))
    pipes.append(state)
  jax.tree.map(np.testing.assert_array_equal, pipes[0].params["encoder"],
               pipes[1].params["encoder"])
  (plain, m0), (parsed, m1) = states
  assert "parse_loss" not in m0 and float(m1["parse_loss"]) > 0
  assert 0.0 <= float(m1["parsed"]) <= 1.0
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                       plain.params["encoder"], parsed.params["encoder"]))
  assert max(moved) > 0


def test_pooled_text_joins_adaln_and_starts_at_zero():
  """model.text.pooled: the states' mean reaches the DiT through adaLN alone (the
  cross-attention's output zeroed, a caption still changes the output), and its zeroed
  projection makes the network at init the one without it."""
  c = tiny_config(**{"model.text.pooled": True})
  spec = runs.open_data(c).spec
  net, *_ = text_denoiser.parts(c, spec)
  plain, *_ = text_denoiser.parts(tiny_config(), spec)
  x, cond = jnp.ones((2, 8, 8, 3)), jnp.zeros((2,))
  ids = jnp.asarray(text.tokenizer_of(spec)(["a red square", "a blue square"]))
  params = net.init(jax.random.key(0), x, cond, ids)["params"]
  plain_params = plain.init(jax.random.key(0), x, cond, ids)["params"]
  assert "pooled" in params["backbone"] and "pooled" not in plain_params["backbone"]
  np.testing.assert_array_equal(net.apply({"params": params}, x, cond, ids),
                                plain.apply({"params": plain_params}, x, cond, ids))
  moved = perturbed(params)
  block = moved["backbone"]["DiTBlock_0"]
  block["cross_out"] = jax.tree.map(jnp.zeros_like, block["cross_out"])
  out = net.apply({"params": moved}, x, cond, ids)
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-3  # Same x, different captions.
  moved["backbone"]["pooled"] = jax.tree.map(jnp.zeros_like, moved["backbone"]["pooled"])
  out = net.apply({"params": moved}, x, cond, ids)
  np.testing.assert_allclose(out[0], out[1], atol=1e-6)


def test_caption_dropout_replaces_whole_captions_by_the_null_caption(loaded):
  _, spec, _, _, _ = loaded
  cfg = text_denoiser.parts(tiny_config(), spec)[3]
  ids = jnp.tile(jnp.arange(10, dtype=jnp.int32)[None] + 4, (4000, 1))
  out = np.asarray(cfg.drop_labels(ids, jax.random.key(0)))
  null = np.all(out == np.asarray(cfg.null), axis=1)
  kept = np.all(out == np.asarray(ids), axis=1)
  assert np.all(null | kept) and abs(null.mean() - 0.3) < 0.03
  assert list(cfg.null[:3]) == [text.BOS, text.EOS, text.PAD]


def test_guidance_zero_is_the_model_on_the_null_caption(loaded):
  """D_null + 0 (D_c - D_null) = D_null: the sample at w = 0 is the unconditional one."""
  _, _, pipeline, state, _ = loaded
  params = perturbed(pipeline.sample_params(state))
  num, kw = pipeline.sample_options(4, {"prompt": "a red square on the left"})
  null = np.tile(np.asarray(pipeline.sample.args[3].null, np.int32), (4, 1))
  fn = jax.jit(functools.partial(pipeline.sample, num=4, steps=2))
  guided0 = fn(params, jax.random.key(3), ids=kw["ids"], guidance=jnp.float32(0.0))
  uncond = fn(params, jax.random.key(3), ids=null)
  # (The guided run's network sees a batch of 8, the other of 4: float rounding differs.)
  np.testing.assert_allclose(guided0, uncond, atol=1e-4)
  cond = fn(params, jax.random.key(3), ids=kw["ids"], guidance=jnp.float32(3.0))
  assert float(jnp.abs(cond - uncond).max()) > 1e-3


def test_prompts_and_guidance_are_traced(loaded):
  """Another prompt or guidance scale runs the same compiled program."""
  _, _, pipeline, state, _ = loaded
  params = perturbed(pipeline.sample_params(state))
  fn = jax.jit(lambda p, rng, kw: pipeline.sample(p, rng, 4, **kw))
  outs = []
  for prompt, w in (("a red square on the left", 2.0), ("a blue square on the right", 5.0)):
    _, kw = pipeline.sample_options(4, {"prompt": prompt, "guidance": w})
    outs.append(fn(params, jax.random.key(0), kw))
  assert fn._cache_size() == 1
  assert float(jnp.abs(outs[0] - outs[1]).max()) > 1e-3


def test_sample_options_cycle_prompts_and_refuse_bad_ones(loaded):
  _, spec, pipeline, _, _ = loaded
  num, kw = pipeline.sample_options(0, {})
  assert num == 8 * len(spec.extra["prompts"]) and kw["ids"].shape == (num, 10)
  num, kw = pipeline.sample_options(5, {"prompt": ["a red square on the left",
                                                   "a blue square on the right"],
                                        "negative_prompt": "a green square"})
  assert num == 5 and kw["negative_ids"].shape == (5, 10)
  np.testing.assert_array_equal(kw["ids"][0], kw["ids"][2])
  for flags, needle in (({"prompt": " "}, "empty prompt"), ({"prompt": "a cat"}, "cat"),
                        ({"prompt": "a", "prompt_file": "x"}, "not both")):
    with pytest.raises(ValueError, match=needle):
      pipeline.sample_options(0, flags)


def test_gen_sample_prompt_end_to_end(run, tmp_path, capsys):
  out = str(tmp_path / "grid.png")
  assert cli.main(["sample", f"--workdir={run}", "--prompt=a red square on the left",
                   "--guidance=4", "--num=4", f"--out={out}"]) == 0
  assert os.path.getsize(out) > 0
  capsys.readouterr()
  for flag, needle in (("--prompt=", "empty prompt"), ("--prompt=a red dog", "unknown word"),
                       ("--prompt=" + "red " * 12, "max_length")):
    rc = cli.main(["sample", f"--workdir={run}", flag, "--num=2"])
    assert_one_line_error(rc, capsys.readouterr().err, "sample", needle)


def test_bad_configs_are_one_line_errors(tmp_path, capsys):
  for overrides, needle in (({"model.arch": "unet"}, "unet2d_condition, dit"),
                            ({"model.text.caption_dropout": 0.0, "diffusion.guidance": 2.0},
                             "caption dropout"),
                            ({"model.text.encoder": "bert"}, "clip, transformer"),
                            ({"model.arch": "unet2d_condition", **UNET,
                              "model.text_to_image.unet.cross_attention_dim": 8},
                             "cross_attention_dim = 8"),
                            ({"data.name": "digits"}, "no captions"),
                            ({"model.arch": "unet2d_condition", **UNET, "model.text.pooled": True},
                             "model.text.pooled feeds the DiT's adaLN"),
                            ({"model.unet_positions": True}, "model.unet_positions adds"),
                            ({"model.text.parse_weight": 1.0}, "no per-object targets"),
                            ({"model.text.parse_weight": -1.0}, "parse_weight must be >= 0")):
    with pytest.raises(config_lib.ConfigError, match=needle):
      c = tiny_config(**overrides)
      spec = runs.open_data(c).spec
      runs.build(c, spec)


def test_unet2d_condition_backbone_trains(tmp_path):
  """The UNet2DConditionModel layout at small widths: a step moves the loss; the encoder's
  and the UNet's params both train."""
  c = tiny_config(**{"model.arch": "unet2d_condition", **UNET})
  data = runs.open_data(c)
  pipeline = runs.build(c, data.spec)
  batch = jax.tree.map(jnp.asarray, data.example_batch())
  state = pipeline.init(jax.random.key(0), batch)
  assert set(state.params) == {"encoder", "backbone"}
  step = jax.jit(pipeline.train_step)
  new, _ = step(state, batch, jax.random.key(1))  # (Warm-up: the first step's rate is 0.)
  new, metrics = step(new, batch, jax.random.key(2))
  assert np.isfinite(float(metrics["loss"]))
  for part in ("encoder", "backbone"):
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.params[part],
                         new.params[part])
    assert max(jax.tree.leaves(moved)) > 0
  out = pipeline.sample(new.params, jax.random.key(2), 2, steps=2)
  assert out.shape == (2, 16, 16, 3)


def test_prompt_on_an_unconditional_run_is_refused(tmp_path, capsys):
  from conftest import TINY_DIFFUSION

  c = default_config()
  config_lib.apply_overrides(c, {**TINY_DIFFUSION, "train.num_steps": 1, "data.name": "digits"})
  workdir = str(tmp_path / "uncond")
  train_lib.train(c, workdir, handle_signals=False)
  capsys.readouterr()
  rc = cli.main(["sample", f"--workdir={workdir}", "--prompt=a red 3"])
  assert_one_line_error(rc, capsys.readouterr().err, "sample", "--prompt")


@pytest.fixture(scope="module")
def glyph_judge(tmp_path_factory):
  """A judge of captioned scenes of made-up glyphs (`captions:glyphs`), trained 4 steps."""
  from test_captions import _register, _train_judge

  with pytest.MonkeyPatch.context() as monkeypatch:
    _register(monkeypatch)
    return _train_judge(tmp_path_factory.mktemp("judge"))


def test_train_sample_and_judge_end_to_end(tmp_path, glyph_judge, capsys, monkeypatch):
  """On captioned scenes of made-up glyphs: a text_denoiser trains 2 steps, `gen sample
  --prompt` draws a caption of the dataset, and `gen eval --metric=captions` scores it with a
  judge at two guidance scales, one compiled sampler for all."""
  from test_captions import _register, check_eval

  from gen.core.data import load
  from gen.eval import captions as captions_eval

  _register(monkeypatch)
  workdir = str(tmp_path / "run")
  c = tiny_config(**{"data.name": "captions:glyphs", "model.text.max_length": 32,
                     "model.text.tokenizer_captions": 200, "model.dit.patch": 8})
  train_lib.train(c, workdir, handle_signals=False)
  prompt = load("captions:glyphs", "test").caption(0)
  out = str(tmp_path / "grid.png")
  assert cli.main(["sample", f"--workdir={workdir}", f"--prompt={prompt}", "--guidance=2",
                   "--num=2", f"--out={out}"]) == 0
  result = check_eval(captions_eval.load_run(workdir), captions_eval.load_judge(glyph_judge),
                      guidance=(0.0, 2.0), num=8, batch=8)
  assert result["rows"]["test", 2.0]["num"] == 8
  capsys.readouterr()
  assert cli.main(["eval", f"--workdir={workdir}", "--metric=captions", f"--judge={glyph_judge}",
                   "--guidance=1", "--num_samples=4", "--batch_size=4"]) == 0
  assert "test_held_out" in capsys.readouterr().out

  # Which words the denoiser reads: x0-MSE with the true caption, and its rise per change.
  assert caption_use.main([f"--workdir={workdir}", "--num=6", "--levels=3,0.5", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["levels"] == [0.5, 3.0] and out["num"] == 6 and out["space"] == "pixels"
  src = load("captions:glyphs", "test")
  indices = np.sort(np.random.default_rng([0, 2]).choice(len(src), 6, replace=False))
  assert out["num_pairs"] == sum(len(src.objects(int(i))) == 2 for i in indices) > 0
  for row in out["rows"]:
    assert row["x0_mse"] > 0 and set(row["rise"]) == {*caption_use.CHANGES, "null"}
    assert set(row["rise_pairs"]) == set(row["rise"])
  assert sum(r["train_share"] for r in out["rows"]) == pytest.approx(1.0)
  # The levels are applied: a nearly untrained denoiser recovers less at more noise.
  assert out["rows"][0]["x0_mse"] < out["rows"][1]["x0_mse"]
  assert caption_use.main([f"--workdir={workdir}", "--num=6", "--levels=3", "--step=2",
                           "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["step"] == 2
  assert caption_use.main([f"--workdir={workdir}", "--step=7"]) == 2
  assert capsys.readouterr().err.strip() == (f"error: no checkpoint at step 7 in {workdir} "
                                             "(it has 2)")


def test_caption_use_changes_one_attribute_and_refuses_other_runs(run, monkeypatch, capsys):
  """`gen.diffusion.caption_use`'s changed captions read back to the true objects with exactly
  one attribute changed, in every object; runs it cannot read are one-line errors, exit 2."""
  from test_captions import _register

  from gen.core.data import load

  _register(monkeypatch)
  src = load("captions:glyphs", "test")
  sets = caption_use.caption_sets(src, range(30))
  fields = {"identity": "identity", "colour": "colour", "size": "size", "position": "slot"}
  for i in range(30):
    true = src.objects(i)
    assert src.parse(sets["true"][i]) == true  # The same objects, though not src.caption(i).
    for change, field in fields.items():
      got = src.parse(sets[change][i])
      assert len(got) == len(true)
      # Every other attribute kept (objects as a multiset) ...
      rest = lambda objs, f=field: sorted(  # noqa: E731
          tuple(getattr(o, k) for k in ("identity", "colour", "size", "slot") if k != f)
          for o in objs)
      assert rest(got) == rest(true), (change, sets["true"][i], sets[change][i])
      # ... and this one changed in every object.
      if change == "position":
        for o in got:  # Each object moved to the opposite slot.
          assert any((t.identity, t.colour, t.size, caption_use.OPPOSITE[t.slot])
                     == (o.identity, o.colour, o.size, o.slot) for t in true), i
      else:
        for o in got:
          same_slot = [t for t in true if t.slot == o.slot]
          assert getattr(o, field) != getattr(same_slot[0], field), (change, i)
  assert caption_use.main([f"--workdir={run}"]) == 2  # Squares: captions it cannot change.
  assert "not on captioned scenes" in capsys.readouterr().err
  assert caption_use.main([f"--workdir={run}-missing"]) == 2
  assert capsys.readouterr().err.startswith("error: ")


# ------------------------------------------------ a frozen CLIP encoder from an imported run

SD1 = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd", "sd1")  # CLIP width 32.


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sd") / "sd1")
  assert cli.main(["import", f"--from={SD1}", f"--workdir={workdir}"]) == 0
  return workdir


def pretrained_config(imported, **overrides):
  return tiny_config(**{"model.arch": "unet2d_condition", **UNET,
                        "model.text_to_image.unet.cross_attention_dim": 32,
                        "model.text.pretrained": imported, "model.text.max_length": 24,
                        **overrides})


def test_pretrained_clip_encoder_is_frozen_and_exact(imported, tmp_path, capsys):
  """The imported run's CLIP tokenizer and text encoder: the states of the first max_length
  ids are Stable Diffusion's own (computed over all 77); the run's params hold no encoder, so
  nothing trains it; a trained run samples a prompt from its spec's record alone."""
  c = pretrained_config(imported)
  data = runs.open_data(c)
  record = data.spec.extra["text_encoder"]
  assert record["source"] == os.path.abspath(imported) and record["hidden_size"] == 32
  sd = text_to_image.load(imported)
  captions = ["a red square on the left", "a green square on the right"]
  tok = text.tokenizer_of(data.spec)
  assert isinstance(tok, text.ClipPrompts)
  full = text_to_image.tokenizer_of(sd.spec)(captions)  # [2, 77], as the pipeline tokenizes.
  ids = tok(captions)
  np.testing.assert_array_equal(ids, full[:, :24])
  want = text_to_image.encode(sd, captions)[0][:, :24]
  net = text_denoiser.parts(c, data.spec)[0]
  got = net.encoder.apply({}, jnp.asarray(ids))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6, rtol=0)

  pipeline = runs.build(c, data.spec)
  batch = jax.tree.map(jnp.asarray, data.example_batch())
  state = pipeline.init(jax.random.key(0), batch)
  assert set(state.params) == {"backbone"}  # The encoder is a constant, not a param.

  workdir = str(tmp_path / "run")
  train_lib.train(c, workdir, handle_signals=False)
  out = str(tmp_path / "grid.png")
  assert cli.main(["sample", f"--workdir={workdir}", "--prompt=a red square on the left",
                   "--guidance=2", "--num=2", f"--out={out}"]) == 0
  capsys.readouterr()
  rc = cli.main(["sample", f"--workdir={workdir}", "--prompt=" + "red " * 30, "--num=2"])
  assert_one_line_error(rc, capsys.readouterr().err, "sample", "CLIP tokens")


def test_pretrained_encoder_errors(imported, run):
  for overrides, needle in (
      ({"model.text.pretrained": "/nonexistent/run"}, "no run there"),
      ({"model.text.pretrained": run}, "not a text_to_image one"),
      ({"model.text_to_image.unet.cross_attention_dim": 16}, "hidden size 32"),
      ({"model.text.max_length": 100}, "3 to 77"),
      ({"model.text.parse_weight": 1.0}, "frozen model.text.pretrained")):
    with pytest.raises(config_lib.ConfigError, match=needle):
      c = pretrained_config(imported, **overrides)
      runs.build(c, runs.open_data(c).spec)
