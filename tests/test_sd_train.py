"""Training an imported Stable Diffusion (`model.kind = "text_to_image"`, gen.diffusion.text_to_image)
with `gen train`, as diffusers' train_text_to_image(_lora).py do: the step's loss against one
computed here by hand (eps and v), LoRA leaving the VAE, the text encoder and the UNet's own
weights bitwise as imported, full fine-tuning touching the UNet alone, bad input as one-line
errors, and the command line end to end (import, train, sample, export --lora) on made-up
MNIST files as captions:mnist scenes.

Everything runs on the tiny sd1 fixture (tests/fixtures/diffusers_sd, random weights); the
`peers` test loads the exported adapter in diffusers (needs torch, diffusers and peft).
"""

import gzip
import importlib.util
import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, config_path, fixture_script

from gen import cli
from gen.core import config as config_lib
from gen.core import lora as lora_lib
from gen.core import runs
from gen.core import train as train_lib
from gen.core.data import sources
from gen.core.family import DataSpec
from gen.diffusion import text_to_image
from gen.diffusion.diffusers import autoencoder_kl, clip, sd_lora

BASE = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd", "sd1")
CONFIG = config_path("diffusion", "sd_lora_captions.py")
SIZES = {"train": 40, "test": 20}  # Made-up MNIST files: 28 x 28 noise, labels 0..9 in turn.
UNET_ATTN = r"^unet/.*/(to_q|to_k|to_v|to_out_0)/kernel$"
TEXT_QV = r"^text_encoder/.*/(q_proj|v_proj)/kernel$"
# The config's run shrunk: 8 x 8 scenes (data.resolution: 32 -> 8; 4 x 4 latents), 2 steps.
TINY = {"data.resolution": 8, "data.batch_size": 2, "data.eval_batch_size": 4,
        "train.num_steps": 2, "train.log_every": 1, "train.eval_batches": 1,
        "train.eval_every": 0, "train.checkpoint_every": 0, "train.num_samples": 2,
        "train.progress": False, "diffusion.sample_steps": 2, "optim.lr": 0.01,
        "optim.lora.rank": 2, "optim.lora.targets": f"{UNET_ATTN}|{TEXT_QV}"}
HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "diffusers",
                                                        "peft"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch, transformers, diffusers and peft")


def _idx(folder, split, n):
  img_name, lbl_name = sources._IDX_FILES[split]
  rng = np.random.default_rng(SIZES[split])
  with gzip.open(os.path.join(folder, img_name), "wb") as f:
    f.write(struct.pack(">IIII", 0x0803, n, 28, 28) + rng.integers(0, 256, (n, 28, 28),
                                                                    np.uint8).tobytes())
  with gzip.open(os.path.join(folder, lbl_name), "wb") as f:
    f.write(struct.pack(">II", 0x0801, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A folder of tiny MNIST IDX files (the sizes patched while this module runs)."""
  folder = tmp_path_factory.mktemp("mnist")
  for split, n in SIZES.items():
    _idx(folder, split, n)
  with pytest.MonkeyPatch.context() as mp:
    for split, n in SIZES.items():
      mp.setitem(sources._IDX_SIZES, split, n)
    yield str(folder)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """The sd1 fixture imported: (workdir, its params as numpy)."""
  workdir = str(tmp_path_factory.mktemp("sdtrain") / "base")
  assert cli.main(["import", f"--from={BASE}", f"--workdir={workdir}"]) == 0
  state = runs.load_workdir(workdir)[3]
  return workdir, jax.tree.map(np.asarray, jax.device_get(state.params))


def _flags(data_dir, **overrides):
  return [f"--config.{k}={v}" for k, v in {**TINY, "data.dir": data_dir, **overrides}.items()]


@pytest.fixture(scope="module")
def trained(base, data_dir, tmp_path_factory):
  """`gen train --config=configs/diffusion/sd_lora_captions.py:BASE` shrunk: LoRA on the
  UNet's attention and the text encoder's q / v, 2 steps; its workdir."""
  workdir = str(tmp_path_factory.mktemp("sdtrain") / "lora")
  rc = cli.main(["train", f"--config={CONFIG}:{base[0]}", f"--workdir={workdir}",
                 *_flags(data_dir)])
  assert rc == 0
  return workdir


_NETWORKS = {}


def _networks(config, image_shape):
  """The VAE's encoder, the text encoder and the UNet of `config`, each jitted (once)."""
  key = (config_lib.to_json(config.model.text_to_image), tuple(image_shape))
  if key not in _NETWORKS:
    sd = text_to_image.networks_of(config, DataSpec(tuple(image_shape)))
    _NETWORKS[key] = (
        jax.jit(lambda p, x: sd.vae.apply({"params": p}, x,
                                          method=autoencoder_kl.AutoencoderKL.encode)),
        jax.jit(lambda p, i: clip.encode(sd.text_encoder, p, i)),
        jax.jit(lambda p, x, t, c: sd.unet.apply({"params": p}, x, t, c)))
  return _NETWORKS[key]


def _hand_loss(config, params, images, ids, rng, dropout=0.0, null=None):
  """The loss of diffusers' training scripts, written out: the VAE posterior's draw times
  scaling_factor, t ~ U{0..N-1}, the scheduler's add_noise on its scaled_linear table (float64
  here), target eps or v = sqrt(abar) eps - sqrt(1 - abar) x0, MSE over everything. `rng` is
  split as the step documents: posterior, timesteps, noise, caption dropout."""
  t2i, d = config.model.text_to_image, config.diffusion
  vae, text, unet = _networks(config, images.shape[1:])
  k_latent, k_t, k_noise, k_drop = jax.random.split(rng, 4)
  mean, logvar = vae(params["vae"], images)
  z = np.asarray(mean) + np.exp(0.5 * np.asarray(logvar)) * np.asarray(
      jax.random.normal(k_latent, mean.shape))
  x0 = z * t2i.vae.scaling_factor
  b = len(images)
  t = np.asarray(jax.random.randint(k_t, (b,), 0, d.discrete.num_train_timesteps))
  eps = np.asarray(jax.random.normal(k_noise, x0.shape))
  if dropout:
    drop = np.asarray(jax.random.bernoulli(k_drop, dropout, (b,)))
    ids = np.where(drop[:, None], np.asarray(null)[None], ids)
  assert d.discrete.beta_schedule == "scaled_linear"
  betas = np.linspace(d.discrete.beta_start ** 0.5, d.discrete.beta_end ** 0.5,
                      d.discrete.num_train_timesteps) ** 2
  abar = np.cumprod(1.0 - betas)[t][:, None, None, None]
  noisy = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * eps
  states = text(params["text_encoder"], jnp.asarray(ids))
  pred = np.asarray(unet(params["unet"], jnp.asarray(noisy, jnp.float32),
                         jnp.asarray(t, jnp.float32), states), np.float64)
  target = eps if d.objective == "eps" else np.sqrt(abar) * eps - np.sqrt(1.0 - abar) * x0
  return float(np.mean((pred - target) ** 2))


def _metrics(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [m for m in map(json.loads, f) if m["split"] == split]


def test_cli_import_train_sample_export(base, trained, tmp_path, capsys):
  """The run: the imported tokenizer kept, 8 x 8 scenes, the first test captions as default
  prompts; its first loss is the one computed by hand (eps, the sd1 scheduler's: the first
  batch, the key fold_in(train key, 0), caption dropout 0.1, the imported weights, as LoRA's B
  starts at 0); `gen sample` with and without --prompt; `gen export --lora` writes the adapter
  that merges (on the imported base) into the run's weights. (One test: the run is built once
  per pytest worker that needs it.)"""
  config, spec, pipeline, state, step = runs.load_workdir(trained)
  assert step == 2 and isinstance(state, text_to_image.TextToImageState)
  assert isinstance(state, lora_lib.LoraState) and len(state.plan.targets) == 32 + 4
  # Its summary's "full fine-tuning" optimizer state is the UNet's alone, what trains without LoRA.
  unet_opt = jax.eval_shape(state.tx.init, state.base_params["unet"])
  all_opt = jax.eval_shape(state.tx.init, state.base_params)
  assert state.full_opt_bytes == lora_lib._nbytes(unet_opt) < lora_lib._nbytes(all_opt)
  assert f"full fine-tuning: {lora_lib._mib(lora_lib._nbytes(unet_opt))}" in lora_lib.summary(state)
  assert spec.shape == (8, 8, 3) and len(spec.extra["prompts"]) == text_to_image.PROMPTS
  assert spec.extra["tokenizer"] == DataSpec.load(base[0]).extra["tokenizer"]
  assert config.init_from == base[0] and config.model.text_to_image.caption_dropout == 0.1
  losses = [m["loss"] for m in _metrics(trained)]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert np.isfinite(_metrics(trained, "eval")[-1]["loss"])
  batch = runs.open_data(config, reuse=(trained,)).example_batch()
  rng = jax.random.fold_in(runs.keys(config.seed)["train"], 0)
  null = text_to_image.tokenizer_of(spec)([""])[0]
  want = _hand_loss(config, base[1], batch["image"], batch["ids"], rng, 0.1, null)
  print(f"step 1 loss {losses[0]:.6f}, by hand {want:.6f}")
  assert config.diffusion.objective == "eps"
  np.testing.assert_allclose(losses[0], want, rtol=2e-5)
  assert os.path.isfile(os.path.join(trained, "samples.png"))
  out = tmp_path / "samples.png"
  assert cli.main(["sample", f"--workdir={trained}", "--num=2", f"--out={out}",
                   "--prompt=a small red 7 on the left"]) == 0
  assert out.is_file()
  num, kw = pipeline.sample_options(0, {})  # No --prompt: the default prompts, one image each.
  tok = text_to_image.tokenizer_of(spec)
  assert num == text_to_image.PROMPTS
  np.testing.assert_array_equal(kw["ids"], tok(spec.extra["prompts"]))
  np.testing.assert_array_equal(kw["negative_ids"], tok([""] * num))
  capsys.readouterr()
  adapter = tmp_path / "adapter"
  assert cli.main(["export", f"--workdir={trained}", f"--lora={adapter}"]) == 0
  err = capsys.readouterr().err
  assert "diffusers LoRA (pytorch_lora_weights.safetensors: r=2" in err, err
  assert "UNet 32, text encoder 4" in err, err
  merged, _ = sd_lora.merge(config, spec, base[1], str(adapter))
  want = jax.device_get(pipeline.sample_params(state))
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(want),
                                                       jax.tree.leaves(base[1])))


def _config(workdir, **overrides):
  config = runs.load_config(workdir)
  config.unlock()
  config_lib.apply_overrides(config, {"init_from": workdir, "train.num_steps": 5, **overrides})
  config.lock()
  return config


def _batch(spec):
  tok = text_to_image.tokenizer_of(spec)
  images = np.asarray(jax.random.uniform(jax.random.key(7), (2, 8, 8, 3), minval=-1.0,
                                         maxval=1.0))
  return {"image": images, "ids": tok(["a small red 7 on the left", "two things"])}


def test_lora_trains_only_the_factors_and_lowers_the_loss(base, trained):
  """v objective, LoRA on the UNet's attention and the text encoder's q / v: the first step's
  loss is the hand-computed one; five steps on one batch and key lower it; the VAE, the text
  encoder and the UNet stay bitwise the imported weights (the base), only A and B move."""
  config = _config(base[0], **{"diffusion.objective": "v", "optim.name": "adam",
                               "optim.lr": 0.02, "optim.warmup_steps": 0, "optim.grad_clip": 0.0,
                               "optim.lora.rank": 2, "optim.lora.targets": f"{UNET_ATTN}|{TEXT_QV}"})
  spec = DataSpec.load(trained)
  pipeline = runs.build(config, spec)
  state = jax.jit(pipeline.init)(jax.random.key(0), spec.example_batch(1))
  state = pipeline.load_pretrained(state, jax.tree.map(jnp.asarray, base[1]))
  factors = jax.device_get(state.factors)
  batch, rng = _batch(spec), jax.random.key(3)
  want = _hand_loss(config, base[1], batch["image"], batch["ids"], rng)
  step = jax.jit(pipeline.train_step, donate_argnums=0)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics["loss"]))
  print("v losses", [f"{v:.5f}" for v in losses], f"by hand {want:.5f}")
  np.testing.assert_allclose(losses[0], want, rtol=2e-5)
  assert losses[-1] < losses[0] - 1e-3 and all(np.isfinite(losses))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.base), base[1])
  assert {t.path.split("/")[0] for t in state.plan.targets} == {"unet", "text_encoder"}
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), factors,
                       jax.device_get(state.factors))
  assert all(jax.tree.leaves(moved))  # Every A and every B.


def test_full_finetuning_updates_the_unet_alone(base, trained):
  """optim.lora.rank=0: the optimizer state and the EMA are the UNet's; an update leaves the
  VAE and the text encoder bitwise as they were; sampling reads the UNet's EMA."""
  config = _config(base[0], **{"optim.name": "adam", "optim.lr": 0.1, "optim.ema_decay": 0.5,
                               "optim.warmup_steps": 0})
  spec = DataSpec.load(trained)
  pipeline = runs.build(config, spec)
  state = jax.jit(pipeline.init)(jax.random.key(0), spec.example_batch(1))
  state = pipeline.load_pretrained(state, jax.tree.map(jnp.asarray, base[1]))
  assert type(state) is text_to_image.TextToImageState and set(state.ema_params) == {"unet"}
  assert (jax.tree.structure(state.opt_state[0].mu)
          == jax.tree.structure(state.params["unet"]))
  grads = jax.tree.map(jnp.ones_like, state.params)
  new = jax.jit(lambda s, g: s.apply_gradients(g))(state, grads)
  new = jax.device_get(new)
  for part in ("vae", "text_encoder"):
    jax.tree.map(np.testing.assert_array_equal, new.params[part], base[1][part])
  assert all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(new.params["unet"]),
                                                       jax.tree.leaves(base[1]["unet"])))
  sampled = new.sample_params
  jax.tree.map(np.testing.assert_array_equal, sampled["unet"], new.ema_params["unet"])
  assert sampled["vae"] is new.params["vae"]


def test_caption_dropout_gives_the_empty_prompt():
  cfg = text_to_image.Settings("pndm", 2, 7.5, 0, (8, 8, 3), 4, (1, 2, 0, 0), (),
                               caption_dropout=0.5)
  ids = np.tile(np.array([[1, 5, 2, 0]], np.int32), (64, 1))
  out = np.asarray(text_to_image.drop_captions(cfg, jnp.asarray(ids), jax.random.key(0)))
  dropped = (out == np.array(cfg.null)).all(1)
  assert ((out == ids).all(1) | dropped).all() and 16 < dropped.sum() < 48
  off = text_to_image.Settings("pndm", 2, 7.5, 0, (8, 8, 3), 4, (1, 2, 0, 0), ())
  assert text_to_image.drop_captions(off, ids, None) is ids


def test_resize_takes_the_shorter_side_and_centre_crops():
  image = np.zeros((12, 20, 3), np.uint8)
  image[:, 8:12] = 255  # A bar in the centre.
  out = text_to_image.resize(image, 6)
  assert out.shape == (6, 6, 3) and out.dtype == np.uint8
  assert out[:, 2:4].min() > 100 and out[:, 0].max() == 0 and out[:, -1].max() == 0
  grey = text_to_image.resize(np.zeros((32, 32, 1), np.uint8), 8)
  assert grey.shape == (8, 8, 1)
  assert text_to_image.resize(image, 0) is image


BAD = {
    "no-captions": ({"data.name": "digits"}, "data.name='digits' has no captions"),
    "size": ({"data.resolution": 6}, "6x6 images; the VAE and UNet take sides that are "
                                     "multiples of 4 (their downscales): set data.resolution"),
    "targets-match-nothing": ({"optim.lora.targets": "nothing_here"},
                              "optim.lora.targets='nothing_here' matches no matrix"),
    "targets-in-the-vae": ({"optim.lora.targets": "conv_in/kernel$"},
                           "optim.lora.targets matches vae/decoder/conv_in/kernel: the VAE "
                           "stays frozen"),
    "targets-an-embedding": ({"optim.lora.targets": "token_embedding"},
                             "Stable Diffusion LoRA files hold linear layers and convolutions"),
    "other-networks": ({"model.text_to_image.unet.norm_eps": 1e-3},
                       "model.text_to_image.unet.norm_eps = 0.001 here, 1e-05 in init_from="),
    "caption-dropout": ({"model.text_to_image.caption_dropout": 1.0},
                        "model.text_to_image.caption_dropout must be in [0, 1), got 1.0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(case, base, data_dir, tmp_path, capsys):
  overrides, message = BAD[case]
  workdir = tmp_path / "run"
  rc = cli.main(["train", f"--config={CONFIG}:{base[0]}", f"--workdir={workdir}",
                 *_flags(data_dir, **overrides)])
  assert_one_line_error(rc, capsys.readouterr().err, "train", message)
  assert not workdir.exists()


def test_training_needs_an_imported_run(base, data_dir, tmp_path, capsys):
  """A run's own config without init_from: nothing to start from (no tokenizer, no weights)."""
  rc = cli.main(["train", f"--config={base[0]}", f"--workdir={tmp_path / 'run'}",
                 "--config.data.name=captions:mnist", *_flags(data_dir)])
  assert_one_line_error(rc, capsys.readouterr().err, "train",
                        "set --config.init_from=WORKDIR (gen import of a "
                        "StableDiffusionPipeline folder)")
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resumed_run_equals_the_straight_one(base, data_dir, tmp_path):
  def run(workdir, stop=None):
    config = config_lib.load(f"{CONFIG}:{base[0]}", _flags(data_dir, **{
        "train.num_steps": 3, "train.checkpoint_every": 1}))
    return train_lib.train(config, str(workdir), stop_at_step=stop, handle_signals=False)

  straight = jax.device_get(run(tmp_path / "a"))
  run(tmp_path / "b", stop=1)
  resumed = jax.device_get(run(tmp_path / "b"))
  jax.tree.map(np.testing.assert_array_equal, resumed.factors, straight.factors)
  jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.opt_state)


@peers
def test_peers_trained_adapter_loads_in_diffusers(trained, tmp_path):
  """`gen export --lora` of the trained run, loaded by load_lora_weights into the sd1
  pipeline: diffusers' text encoder and UNet compute what the run's merged weights compute,
  and its images (PNDM, 10 steps, guidance 7.5, given latents) are gen's (measured: text
  1.2e-6, UNet 8.6e-7, images 8.3e-7; the adapter moves the images by 2.3e-2)."""
  maker = fixture_script("make_diffusers_sd_lora")
  base_maker = fixture_script("make_diffusers_sd")
  adapter = str(tmp_path / "adapter")
  assert cli.main(["export", f"--workdir={trained}", f"--lora={adapter}"]) == 0
  ref = dict(np.load(os.path.join(BASE, "reference.npz")))
  pipe_ref = dict(np.load(os.path.join(BASE, "pipeline.npz")))
  ids, x, t = ref["ids"][:3], ref["unet_x"], ref["unet_t"]
  pipe = maker.load_pipeline(BASE)
  pipe.load_lora_weights(adapter)
  want_states, want_out = maker.networks(pipe, ids, x, t)
  want_images = maker.run(pipe, pipe_ref["latents"])
  model = text_to_image.load(trained)
  sd, params = model.sd, model.params
  states = np.asarray(clip.encode(sd.text_encoder, params["text_encoder"], ids))
  out = np.asarray(sd.unet.apply({"params": params["unet"]}, x, t.astype(np.float32),
                                 want_states))
  images = text_to_image.generate(model, list(base_maker.PIPELINE_PROMPTS),
                                  list(base_maker.NEGATIVE_PROMPTS), guidance=base_maker.GUIDANCE,
                                  steps=base_maker.PIPELINE_STEPS, sampler="pndm",
                                  latents=pipe_ref["latents"], height=16, width=16)
  errs = (np.abs(states - want_states).max(), np.abs(out - want_out).max(),
          np.abs(images - want_images).max())
  moved = np.abs(want_images - pipe_ref["pndm"]).max()  # The adapter's effect on the images.
  print(f"text {errs[0]:.1e}, unet {errs[1]:.1e}, images {errs[2]:.1e} (LoRA moves the "
        f"images by {moved:.1e})")
  assert errs[0] <= 1e-5 and errs[1] <= 1e-4 and errs[2] <= 1e-4 and moved > 1e-3


def test_resolution_is_for_text_to_image_runs_only():
  from gen import diffusion
  from gen.diffusion.config import default_config

  config = default_config()
  config.data.resolution = 8
  with pytest.raises(config_lib.ConfigError, match="data.resolution resizes the images of "
                                                   "model.kind='text_to_image' runs"):
    diffusion.make_data(config)
