"""Stable Diffusion LoRA files (gen.diffusion.diffusers.sd_lora): `gen import --lora` on a
text_to_image run merges what `StableDiffusionPipeline.load_lora_weights` reads (diffusers'
`save_lora_weights` file with its metadata, the older diffusers names, kohya's names) and then
computes what diffusers computes with the adapter loaded; other adapter kinds and adapters for
another base are one-line errors that write nothing; an adapter written by `sd_lora.write` (and
`gen export --lora` of a text_to_image LoRA run) reads back to the same weights.

The default run reads the committed fixtures (tests/fixtures/diffusers_sd_lora, written with
diffusers and peft by tests/fixtures/make_diffusers_sd_lora.py on the sd1 pipeline of
tests/fixtures/diffusers_sd, the reference's outputs beside them): no torch. The `peers` tests
build pipelines and adapters live.

How far float32 rounding alone moves diffusers' outputs with the fixture's LoRA loaded (its
float32 outputs against the same pipeline in float64, `*_ref64` in reference.npz): text states
1.0e-6, UNet 7.0e-7, images 4.3e-7 (scale 1) and 4.8e-7 (scale 0.5); diffusers' own
`fuse_lora()` moves its images 6.0e-7. gen's distances are in each test's docstring.
"""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, fixture_script

from gen import cli
from gen.core import config as config_lib
from gen.core import lora as lora_lib
from gen.core import runs
from gen.core.interop import InputError
from gen.diffusion import text_to_image
from gen.diffusion.diffusers import clip, sd_lora

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd_lora")
BASE = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd", "sd1")
PEFT = os.path.join(FIXTURES, "peft")
KOHYA = os.path.join(FIXTURES, "kohya")
TEXT_TOL = 1e-5  # Max |text state difference|.
UNET_TOL = 1e-4  # Max |UNet output difference| (outputs up to 1.1).
IMAGE_TOL = 1e-4  # Max |image difference| (images in [0, 1]).
HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "diffusers",
                                                        "peft"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch, transformers, diffusers and peft")


def _ref(name="reference.npz", folder=FIXTURES):
  return dict(np.load(os.path.join(folder, name)))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """The sd1 fixture imported: (workdir, config, spec, params as numpy)."""
  workdir = str(tmp_path_factory.mktemp("sdlora") / "base")
  assert cli.main(["import", f"--from={BASE}", f"--workdir={workdir}"]) == 0
  config, spec, _, state, _ = runs.load_workdir(workdir)
  return workdir, config, spec, jax.tree.map(np.asarray, jax.device_get(state.params))


def _networks(config, spec, params, ids, x, t, context):
  """(text encoder's last state of ids, the UNet's output at x, t with `context`)."""
  sd = text_to_image.networks_of(config, spec)
  states = jax.jit(lambda p, i: clip.encode(sd.text_encoder, p, i))(params["text_encoder"], ids)
  out = jax.jit(lambda p, x, t, c: sd.unet.apply({"params": p}, x, t, c))(
      params["unet"], x, t.astype(np.float32), context)
  return np.asarray(states), np.asarray(out)


def _inputs():
  b = _ref("reference.npz", BASE)
  return b["ids"][:3], b["unet_x"], b["unet_t"]


def test_merged_lora_gives_the_networks_diffusers_loads(base):
  """After load_lora_weights (unfused PEFT layers, float32), measured: text encoder states
  1.4e-6 (up to 3.7), UNet output 6.9e-7 (up to 1.1)."""
  _, config, spec, params = base
  merged, summary = sd_lora.merge(config, spec, params, PEFT)
  assert ("diffusers LoRA" in summary and "UNet 71 modules (rank 2/4, alpha/r 0.75/1.5/3)"
          in summary and "text encoder 12 modules (rank 2, alpha/r 2.5)" in summary), summary
  ref = _ref()
  ids, x, t = _inputs()
  states, out = _networks(config, spec, merged, ids, x, t, ref["text_last"])
  text_err = float(np.abs(states - ref["text_last"]).max())
  unet_err = float(np.abs(out - ref["unet_out"]).max())
  print(f"text {text_err:.1e} (diffusers f32 vs f64 {float(ref['text_last_ref64']):.1e}), "
        f"unet {unet_err:.1e} ({float(ref['unet_out_ref64']):.1e})")
  assert text_err <= TEXT_TOL and unet_err <= UNET_TOL
  # The adapter matters: the base is far from diffusers' adapted networks.
  plain_states, plain_out = _networks(config, spec, params, ids, x, t, ref["text_last"])
  assert np.abs(plain_states - ref["text_last"]).max() > 0.05
  assert np.abs(plain_out - ref["unet_out"]).max() > 0.05
  # The VAE is untouched, and so is every param the file does not adapt.
  jax.tree.map(np.testing.assert_array_equal, merged["vae"], params["vae"])
  np.testing.assert_array_equal(merged["unet"]["conv_in"]["kernel"],
                                params["unet"]["conv_in"]["kernel"])


def test_cli_import_lora_samples_diffusers_images(base, tmp_path, capsys):
  """`gen import --lora` then sampling (PNDM, 10 steps, guidance 7.5, given latents) against
  StableDiffusionPipeline after load_lora_weights, measured: scale 1 5.4e-7, and scale 0.5 (the
  pipeline's cross_attention_kwargs={"scale": 0.5}, `--scale=0.5`) 5.4e-7."""
  workdir, config, spec, params = base
  rc = cli.main(["import", f"--lora={PEFT}", f"--from={workdir}", f"--workdir={tmp_path / 'l'}"])
  err = capsys.readouterr().err
  assert rc == 0 and "diffusers LoRA from" in err and "times 1" in err, err
  model = text_to_image.load(str(tmp_path / "l"))
  m = fixture_script("make_diffusers_sd")
  latents = _ref("pipeline.npz", BASE)["latents"]
  ref = _ref()

  def images():
    return text_to_image.generate(model, list(m.PIPELINE_PROMPTS), list(m.NEGATIVE_PROMPTS),
                                  guidance=m.GUIDANCE, steps=m.PIPELINE_STEPS, sampler="pndm",
                                  latents=latents, seed=m.SAMPLE_SEED)

  for scale in (1.0, 0.5):
    if scale != 1.0:  # The same program on the params of --scale.
      model.params = jax.tree.map(np.asarray, sd_lora.merge(config, spec, params, PEFT,
                                                            scale)[0])
    got = images()
    want = ref[f"images_{scale:g}"]
    e = float(np.abs(got - want).max())
    with capsys.disabled():
      print(f"images at scale {scale:g}: {e:.1e} (diffusers f32 vs f64 "
            f"{float(ref[f'images_{scale:g}_ref64']):.1e})")
    assert e <= IMAGE_TOL
    assert np.abs(got - ref["images_base"]).max() > 0.02  # The LoRA shows in the images.
  # --scale=0.5 from the command line writes those params.
  rc = cli.main(["import", f"--lora={PEFT}", f"--from={workdir}", f"--workdir={tmp_path / 'h'}",
                 "--scale=0.5"])
  assert rc == 0 and "times 0.5" in capsys.readouterr().err
  _, _, _, state, _ = runs.load_workdir(str(tmp_path / "h"))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), model.params)


def test_kohya_names_give_the_same_params(base):
  """The fixture's kohya file (the same tensors renamed, each module's alpha as `.alpha`), and
  a single file given in place of the folder."""
  _, config, spec, params = base
  want, _ = sd_lora.merge(config, spec, params, PEFT)
  got, summary = sd_lora.merge(config, spec, params, os.path.join(KOHYA, "lora.safetensors"))
  assert summary.startswith("kohya LoRA") and "UNet 71 modules" in summary, summary
  jax.tree.map(np.testing.assert_array_equal, got, want)


# --------------------------------------------------------------------- files edited here


def _read(path):
  from safetensors import safe_open

  with safe_open(path, "np") as f:
    return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def _edited(tmp_path, tensors=None, metadata=None, source=PEFT, name=sd_lora.WEIGHTS):
  """A copy of an adapter folder with its tensors and (parsed) lora_adapter_metadata edited;
  metadata returning None drops it."""
  from safetensors.numpy import save_file

  src = os.path.join(source, sd_lora.WEIGHTS if source == PEFT else "lora.safetensors")
  t, header = _read(src)
  meta = json.loads(header[sd_lora.METADATA_KEY]) if sd_lora.METADATA_KEY in header else None
  t = tensors(t) if tensors else t
  meta = metadata(meta) if metadata else meta
  folder = tmp_path / "adapter"
  folder.mkdir(exist_ok=True)
  header = {"format": "pt"}
  if meta is not None:
    header[sd_lora.METADATA_KEY] = json.dumps(meta)
  save_file(t, str(folder / name), metadata=header)
  return str(folder)


def _older_names(t):
  """The names diffusers' training scripts and older versions wrote: lora.down / lora.up for
  the UNet (the attention processors' to_q_lora ... for one block), lora_linear_layer and
  `text_model.` for the text encoder."""
  out = {}
  for k, v in t.items():
    ab = "down" if ".lora_A." in k else "up"
    module = k.rsplit(".lora_", 1)[0]
    if k.startswith("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1."):
      parent, proj = module.rsplit(".", 1) if not module.endswith("to_out.0") else \
          (module[:-len(".to_out.0")], "to_out")
      out[f"{parent}.processor.{proj}_lora.{ab}.weight"] = v
    elif k.startswith("unet."):
      out[f"{module}.lora.{ab}.weight"] = v
    else:
      out[f"text_encoder.text_model.{module[len('text_encoder.'):]}.lora_linear_layer."
          f"{ab}.weight"] = v
  return out


def test_older_diffusers_names_read_the_same(base, tmp_path):
  _, config, spec, params = base
  want, _ = sd_lora.merge(config, spec, params, PEFT)
  got, _ = sd_lora.merge(config, spec, params, _edited(tmp_path, _older_names))
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_without_metadata_each_module_has_alpha_equal_to_its_rank(base, tmp_path):
  """As diffusers' get_peft_kwargs: no metadata (nor kohya alphas), scale 1 everywhere."""
  _, config, spec, params = base
  t, _ = _read(os.path.join(PEFT, sd_lora.WEIGHTS))
  got, summary = sd_lora.merge(config, spec, params, _edited(tmp_path, metadata=lambda m: None))
  assert "alpha/r 1)" in summary, summary
  module = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
  a, b = t[f"unet.{module}.lora_A.weight"], t[f"unet.{module}.lora_B.weight"]
  w = params["unet"]["down_blocks_0_attentions_0"]["transformer_blocks_0"]["attn2"]["to_k"]
  got_w = got["unet"]["down_blocks_0_attentions_0"]["transformer_blocks_0"]["attn2"]["to_k"]
  np.testing.assert_allclose(got_w["kernel"], w["kernel"] + (b @ a).T, rtol=1e-6, atol=1e-6)
  # A 3x3 convolution: B's 1x1 kernel times A's 3x3 one, HWIO.
  module = "down_blocks.0.resnets.0.conv1"
  a, b = t[f"unet.{module}.lora_A.weight"], t[f"unet.{module}.lora_B.weight"]
  conv = np.einsum("or,rihw->hwio", b[:, :, 0, 0], a)
  np.testing.assert_allclose(got["unet"]["down_blocks_0_resnets_0"]["conv1"]["kernel"],
                             params["unet"]["down_blocks_0_resnets_0"]["conv1"]["kernel"] + conv,
                             rtol=1e-6, atol=1e-6)


def test_kohya_without_alphas_has_scale_1_and_per_module_alphas_apply(base, tmp_path):
  """As kohya's scripts and diffusers read them (checked live for diffusers: the fixture's
  alphas differ per module)."""
  _, config, spec, params = base
  k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
  t, _ = _read(os.path.join(KOHYA, "lora.safetensors"))
  ones = _edited(tmp_path, lambda t: {n: v for n, v in t.items() if not n.endswith(".alpha")},
                 source=KOHYA, name="lora.safetensors")
  got, summary = sd_lora.merge(config, spec, params, ones)
  assert "alpha/r 1)" in summary, summary
  w = params["unet"]["down_blocks_0_attentions_0"]["transformer_blocks_0"]["attn2"]["to_k"]
  got_w = got["unet"]["down_blocks_0_attentions_0"]["transformer_blocks_0"]["attn2"]["to_k"]
  up, down = t[k + ".lora_up.weight"], t[k + ".lora_down.weight"]
  np.testing.assert_allclose(got_w["kernel"], w["kernel"] + (up @ down).T, rtol=1e-6, atol=1e-6)
  shutil.rmtree(tmp_path / "adapter")
  seven = _edited(tmp_path, lambda t: {**t, k + ".alpha": np.array(7.0, np.float32)},
                  source=KOHYA, name="lora.safetensors")
  got, _ = sd_lora.merge(config, spec, params, seven)
  got_w = got["unet"]["down_blocks_0_attentions_0"]["transformer_blocks_0"]["attn2"]["to_k"]
  np.testing.assert_allclose(got_w["kernel"], w["kernel"] + 7 / 4 * (up @ down).T, rtol=1e-6,
                             atol=1e-6)


def test_half_precision_files_read_as_their_float32_values(base, tmp_path):
  """bfloat16 and float16 tensors (as many shared LoRA files are): the same params as a float32
  file of the same values."""
  import jax.numpy as jnp
  from safetensors.flax import save_file

  _, config, spec, params = base
  t, header = _read(os.path.join(PEFT, sd_lora.WEIGHTS))
  for dtype in (jnp.bfloat16, jnp.float16):
    rounded = {k: np.asarray(jnp.asarray(v, dtype), np.float32) for k, v in t.items()}
    want, _ = sd_lora.merge(config, spec, params, _edited(tmp_path, lambda _: rounded))
    half = tmp_path / f"half-{dtype.__name__}"
    half.mkdir()
    save_file({k: jnp.asarray(v, dtype) for k, v in t.items()},
              str(half / sd_lora.WEIGHTS), metadata=header)
    got, _ = sd_lora.merge(config, spec, params, str(half))
    jax.tree.map(np.testing.assert_array_equal, got, want)
    shutil.rmtree(tmp_path / "adapter")


def _set(key, value):
  return lambda t: {**t, key: value}


def _meta(**fields):
  return lambda m: {**m, **fields}


A = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
BAD = [
    ("dora", None, _meta(**{"unet.use_dora": True}), PEFT, "unet.use_dora=True: DoRA"),
    ("dora-vector", _set("unet.mid_block.attentions.0.proj_in.lora_magnitude_vector",
                         np.ones(16, np.float32)), None, PEFT, "DoRA's magnitude vector"),
    ("dora-kohya", _set(K + ".dora_scale", np.ones((1, 8), np.float32)), None, KOHYA,
     "DoRA's magnitude"),
    ("loha", _set(K + ".hada_w1_a", np.ones((8, 2), np.float32)), None, KOHYA,
     "a LoHa weight (LoHa is not supported)"),
    ("lokr", None, _meta(**{"unet.peft_type": "LOKR"}), PEFT,
     "unet.peft_type='LOKR': LoKr adapters are not supported"),
    ("lokr-key", _set("unet.conv_in.lokr_w1", np.ones((2, 2), np.float32)), None, PEFT,
     "a LoKr weight"),
    ("rank", None, _meta(**{"unet.r": 3}), PEFT, "shape mismatch at unet."),
    ("another-base", _set(A, np.ones((4, 320), np.float32)), None, PEFT,
     "shape mismatch at unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q: A "
     "(4, 320), B (8, 4); this model's "
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q (linear, weight (8, 8)) takes "
     "A (4, 8) and B (8, 4)"),
    ("conv-b", _set("unet.down_blocks.0.resnets.0.conv1.lora_B.weight",
                    np.ones((8, 4, 3, 3), np.float32)), None, PEFT,
     "this model's down_blocks.0.resnets.0.conv1 (3x3 convolution"),
    ("module", lambda t: {k.replace("down_blocks.0.", "down_blocks.3."): v for k, v in t.items()},
     None, PEFT, "the UNet has no module down_blocks.3."),
    ("kohya-module", lambda t: {k.replace("down_blocks_0_", "input_blocks_1_"): v
                                for k, v in t.items()}, None, KOHYA,
     "this model has no module lora_unet_input_blocks_1_"),
    ("half", lambda t: {k: v for k, v in t.items() if not k.endswith("to_q.lora_B.weight")},
     None, PEFT, "its lora_B.weight is missing"),
    ("te2", _set("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                 np.ones((2, 32), np.float32)), None, KOHYA, "SDXL"),
    ("alpha", _set(K + ".alpha", np.array(0.0, np.float32)), None, KOHYA,
     f"{K}.alpha=0.0: expected one positive number"),
    ("some-alphas", lambda t: {k: v for k, v in t.items() if k != K + ".alpha"}, None, KOHYA,
     f"{K}.alpha is missing while other modules have one"),
    ("alora", None, _meta(**{"text_encoder.alora_invocation_tokens": [1, 2]}), PEFT,
     "activated LoRA (aLoRA) is not supported"),
    ("unknown-field", None, _meta(**{"unet.some_new_variant": {"x": 1}}), PEFT,
     "unet.some_new_variant={'x': 1}: a LoraConfig field gen does not know"),
    ("no-part", None, lambda m: {k: v for k, v in m.items() if not k.startswith("text_")}, PEFT,
     "has no text_encoder.* fields"),
    ("bias", _set("unet.conv_in.lora_B.bias", np.ones(8, np.float32)), None, PEFT,
     "a bias on lora_B"),
    ("embedding", _set("text_encoder.embeddings.token_embedding.lora_embedding_A",
                       np.ones((2, 10), np.float32)), None, PEFT, "LoRA on an embedding"),
    ("mixed", _set("unet.conv_in.lora_A.weight", np.ones((4, 4, 3, 3), np.float32)), None,
     KOHYA, "kohya keys (lora_unet_..., lora_te_...) mixed with others"),
    ("not-lora", _set("unet.conv_in.weight", np.ones((8, 4, 3, 3), np.float32)), None, PEFT,
     "unet.conv_in.weight: not a LoRA A/B weight"),
    ("other-prefix", _set("transformer.x.lora_A.weight", np.ones((2, 2), np.float32)), None,
     PEFT, "not a unet. or text_encoder. LoRA key"),
]


@pytest.mark.parametrize("case, tensors, metadata, source, message", BAD,
                         ids=[c[0] for c in BAD])
def test_bad_adapters_are_named(case, tensors, metadata, source, message, base, tmp_path):
  _, config, spec, params = base
  folder = _edited(tmp_path, tensors, metadata, source)
  with pytest.raises(InputError) as e:
    sd_lora.merge(config, spec, params, folder)
  assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_cli_refusals_exit_2_and_write_nothing(base, tmp_path, capsys):
  workdir = base[0]
  folder = _edited(tmp_path, metadata=_meta(**{"unet.use_dora": True}))
  for adapter, needle in ((folder, "use_dora=True: DoRA"), (str(tmp_path / "none"), "missing"),
                          (str(tmp_path), "no LoRA weights")):
    rc = cli.main(["import", f"--lora={adapter}", f"--from={workdir}",
                   f"--workdir={tmp_path / 'x'}"])
    assert_one_line_error(rc, capsys.readouterr().err, "import", needle)
    assert not os.path.exists(tmp_path / "x")


def test_other_kinds_of_run_are_refused(base):
  _, config, spec, params = base
  other = config_lib.ConfigDict(config.to_dict())
  other.model.kind = "denoiser"
  with pytest.raises(InputError, match="apply to model.kind='text_to_image' runs"):
    sd_lora.merge(other, spec, params, PEFT)


# ------------------------------------------------------------------------------- writing


def _lora_state(config, spec, params, seed=0):
  """A LoRA plan and random factors on the sd1 params: the UNet's attention, proj_in/out (1x1
  convolutions), resnet convs and the text encoder's q/v/fc1."""
  c = config_lib.ConfigDict(config.to_dict())
  targets = (r"unet/.*(to_q|to_v|to_out_0|proj_in|proj_out|conv1|conv_shortcut|ff/net_2)/kernel$"
             r"|text_encoder/.*(q_proj|v_proj|fc1)/kernel$")
  config_lib.apply_overrides(c, {"optim.lora.rank": 3, "optim.lora.alpha": 5.0,
                                 "optim.lora.targets": targets})
  plan = lora_lib.make_plan(lora_lib.settings(c), params)
  rng = np.random.default_rng(seed)
  factors = jax.tree.map(lambda x: 0.1 * rng.standard_normal(x.shape).astype(np.float32),
                         lora_lib.init_factors(plan, jax.random.key(seed)))
  return c, plan, factors


def test_written_adapter_reads_back_to_the_merged_weights(base, tmp_path):
  _, config, spec, params = base
  c, plan, factors = _lora_state(config, spec, params)
  summary = sd_lora.write(c, spec, params, plan, factors, str(tmp_path), "base")
  assert "r=3, lora_alpha=5.0" in summary and "text encoder 6" in summary, summary
  merged, _ = sd_lora.merge(c, spec, params, str(tmp_path))
  want = jax.device_get(lora_lib.merge(plan, params, factors))
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
  """A text_to_image LoRA run on the sd1 import, as `gen train --config.init_from=BASE
  --config.optim.lora.rank=3` would leave it: (workdir, its sampling params). The state is
  built here with random factors (every A and B far from its init); tests/test_sd_train.py
  trains such runs."""
  from gen.core.checkpoint import Checkpointer

  workdir, config, spec, params = base
  c, _, factors = _lora_state(config, spec, params, seed=4)
  c.init_from = workdir
  pipeline = runs.build(c, spec)
  state = jax.jit(pipeline.init)(jax.random.key(0), spec.example_batch(1))
  state = state.replace(base=lora_lib.store_base(state.plan, jax.tree.map(jnp.asarray, params)),
                        factors=jax.tree.map(jnp.asarray, factors))
  run = str(tmp_path_factory.mktemp("sdlora") / "lora-run")
  os.makedirs(run)
  config_lib.save_json(c, os.path.join(run, runs.CONFIG_FILE))
  spec.save(run)
  ckpt = Checkpointer(run, keep=1, async_save=False)
  try:
    ckpt.save(0, state, {"step": 0})
    ckpt.wait()
  finally:
    ckpt.close()
  _, _, pipeline, state, _ = runs.load_workdir(run)
  return run, jax.tree.map(np.asarray, jax.device_get(pipeline.sample_params(state)))


def test_cli_export_lora_imports_back_to_the_runs_weights(base, lora_run, tmp_path, capsys):
  """`gen export --workdir=RUN --lora=ADAPTER` writes the adapter alone (the diffusion family
  exports no base), and `gen import --lora=ADAPTER --from=BASE` gives the run's merged weights."""
  workdir, _, _, params = base
  run, trained = lora_run
  adapter = tmp_path / "adapter"
  rc = cli.main(["export", f"--workdir={run}", f"--lora={adapter}"])
  err = capsys.readouterr().err
  assert rc == 0 and "diffusers LoRA (pytorch_lora_weights.safetensors: r=3" in err, err
  assert sorted(os.listdir(adapter)) == [sd_lora.WEIGHTS]
  _, metadata = sd_lora.read_file(str(adapter / sd_lora.WEIGHTS))
  assert metadata["unet.base_model_name_or_path"] == "base"  # The run's init_from.
  rc = cli.main(["import", f"--lora={adapter}", f"--from={workdir}",
                 f"--workdir={tmp_path / 'adapted'}"])
  assert rc == 0, capsys.readouterr().err
  _, _, _, state, _ = runs.load_workdir(str(tmp_path / "adapted"))
  merged = jax.device_get(state.params)
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(trained),
                                                       jax.tree.leaves(params)))
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(trained)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("of,flags,message", [
    ("run", ["--to=OUT", "--lora=ADAPTER"],
     "exports nothing (no folder for --to): give --lora alone"),
    ("run", ["--to=OUT"], "the diffusion family exports nothing"),
    ("run", [], "export needs --to=FOLDER, --lora=ADAPTER_FOLDER"),
    ("base", ["--lora=ADAPTER"], "optim.lora.rank=0"),
], ids=["to-and-lora", "to", "neither", "not-a-lora-run"])
def test_cli_export_refusals_write_nothing(of, flags, message, base, lora_run, tmp_path, capsys):
  workdir = base[0] if of == "base" else lora_run[0]
  flags = [f.replace("OUT", str(tmp_path / "out")).replace("ADAPTER", str(tmp_path / "adapter"))
           for f in flags]
  rc = cli.main(["export", f"--workdir={workdir}", *flags])
  assert_one_line_error(rc, capsys.readouterr().err, "export", message)
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------- peers (live)


@peers
def test_peers_random_lora_on_a_fresh_pipeline_matches_diffusers_live(tmp_path):
  """A fresh sd2-like pipeline (linear proj_in / proj_out, two layers per block, 3 text
  layers) and a fresh LoRA (UNet r=3 alpha 4 on attention, ff, proj, conv2, time_emb_proj and
  conv_in / conv_out; text r=4 alpha 2 with use_rslora), built and loaded by diffusers now:
  text states, UNet and pipeline images (the folder's DDIM with v_prediction, 8 steps, guidance
  6) within the bounds. Measured: text 9.5e-7, UNet 7.1e-7, images 8.6e-7."""
  base_maker = fixture_script("make_diffusers_sd")
  maker = fixture_script("make_diffusers_sd_lora")
  src = str(tmp_path / "sd2")
  ref_base = base_maker.make(src, "sd2", seed=21)
  base_maker.write_pipeline_files(src, "sd2")
  unet = dict(r=3, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in",
                                                 "proj_out", "ff.net.0.proj", "conv2",
                                                 "time_emb_proj", "conv_in", "conv_out"])
  text = dict(r=4, lora_alpha=2, use_rslora=True,
              target_modules=["q_proj", "k_proj", "out_proj", "fc2"])
  maker.make(src, str(tmp_path / "lora"), unet, text, seed=22, kohya=False)
  latents = np.asarray(jax.random.normal(jax.random.key(5), (2, 8, 8, 4)))
  ids, x, t = ref_base["ids"][:3], ref_base["unet_x"], ref_base["unet_t"]
  kw = dict(prompts=["a red fox", "a lake at dawn"], negative=["", "fog"], steps=8, guidance=6.0)
  ref = maker.reference(src, str(tmp_path / "lora" / "peft"), latents, ids, x, t, **kw)
  workdir = str(tmp_path / "run")
  assert cli.main(["import", f"--from={src}", f"--workdir={workdir}"]) == 0
  assert cli.main(["import", f"--lora={tmp_path / 'lora' / 'peft'}", f"--from={workdir}",
                   f"--workdir={tmp_path / 'adapted'}"]) == 0
  model = text_to_image.load(str(tmp_path / "adapted"))
  states, out = _networks(model.config, model.spec, model.params, ids, x, t, ref["text_last"])
  images = text_to_image.generate(model, kw["prompts"], kw["negative"], guidance=6.0, steps=8,
                                  sampler="ddim", latents=latents)
  errs = {"text": float(np.abs(states - ref["text_last"]).max()),
          "unet": float(np.abs(out - ref["unet_out"]).max()),
          "images": float(np.abs(images - ref["images_1"]).max())}
  print("live: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
  assert errs["text"] <= TEXT_TOL and errs["unet"] <= UNET_TOL and errs["images"] <= IMAGE_TOL


@peers
@pytest.mark.parametrize("names", ["diffusers", "kohya"])
def test_peers_older_names_and_kohya_load_alike_in_diffusers(names, tmp_path):
  """Files without metadata, as diffusers' training scripts (train_text_to_image_lora.py:
  attention only, lora.down / lora_linear_layer names) and kohya's sd-scripts (an `.alpha` per
  module, here not all alike) save them: diffusers' load_lora_weights and gen's merge give the
  same UNet and text encoder (measured: text 1.5e-6 / 1.4e-6, UNet 5.4e-7 / 9.5e-7 for the
  diffusers / kohya names). (diffusers renames a UNet's keys only when the first is not
  PEFT-named: a file mixing `to_q.lora.down` with `proj_in.lora_A` loses its attention LoRA
  there, with a warning; gen reads every key by its own name. Likewise a kohya file whose text
  encoder LoRA has no out_proj: diffusers recognizes kohya's converted attention names by
  `to_out_lora` and drops q / k / v without it.)"""
  from safetensors.numpy import save_file

  maker = fixture_script("make_diffusers_sd_lora")
  kohya = names == "kohya"
  unet = dict(r=2, lora_alpha=3, target_modules=["to_q", "to_k", "to_v", "to_out.0"] + (
      ["proj_in", "ff.net.2", "conv1"] if kohya else []),
      alpha_pattern={"ff.net.2": 5} if kohya else {})
  text = dict(r=2, lora_alpha=1, target_modules=["q_proj", "v_proj", "out_proj", "fc1"])
  pipe = maker.load_pipeline(BASE)
  configs = maker.adapt(pipe, unet, text, seed=31)
  folder = tmp_path / "lora"
  if kohya:
    folder.mkdir()
    save_file(maker.kohya_tensors(pipe), str(folder / "lora.safetensors"))
  else:
    maker.save_peft(pipe, configs, str(folder), metadata=False, names="diffusers")
  ids, x, t = _inputs()
  ref = maker.reference(BASE, str(folder), None, ids, x, t, images=False)
  workdir = str(tmp_path / "run")
  assert cli.main(["import", f"--from={BASE}", f"--workdir={workdir}"]) == 0
  config, spec, _, state, _ = runs.load_workdir(workdir)
  params = jax.tree.map(np.asarray, jax.device_get(state.params))
  merged, summary = sd_lora.merge(config, spec, params, str(folder))
  want = ("alpha/r 1.5/2.5)", "alpha/r 0.5)") if kohya else ("alpha/r 1)",)
  assert all(w in summary for w in want), summary
  states, out = _networks(config, spec, merged, ids, x, t, ref["text_last"])
  print(f"{names}: text {np.abs(states - ref['text_last']).max():.1e}, unet "
        f"{np.abs(out - ref['unet_out']).max():.1e}")
  assert np.abs(states - ref["text_last"]).max() <= TEXT_TOL
  assert np.abs(out - ref["unet_out"]).max() <= UNET_TOL


@peers
def test_peers_written_adapter_loads_in_diffusers(base, tmp_path):
  """sd_lora.write's file, loaded by load_lora_weights into the base pipeline: diffusers
  computes what gen's LoRA state's merged params compute (measured: text 1.3e-6, UNet
  7.5e-7)."""
  _, config, spec, params = base
  c, plan, factors = _lora_state(config, spec, params, seed=4)
  sd_lora.write(c, spec, params, plan, factors, str(tmp_path), "base")
  maker = fixture_script("make_diffusers_sd_lora")
  ids, x, t = _inputs()
  ref = maker.reference(BASE, str(tmp_path), None, ids, x, t, images=False)
  merged = jax.tree.map(np.asarray, jax.device_get(lora_lib.merge(plan, params, factors)))
  states, out = _networks(config, spec, merged, ids, x, t, ref["text_last"])
  print(f"written: text {np.abs(states - ref['text_last']).max():.1e}, unet "
        f"{np.abs(out - ref['unet_out']).max():.1e}")
  assert np.abs(states - ref["text_last"]).max() <= TEXT_TOL
  assert np.abs(out - ref["unet_out"]).max() <= UNET_TOL


@peers
def test_peers_cli_exported_adapter_loads_in_diffusers(base, lora_run, tmp_path, capsys):
  """`gen export --lora` of a text_to_image LoRA run, loaded by load_lora_weights into the
  base pipeline: diffusers' text encoder and UNet compute what the run's merged params compute
  (measured: text 1.3e-6, UNet 7.7e-7)."""
  _, config, spec, _ = base
  run, trained = lora_run
  assert cli.main(["export", f"--workdir={run}", f"--lora={tmp_path / 'adapter'}"]) == 0
  maker = fixture_script("make_diffusers_sd_lora")
  ids, x, t = _inputs()
  ref = maker.reference(BASE, str(tmp_path / "adapter"), None, ids, x, t, images=False)
  states, out = _networks(config, spec, trained, ids, x, t, ref["text_last"])
  print(f"exported: text {np.abs(states - ref['text_last']).max():.1e}, unet "
        f"{np.abs(out - ref['unet_out']).max():.1e}")
  assert np.abs(states - ref["text_last"]).max() <= TEXT_TOL
  assert np.abs(out - ref["unet_out"]).max() <= UNET_TOL
