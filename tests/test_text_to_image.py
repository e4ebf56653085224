"""Text to image (gen.diffusion.text_to_image): a StableDiffusionPipeline folder imported with
`gen import` samples what diffusers' pipeline does, from `gen sample --prompt=...` and from the
Python entry point, and bad folders are one-line errors that write nothing.

The default run compares with tests/fixtures/diffusers_sd/{sd1,sd2}/pipeline.npz (written by
tests/fixtures/make_diffusers_sd.py: StableDiffusionPipeline's output_type "np" images for two
prompts with negative prompts, given latents, guidance 7.5, 10 steps; sd1 ships PNDM as Stable
Diffusion 1.x, sd2 DDIM with v_prediction as 2.x; euler_a's step noise is gen's). No torch
needed; the `peers` test builds another pipeline and runs diffusers live.
"""

import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import ROOT, fixture_script

from gen import cli
from gen.diffusion import text_to_image

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd")
TOL = 1e-4  # Max |image difference| (images in [0, 1]).


def _maker():
  return fixture_script("make_diffusers_sd")


def _import(src, dest, *extra):
  assert cli.main(["import", f"--from={src}", f"--workdir={dest}", *extra]) == 0
  return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The two fixtures imported, and loaded for the notebook entry point."""
  root = tmp_path_factory.mktemp("t2i")
  return {v: text_to_image.load(_import(os.path.join(FIXTURES, v), str(root / v)))
          for v in ("sd1", "sd2")}


def _pipeline_ref(variant):
  return dict(np.load(os.path.join(FIXTURES, variant, "pipeline.npz")))


def _generate(model, ref, sampler, **kw):
  m = _maker()
  return text_to_image.generate(model, list(m.PIPELINE_PROMPTS), list(m.NEGATIVE_PROMPTS),
                                guidance=m.GUIDANCE, steps=m.PIPELINE_STEPS, sampler=sampler,
                                latents=ref["latents"], seed=m.SAMPLE_SEED, **kw)


CASES = [("sd1", s) for s in ("pndm", "ddim", "euler", "euler_a", "dpmpp_2m")] + [
    ("sd2", "ddim"), pytest.param("sd2", "euler_a", marks=pytest.mark.slow)]


@pytest.mark.parametrize("variant,sampler", CASES)
def test_images_match_the_diffusers_pipeline(runs, variant, sampler):
  """Measured: sd1 pndm / ddim / euler / euler_a / dpmpp_2m and sd2 (v_prediction) ddim /
  euler_a, max |difference| of the [0, 1] images in README's "Text to image" table."""
  ref = _pipeline_ref(variant)
  got = _generate(runs[variant], ref, sampler)
  assert got.shape == ref[sampler].shape == (2, 16, 16, 3)
  err = float(np.abs(got - ref[sampler]).max())
  print(f"{variant} {sampler}: {err:.1e} (diffusers float32 vs float64: "
        f"{float(ref[sampler + '_ref64']):.1e})")
  assert err <= TOL


@pytest.mark.parametrize("sampler", [
    "pndm", *(pytest.param(s, marks=pytest.mark.slow)
              for s in ("dpmpp_2m", "ddim", "euler", "euler_a"))])
def test_img2img_matches_the_diffusers_pipeline(runs, sampler):
  """StableDiffusionImg2ImgPipeline at strength 0.6 (10 steps: the last 6 run), every random
  draw gen's (VAE posterior, start noise, euler_a's steps): measured in README's table."""
  m = _maker()
  ref = _pipeline_ref("sd1")
  got = text_to_image.generate(runs["sd1"], list(m.PIPELINE_PROMPTS), list(m.NEGATIVE_PROMPTS),
                               guidance=m.GUIDANCE, steps=m.PIPELINE_STEPS, sampler=sampler,
                               init_image=ref["img2img_image"], strength=m.STRENGTH,
                               seed=m.SAMPLE_SEED)
  want = ref["img2img_" + sampler]
  err = float(np.abs(got - want).max())
  print(f"img2img {sampler}: {err:.1e} (diffusers float32 vs float64: "
        f"{float(ref['img2img_' + sampler + '_ref64']):.1e})")
  assert err <= TOL
  if sampler == "pndm":  # The strength is traced, and it matters.
    other = text_to_image.generate(
        runs["sd1"], list(m.PIPELINE_PROMPTS), list(m.NEGATIVE_PROMPTS), guidance=m.GUIDANCE,
        steps=m.PIPELINE_STEPS, sampler=sampler, init_image=ref["img2img_image"], strength=0.9,
        seed=m.SAMPLE_SEED)
    assert np.abs(other - want).max() > 100 * TOL
    fn = runs["sd1"].compiled[("pndm", 2, 0, 0, True, (16, 16))]
    assert fn._cache_size() == 1


def test_img2img_flags(runs, tmp_path):
  """--strength needs --init_image; an image of a size the networks cannot take, or a
  sampler without an img2img start, is an error before anything is compiled."""
  from PIL import Image

  model = runs["sd1"]
  opts = model.pipeline.sample_options
  with pytest.raises(ValueError, match="--strength applies with --init_image"):
    opts(0, {"prompt": "x", "strength": 0.5})
  path = tmp_path / "odd.png"
  Image.fromarray(np.zeros((18, 16, 3), np.uint8)).save(path)
  with pytest.raises(ValueError, match="--init_image's size 18x16 must be multiples of 4"):
    opts(0, {"prompt": "x", "init_image": str(path)})
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
  with pytest.raises(ValueError, match=r"--strength must be in \[0, 1\]"):
    opts(0, {"prompt": "x", "init_image": str(path), "strength": 1.5})
  num, kw = opts(2, {"prompt": "x", "init_image": str(path), "strength": 0.5})
  assert kw["init_image"].shape == (2, 16, 16, 3) and kw["init_image"].min() == -1.0
  assert kw["strength"][10] == 5 and kw["strength"].dtype == np.int32
  with pytest.raises(ValueError, match="cannot start from an image"):
    jax.eval_shape(lambda p: model.pipeline.sample(p, jax.random.key(0), 2, sampler="heun",
                                                   steps=3, **{k: v for k, v in kw.items()}),
                   model.params)


def test_a_wrong_setting_would_not_pass(runs):
  """The same run without the negative prompts, or at another guidance scale, or with the
  other sampler's rule, is far from the reference: the comparison can fail."""
  m = _maker()
  ref = _pipeline_ref("sd1")
  model = runs["sd1"]
  plain = text_to_image.generate(model, list(m.PIPELINE_PROMPTS), None, guidance=m.GUIDANCE,
                                 steps=m.PIPELINE_STEPS, sampler="pndm", latents=ref["latents"])
  assert np.abs(plain - ref["pndm"]).max() > 100 * TOL
  scale = text_to_image.generate(model, list(m.PIPELINE_PROMPTS), list(m.NEGATIVE_PROMPTS),
                                 guidance=3.0, steps=m.PIPELINE_STEPS, sampler="pndm",
                                 latents=ref["latents"])
  assert np.abs(scale - ref["pndm"]).max() > 100 * TOL
  assert np.abs(ref["ddim"] - ref["pndm"]).max() > 100 * TOL


def test_guidance_and_steps_are_traced(runs):
  """One compiled program serves new guidance scales and step counts (and the PNDM program
  of the comparison above is reused)."""
  m = _maker()
  ref = _pipeline_ref("sd1")
  model = runs["sd1"]
  before = len(model.compiled)
  a = _generate(model, ref, "pndm")
  b = text_to_image.generate(model, list(m.PIPELINE_PROMPTS), list(m.NEGATIVE_PROMPTS),
                             guidance=2.0, steps=4, sampler="pndm", latents=ref["latents"])
  fn = model.compiled[("pndm", 2, 0, 0, False, None)]
  assert fn._cache_size() == 1 and len(model.compiled) == max(before, 1)
  assert np.abs(a - b).max() > 1e-2


def test_encode_gives_the_text_encoder_states(runs):
  """encode: the prompts' states and "" as the negative ones, as diffusers' encode_prompt."""
  ref = dict(np.load(os.path.join(FIXTURES, "sd1", "reference.npz")))
  prompts = _maker().PROMPTS[:3]
  cond, uncond = text_to_image.encode(runs["sd1"], list(prompts))
  assert np.abs(np.asarray(cond) - ref["text_last"]).max() <= 1e-5
  assert np.abs(np.asarray(uncond)[0] - np.asarray(uncond)[2]).max() == 0


def test_gen_sample_writes_images_and_warns_once_for_long_prompts(runs, tmp_path, capsys):
  """`gen sample --prompt_file` with a negative prompt writes the grid; a prompt over 77
  tokens is cut with one warning line."""
  from PIL import Image

  src = tmp_path / "prompts.txt"
  src.write_text("a red fox in the snow\n\n" + "a castle " * 60 + "\n")
  out = tmp_path / "grid.png"
  wd = str(tmp_path / "run")
  _import(os.path.join(FIXTURES, "sd1"), wd)
  capsys.readouterr()
  assert cli.main(["sample", f"--workdir={wd}", f"--prompt_file={src}",
                   "--negative_prompt=blurry", "--guidance=7.5", "--steps=3",
                   "--sampler=dpmpp_2m", "--seed=0", f"--out={out}"]) == 0
  err = capsys.readouterr().err
  warnings = [line for line in err.splitlines() if line.startswith("warning:")]
  assert len(warnings) == 1 and "prompt 2 (" in warnings[0], err
  image = np.asarray(Image.open(out))
  assert image.shape[0] >= 16 and image.shape[1] >= 32 and image.std() > 0
  assert cli.main(["sample", f"--workdir={wd}", "--steps=2"]) == 2  # No prompt.


@pytest.mark.slow
def test_gen_sample_img2img(tmp_path):
  """`gen sample --init_image=PNG --strength=0.6` writes the images."""
  from PIL import Image

  from gen.core.family import DataSpec

  wd = _import(os.path.join(FIXTURES, "sd1"), str(tmp_path / "run"))
  src = tmp_path / "init.png"
  h, w, _ = DataSpec.load(wd).shape  # (No torch: the fixture script's maker needs it.)
  image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
  Image.fromarray(image).save(src)
  out = tmp_path / "out.png"
  assert cli.main(["sample", f"--workdir={wd}", "--prompt=a fox", f"--init_image={src}",
                   "--strength=0.6", "--steps=5", "--sampler=euler_a", "--num=1",
                   f"--out={out}"]) == 0
  got = np.asarray(Image.open(out))
  assert got.shape[0] >= 16 and got.std() > 0


def _edit_json(path, **fields):
  with open(path) as f:
    d = json.load(f)
  d.update(fields)
  with open(path, "w") as f:
    json.dump(d, f)


def _scheduler(folder, **fields):
  _edit_json(os.path.join(folder, "scheduler", "scheduler_config.json"), **fields)


BAD = {
    "missing component": (lambda f: shutil.rmtree(os.path.join(f, "vae")),
                          "vae/config.json: missing"),
    "scheduler class": (lambda f: (_edit_json(os.path.join(f, "model_index.json"), scheduler=[
        "diffusers", "LMSDiscreteScheduler"])), "model_index.json: scheduler=['diffusers', "
        "'LMSDiscreteScheduler'] is not supported"),
    "scheduler field": (lambda f: _scheduler(f, _class_name="EulerDiscreteScheduler",
                                             use_karras_sigmas=True),
                        "scheduler_config.json: use_karras_sigmas=True is not supported"),
    "prk steps": (lambda f: _scheduler(f, skip_prk_steps=False),
                  "scheduler_config.json: skip_prk_steps=False is not supported"),
    "unknown scheduler field": (lambda f: _scheduler(f, shift_schedule=2),
                                "scheduler_config.json: shift_schedule=2 is not supported"),
    "unet block": (lambda f: _edit_json(os.path.join(f, "unet", "config.json"),
                                        up_block_types=["UpBlock2D", "AttnUpBlock2D"]),
                   "unet/config.json: up_block_types has 'AttnUpBlock2D', not supported"),
    "text width": (lambda f: _edit_json(os.path.join(f, "unet", "config.json"),
                                        cross_attention_dim=48),
                   "unet/config.json: cross_attention_dim=48 is not the text encoder's "
                   "hidden_size=32"),
    "vocabulary": (lambda f: _edit_json(os.path.join(f, "text_encoder", "config.json"),
                                        vocab_size=500),
                   "634 tokens, more than the text encoder's vocab_size=500"),
    "missing tensor": (lambda f: _drop_tensor(f), "tensor conv_out.bias is missing"),
}


def _drop_tensor(folder):
  from safetensors.numpy import load_file, save_file

  path = os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")
  t = load_file(path)
  t.pop("conv_out.bias")
  save_file(t, path)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_exit_2_and_write_nothing(case, tmp_path, capsys):
  edit, needle = BAD[case]
  src = tmp_path / "sd1"
  shutil.copytree(os.path.join(FIXTURES, "sd1"), src,
                  ignore=shutil.ignore_patterns("*.npz"))
  edit(str(src))
  dest = tmp_path / "run"
  capsys.readouterr()
  assert cli.main(["import", f"--from={src}", f"--workdir={dest}"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and needle in err and str(src) in err, err
  assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["sd1"]


# ---------------------------------------------------------------------- peers (live)

HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "diffusers"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch, transformers and diffusers")


@peers
def test_peers_random_pipeline_matches_diffusers_live(tmp_path):
  """A fresh sd2-like pipeline of other sizes (three UNet levels, four text layers) with
  Stable Diffusion 1.x's PNDMScheduler config but v_prediction and trailing spacing, built and
  run by diffusers now under pndm, euler_a and dpmpp_2m (12 steps, guidance 5); gen's import of
  it within TOL, and StableDiffusionImg2ImgPipeline at strength 0.45 under pndm and euler_a.
  (diffusers' PNDMScheduler made from another class's config runs its PRK warm-up,
  skip_prk_steps being false by default; gen's pndm is PLMS only.)"""
  maker = _maker()
  src = str(tmp_path / "live")
  unet = {"block_out_channels": (8, 16, 16), "layers_per_block": 1,
          "down_block_types": ("CrossAttnDownBlock2D",) * 3,
          "up_block_types": ("CrossAttnUpBlock2D",) * 3, "attention_head_dim": [2, 4, 2]}
  text = {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 4,
          "num_attention_heads": 6}
  maker.make(src, "sd2", seed=3, text=text, unet=unet)
  name, fields = maker.FOLDER_SCHEDULER["sd1"]
  maker.write_pipeline_files(src, "sd2", (name, {**fields, "prediction_type": "v_prediction",
                                                 "timestep_spacing": "trailing"}))
  model = text_to_image.load(_import(src, str(tmp_path / "run")))
  assert model.config.diffusion.sampler == "pndm" and model.config.diffusion.objective == "v"
  latents = np.asarray(jax.random.normal(jax.random.key(4), (2, 8, 8, 4)))
  prompts, negative = ["a watercolor of a fox", "city at night, neon"], ["", "daylight"]
  for sampler in ("euler_a", "pndm", "dpmpp_2m"):
    want = maker.run_pipeline(src, sampler, latents, prompts, negative, steps=12, guidance=5.0)
    got = text_to_image.generate(model, prompts, negative, guidance=5.0, steps=12,
                                 sampler=sampler, latents=latents, seed=maker.SAMPLE_SEED)
    err = float(np.abs(got - want).max())
    print(f"live {sampler}: {err:.1e}")
    assert err <= TOL, (sampler, err)
  image = maker.init_image(11)
  for sampler in ("pndm", "euler_a"):  # img2img at strength 0.45: the last 5 of 12 steps.
    want = maker.run_img2img(src, sampler, image, 0.45, prompts, negative, steps=12,
                             guidance=5.0)
    got = text_to_image.generate(model, prompts, negative, guidance=5.0, steps=12,
                                 sampler=sampler, init_image=image, strength=0.45,
                                 seed=maker.SAMPLE_SEED)
    err = float(np.abs(got - want).max())
    print(f"live img2img {sampler}: {err:.1e}")
    assert err <= TOL, ("img2img", sampler, err)
