"""diffusers' UNet2DModel: `gen import` of a saved folder gives diffusers' UNet outputs and
DDIMPipeline's samples, the workdir samples with `gen sample`, and unsupported or broken folders
are one-line errors that write nothing.

The default run reads the committed fixture (tests/fixtures/diffusers_unet2d, written by
tests/fixtures/make_diffusers_unet2d.py with diffusers' reference outputs beside it): no torch
needed. The `peers` test builds another random UNet2DModel with torch and diffusers and compares
live; it is skipped where those are not installed.
"""

import importlib.util
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, cli_import, fixture_script

from gen import cli
from gen.core import runs
from gen.diffusion import discrete, schedulers
import gen.diffusion
from gen.diffusion import denoiser as diffusion

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "diffusers_unet2d")
UNET_TOL = 1e-4  # Max |UNet output difference|, float32.
DDIM_TOL = 2e-5  # Max |DDIM sample difference|, in the pipeline's [0, 1] units.
# The same before the pipeline's clamp, in [-1, 1] units. A random network's trajectory is
# sensitive: on the fixture diffusers' own float32 loop differs from its float64 one by
# 1.5e-5, and from the float32 loop of the fixture's previous version (the same weights, torch
# in another environment) by 1.7e-5; gen's from float64 by 1.1e-5.
RAW_TOL = 3e-5


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  dest = str(tmp_path_factory.mktemp("diffusers") / "unet")
  assert cli.main(["import", f"--from={FIXTURE}", f"--workdir={dest}"]) == 0
  return dest


def _parts(workdir):
  config, spec, _, state, step = runs.load_workdir(workdir)
  assert step == 0
  net, process, objective, _ = diffusion.parts(config, spec)
  return config, net, process, objective, state.params


def _compare(workdir, ref, params=None):
  """Max |difference| against `ref`: `unet`, the UNet's output; `ddim`, the DDIM sample as
  DDIMPipeline returns it (in [0, 1]); `raw`, the sample before that clamp (in [-1, 1] units);
  `raw64`, the same against diffusers' loop in float64, and `ref64` diffusers' own float32
  loop against it (the last three relative to the largest value where that is over 1)."""
  _, net, process, objective, own = _parts(workdir)
  params = own if params is None else params
  unet = jax.jit(lambda p, x, c: net.apply({"params": p}, x, c, None))
  out = np.asarray(unet(params, ref["x"], jnp.asarray(ref["t"], jnp.float32) / 1000.0))
  denoise = diffusion.make_denoiser(diffusion.apply_fn(net, params), process, objective,
                                    with_eps=True)  # As the pipeline samples.
  ddim = jax.jit(lambda noise: schedulers.ddim(
      lambda x, t: denoise(x, t, None), process, noise, jax.random.key(0), int(ref["ddim_steps"])))
  x = np.asarray(ddim(ref["noise"]))
  sample = np.clip(x / 2 + 0.5, 0.0, 1.0)  # DDIMPipeline's output_type "np".
  scale = max(1.0, float(np.abs(ref["ddim_raw64"]).max()))
  return {"unet": float(np.abs(out - ref["out"]).max()),
          "ddim": float(np.abs(sample - ref["ddim"]).max()),
          "raw": float(np.abs(x - ref["ddim_raw"]).max()) / scale,
          "raw64": float(np.abs(x - ref["ddim_raw64"]).max()) / scale,
          "ref64": float(np.abs(ref["ddim_raw"] - ref["ddim_raw64"]).max()) / scale}


def test_imported_unet_and_ddim_match_diffusers(imported):
  """Measured: UNet 6.0e-7 (outputs up to 1.0); DDIM (10 steps, leading, clip_sample) 1.1e-5 in
  DDIMPipeline's [0, 1] output, 2.3e-5 before its clamp (the model's [-1, 1] units), and
  1.1e-5 from diffusers' float64 loop, nearer than diffusers' own float32 loop (1.5e-5)."""
  ref = dict(np.load(os.path.join(FIXTURE, "reference.npz")))
  d = _compare(imported, ref)
  assert d["unet"] <= UNET_TOL and d["ddim"] <= DDIM_TOL and d["raw"] <= RAW_TOL, d
  assert d["raw64"] <= max(DDIM_TOL, d["ref64"]), d  # As close as diffusers' float32 is.


@pytest.mark.parametrize("prediction,objective", [("v_prediction", "v"), ("sample", "x0")])
def test_v_and_x0_prediction_models_import_and_match(prediction, objective, tmp_path, capsys):
  """The fixture's network under a scheduler config with prediction_type v_prediction or
  sample: imported as diffusion.objective v / x0, its DDIM loop is diffusers' (measured 4.8e-7
  and 1.4e-6 in [-1, 1] units), and reading it as an eps model would miss by far."""
  src = tmp_path / "src"
  shutil.copytree(FIXTURE, src)
  _edit(SCHED, prediction_type=prediction)(str(src))
  rc, err = cli_import(src, tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  config, net, process, obj, params = _parts(str(tmp_path / "w"))
  assert config.diffusion.objective == objective
  ref = dict(np.load(os.path.join(FIXTURE, "reference.npz")))
  want = ref[f"ddim_raw_{prediction}"]
  denoise = diffusion.make_denoiser(diffusion.apply_fn(net, params), process, obj,
                                    with_eps=True)
  x = np.asarray(jax.jit(lambda noise: schedulers.ddim(
      lambda x, t: denoise(x, t, None), process, noise, None, int(ref["ddim_steps"])))(
          ref["noise"]))
  assert np.abs(x - want).max() <= RAW_TOL, np.abs(x - want).max()
  assert np.abs(ref["ddim_raw"] - want).max() > 100 * RAW_TOL  # The objective matters.


def test_the_workdir_is_the_scheduler_and_a_wrong_mapping_would_not_pass(imported):
  """The config carries DDPMScheduler's table with clip_sample; q and k swapped in the middle
  attention, or the DDIM step without clip_sample, miss by far."""
  config, net, process, objective, params = _parts(imported)
  assert config.model.arch == "unet2d" and config.diffusion.objective == "eps"
  assert isinstance(process, discrete.DiscreteProcess) and process.clip_sample == 1.0
  assert process.spacing == "leading" and config.diffusion.sampler == "ddim"
  ref = dict(np.load(os.path.join(FIXTURE, "reference.npz")))
  attn = params["mid_block_attentions_0"]
  swapped = {**params, "mid_block_attentions_0": {**attn, "to_q": attn["to_k"],
                                                  "to_k": attn["to_q"]}}
  x, c = ref["x"], jnp.asarray(ref["t"], jnp.float32) / 1000.0
  out = np.asarray(net.apply({"params": swapped}, x, c, None))
  assert np.abs(out - ref["out"]).max() > 10 * UNET_TOL
  no_clip = discrete.make_discrete_process(clip_sample=False)
  denoise = diffusion.make_denoiser(diffusion.apply_fn(net, params), no_clip, objective)
  sample = np.asarray(schedulers.ddim(lambda x, t: denoise(x, t, None), no_clip, ref["noise"],
                                    None, int(ref["ddim_steps"])))
  assert np.abs(np.clip(sample / 2 + 0.5, 0, 1) - ref["ddim"]).max() > 100 * DDIM_TOL


def test_cli_sample(imported, tmp_path, capsys):
  rc = cli.main(["sample", f"--workdir={imported}", "--sampler=ddim", "--steps=5", "--num=4",
                 f"--out={tmp_path / 'grid.png'}"])
  capsys.readouterr()
  assert rc == 0 and (tmp_path / "grid.png").stat().st_size > 0


def test_fixed_grids_through_the_pipeline(imported, tmp_path, capsys):
  """`sample(timesteps=...)` is the spacing's own grid when given its timesteps (leading:
  DDIM's previous timestep t - N // n is the next entry), traced values of one length share
  a program, and bad grids are errors before anything compiles; `gen sample` takes the flags."""
  config, spec, pipe, state, _ = runs.load_workdir(imported)
  _, process, _, _ = diffusion.parts(config, spec)
  params, rng = state.params, jax.random.key(3)
  grid = tuple(int(t) for t in discrete.ddim_timesteps(jnp.arange(4), 4, 1000, process.spacing,
                                                       process.steps_offset))
  by_steps = pipe.sample(params, rng, 2, sampler="ddim", steps=4, decode=False)
  by_list = pipe.sample(params, rng, 2, sampler="ddim", timesteps=grid, decode=False)
  np.testing.assert_array_equal(by_list, by_steps)
  traces = []

  @jax.jit
  def run(ts):
    traces.append(1)
    return pipe.sample(params, rng, 2, sampler="ddim", timesteps=ts, decode=False)

  traced = run(jnp.asarray(grid, jnp.float32))
  other = run(jnp.asarray((900, 600, 300, 0), jnp.float32))
  assert len(traces) == 1 and not np.allclose(traced, other)
  # Another program (the network fused into it differently): float32 rounding, which this
  # random network's trajectory amplifies to ~1e-5 (see RAW_TOL).
  np.testing.assert_allclose(traced, by_steps, atol=RAW_TOL)
  for kwargs, message in (
      ({"timesteps": (999, 1000)}, "--timesteps must lie in [0, 999]"),
      ({"sigmas": (3.0, 0.0)}, "ddim takes a list of --timesteps, not of --sigmas"),
      ({"timesteps": (9, 0), "sigmas": (3.0, 0.0)}, "not both"),
      ({"timesteps": (9, 0), "steps": 3}, "--steps=3 disagrees with the fixed grid's 2"),
      ({"timesteps": (9, 0), "sampler": "flow_euler"}, "apply to the ddim, ddpm"),
      ({"sigmas": (3.0,), "sampler": "euler"}, "--sigmas needs >= 2 values")):
    kwargs = {"sampler": "ddim", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
      pipe.sample(params, rng, 2, **kwargs)
  out = tmp_path / "grid.png"
  assert cli.main(["sample", f"--workdir={imported}", "--sampler=euler", "--num=2",
                   "--sigmas=[14.6, 3.0, 0.5, 0.0]", f"--out={out}"]) == 0
  assert out.stat().st_size > 0
  assert cli.main(["sample", f"--workdir={imported}", "--timesteps=[1200, 0]",
                   f"--out={out}"]) == 2
  assert "--timesteps must lie in [0, 999]" in capsys.readouterr().err


# ------------------------------------------------------------------------- bad folders


def _write_json(path, d):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(d, f)


def _edit(name, **fields):
  def edit(folder):
    path = os.path.join(folder, name)
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
    d.update(fields)
    _write_json(path, d)
  return edit


def _edit_tensors(fn):
  def edit(folder):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)
  return edit


CONFIG, SCHED = "config.json", "scheduler_config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
BAD = {
    "no config": (lambda d: os.remove(os.path.join(d, CONFIG)), ["no importer reads"]),
    "no weights": (lambda d: os.remove(os.path.join(d, WEIGHTS)), ["no weights (" + WEIGHTS]),
    "no scheduler": (lambda d: os.remove(os.path.join(d, SCHED)), [SCHED + ": missing"]),
    "block type": (_edit(CONFIG, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"]),
                   ["config.json: down_block_types has 'CrossAttnDownBlock2D', not supported"]),
    "class embedding": (_edit(CONFIG, class_embed_type="timestep"),
                        ["config.json: class_embed_type='timestep' is not supported"]),
    "scale_shift": (_edit(CONFIG, resnet_time_scale_shift="scale_shift"),
                    ["resnet_time_scale_shift='scale_shift' is not supported"]),
    "no mid attention": (_edit(CONFIG, add_attention=False),
                         ["config.json: add_attention=False is not supported"]),
    "groups": (_edit(CONFIG, norm_num_groups=3), ["config.json: norm_num_groups=3 is not"]),
    "fourier": (_edit(CONFIG, time_embedding_type="fourier"),
                ["time_embedding_type='fourier' is not supported"]),
    "unknown field": (_edit(CONFIG, cross_attention_dim=64),
                      ["config.json: cross_attention_dim=64 is not supported"]),
    "scheduler class": (_edit(SCHED, _class_name="LMSDiscreteScheduler"),
                        ["scheduler_config.json: _class_name='LMSDiscreteScheduler' is not"]),
    "thresholding": (_edit(SCHED, thresholding=True),
                     ["scheduler_config.json: thresholding=True is not supported"]),
    "prediction": (_edit(SCHED, prediction_type="flow"),
                   ["scheduler_config.json: prediction_type='flow' is not supported"]),
    "missing tensor": (_edit_tensors(lambda t: t.pop("mid_block.attentions.0.to_k.bias")),
                       [WEIGHTS + ": tensor mid_block.attentions.0.to_k.bias is missing"]),
    "extra tensor": (_edit_tensors(lambda t: t.update(
        {"down_blocks.0.attentions.0.to_q.weight": np.ones((8, 8), np.float32)})),
                     [WEIGHTS + ": tensor down_blocks.0.attentions.0.to_q.weight (8, 8) is not"]),
    "ill-shaped tensor": (_edit_tensors(lambda t: t.update(
        {"conv_in.weight": t["conv_in.weight"].transpose(1, 0, 2, 3).copy()})),
                          [WEIGHTS + ": tensor conv_in.weight has shape (3, 8, 3, 3), "
                           "config.json implies (8, 3, 3, 3)"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_errors_and_write_nothing(case, tmp_path, capsys):
  src = tmp_path / "src"
  shutil.copytree(FIXTURE, src)
  edit, needles = BAD[case]
  edit(str(src))
  rc, err = cli_import(src, tmp_path / "out", capsys=capsys)
  assert_one_line_error(rc, err, "import", *needles)
  assert sorted(os.listdir(tmp_path)) == ["src"]  # No workdir, no temporary folder.


def test_old_names_and_pipeline_folders_read_the_same(tmp_path):
  """An old checkpoint's query / key / value / proj_attn and an early scheduler config, in a
  DDPMPipeline folder (unet/, scheduler/), read as the fixture's."""
  from safetensors.numpy import load_file, save_file

  src = tmp_path / "pipe"
  (src / "unet").mkdir(parents=True)
  (src / "scheduler").mkdir()
  shutil.copy(os.path.join(FIXTURE, CONFIG), src / "unet" / CONFIG)
  shutil.copy(os.path.join(FIXTURE, SCHED), src / "scheduler" / SCHED)
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  tensors = {}
  for name, x in load_file(os.path.join(FIXTURE, WEIGHTS)).items():
    for new, was in old.items():
      name = name.replace(f".{new}.", f".{was}.")
    tensors[name] = x
  save_file(tensors, str(src / "unet" / WEIGHTS))
  from gen.diffusion.diffusers import importer as hf

  want = load_file(os.path.join(FIXTURE, WEIGHTS))
  got = hf.read_tensors(str(src))[0]
  assert {hf._current_name(k) for k in got} == set(want)
  assert hf.read_config(str(src)) == hf.read_config(FIXTURE)
  assert hf.read_scheduler(str(src)) == hf.read_scheduler(FIXTURE)
  # An early scheduler config: predict_epsilon, tensor_format, no spacing or clip_sample_range.
  _write_json(src / "scheduler" / SCHED, {
      "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear",
      "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000,
      "trained_betas": None, "variance_type": "fixed_small", "tensor_format": "pt",
      "predict_epsilon": True})
  assert hf.read_scheduler(str(src)) == hf.read_scheduler(FIXTURE)
  d = json.loads((src / "scheduler" / SCHED).read_text())
  _write_json(src / "scheduler" / SCHED, {**d, "predict_epsilon": False})
  assert hf.read_scheduler(str(src))["objective"] == "x0"


# ---------------------------------------------------------------------- peers (live)

HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "diffusers"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch and diffusers")


def _maker():
  return fixture_script('make_diffusers_unet2d')


@peers
def test_peers_random_unet2d_matches_diffusers_live(tmp_path, capsys):
  """A fresh random UNet2DModel of another layout: three levels, two layers per block, one
  attention head (attention_head_dim null), diffusers' default time embedding and padding,
  mid_block_scale_factor 2, one channel; a DDIMScheduler config with trailing spacing,
  set_alpha_to_one false and clip_sample_range 1.5."""
  src = str(tmp_path / "src")
  ref = _maker().make(
      src, seed=5, steps=7, scheduler_class="DDIMScheduler",
      scheduler={"timestep_spacing": "trailing", "set_alpha_to_one": False,
                 "clip_sample_range": 1.5},
      model={"in_channels": 1, "out_channels": 1, "block_out_channels": (8, 16, 16),
             "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
             "layers_per_block": 2, "attention_head_dim": None, "freq_shift": 0,
             "flip_sin_to_cos": True, "downsample_padding": 1, "mid_block_scale_factor": 2.0})
  rc, err = cli_import(src, tmp_path / "w", capsys=capsys)
  assert rc == 0, err
  d = _compare(str(tmp_path / "w"), ref)
  print("peers: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()))
  # A random network's DDIM trajectory amplifies float32 rounding: on this network diffusers'
  # own float32 loop is 1.4e-5 from its float64 one, gen's 7.6e-6 (and 1.0e-5 from diffusers'
  # float32 loop). The sample must be as close to the float64 loop as diffusers' float32 loop
  # is, within 2x.
  assert d["unet"] <= UNET_TOL, d
  assert d["raw64"] <= max(RAW_TOL, 2 * d["ref64"]), d


def test_integer_timesteps_are_embedded_exactly():
  """cond = t / 1000 in float32 does not always give back t when multiplied by 1000 (10 of
  the integers below 1000 miss by an ulp); the UNet2D takes the nearest integer there."""
  from gen.diffusion.diffusers import unet2d

  t = np.arange(1000, dtype=np.float32)
  cond = t / np.float32(1000.0)
  assert np.sum(cond * np.float32(1000.0) != t) > 0
  np.testing.assert_array_equal(np.asarray(unet2d.timestep_of(cond)), t)
  frac = np.array([0.25, 17.5, 998.75], np.float32)  # (Euler's fractional timesteps stay.)
  np.testing.assert_allclose(np.asarray(unet2d.timestep_of(frac / np.float32(1000))), frac,
                             rtol=1e-6)


def test_unet2d_configs_are_checked(imported):
  """model.arch='unet2d' settings gen cannot build are config errors naming the key."""
  from gen.core.config import ConfigError
  from gen.core.family import DataSpec

  config = runs.load_workdir(imported)[0]
  cases = {"model.unet2d.norm_num_groups": ("model.unet2d.norm_num_groups", 3),
           "model.unet2d.up_block_types": ("model.unet2d.up_block_types",
                                           ("UpBlock2D", "CrossAttnUpBlock2D")),
           "model.unet2d.attention_head_dim": ("model.unet2d.attention_head_dim", 5),
           "model.kind": ("model.kind", "classifier"),
           "model.conditional": ("model.conditional", True)}
  for needle, (key, value) in cases.items():
    c = type(config)(config.to_dict())
    node = c
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
      gen.diffusion.make(c, DataSpec((8, 8, 3), 1, "scale"))
  with pytest.raises(ConfigError, match="image size 5x5 must be divisible by 2"):
    gen.diffusion.make(config, DataSpec((5, 5, 3), 0, "scale"))
