"""Shared test setup: CPU only, a persistent compilation cache, data locations, tiny configs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax-tests"))
# `gen` commands run by the tests use the same cache, not the user's (~/.cache/gen/jax).
os.environ.setdefault("GEN_COMPILATION_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The tests compile hundreds of small programs and run each for milliseconds: on CPU, LLVM's
# optimization passes would take half the suite's time. Level 0 changes how fast the machine
# code runs, not what it computes at the HLO level every test checks; GEN_TEST_FAST_COMPILE=0
# runs the suite with the backend's full optimization. (Set before jax makes its backend, so
# subprocesses that import this module get it too.)
FAST_COMPILE = "--xla_backend_optimization_level=0"
if (os.environ.setdefault("GEN_TEST_FAST_COMPILE", "1") == "1"
    and os.environ["JAX_PLATFORMS"] == "cpu" and FAST_COMPILE not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import pytest  # noqa: E402

SHARED_DATA = (os.environ.get("GEN_DATA_DIR")
               or os.path.join(os.path.dirname(ROOT), "shared", "data"))

# Trainer settings that make any config run a few steps in seconds.
TINY_TRAIN = {
    "data.batch_size": 8, "data.eval_batch_size": 16, "train.num_steps": 4,
    "train.log_every": 1, "train.eval_every": 0, "train.eval_batches": 1,
    "train.sample_every": 0, "train.num_samples": 4, "train.checkpoint_every": 2,
    "train.progress": False, "optim.warmup_steps": 1,
}
# Shrinks any VAE config to something that compiles and steps in seconds.
TINY_VAE = {"model.channels": (8, 16), "model.hidden": 32, "model.latent_dim": 4,
            "eval.iwae_k_train": 4, "eval.iwae_k": 8, **TINY_TRAIN}
TINY_PIXELCNN = {"model.features": 8, "model.num_layers": 1, "model.input_kernel": 3,
                 **TINY_TRAIN}
TINY_LM = {"model.num_layers": 2, "model.num_heads": 2, "model.width": 16, "data.seq_len": 8,
           "sample.max_new_tokens": 8, **TINY_TRAIN}
TINY_GAN = {"model.latent_dim": 8, "model.g_channels": (16, 8), "model.d_channels": (16,),
            "model.d_convs_per_stage": 1, "gan.standing_stats": 16, **TINY_TRAIN}
TINY_DIFFUSION = {"model.unet.channels": 8, "model.unet.channel_mult": (1,),
                  "model.unet.num_res_blocks": 1, "model.unet.attn_resolutions": (),
                  "model.unet.heads": 2, "model.unet.groups": 4, "model.dit.dim": 16,
                  "model.dit.depth": 1, "model.dit.heads": 2, "diffusion.sample_steps": 2,
                  **TINY_TRAIN}

# The autoencoder of latent diffusion on 8x8 digits: a 4x4x2 latent.
TINY_AUTOENCODER = {"model.autoencoder.pad": 0, "model.autoencoder.channels": 8,
                    "model.autoencoder.channel_mult": (1, 2), "model.autoencoder.groups": 4,
                    "model.autoencoder.latent_channels": 2, "model.autoencoder.disc_channels": 8,
                    **TINY_TRAIN}

TINY_CLASSIFIER = {"model.channels": (8,), "model.features": 8, **TINY_TRAIN}


def pytest_collection_modifyitems(config, items):
  """Skips the `gpu`-marked tests where JAX sees no accelerator (JAX_PLATFORMS=cpu, which
  this file sets unless it is set, or no GPU/TPU); `benchmarks/gpu.py` runs them on one."""
  marked = [item for item in items if item.get_closest_marker("gpu")]
  if not marked:
    return
  import jax

  if any(d.platform != "cpu" for d in jax.devices()):
    return
  skip = pytest.mark.skip(reason="needs an accelerator; JAX sees only the CPU "
                                 f"(JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r})")
  for item in marked:
    item.add_marker(skip)


def config_path(*parts):
  return os.path.join(ROOT, "configs", *parts)


@pytest.fixture
def shared_data():
  """The offline datasets folder (../shared/data or $GEN_DATA_DIR); skips when absent."""
  if not os.path.isfile(os.path.join(SHARED_DATA, "mnist", "train-images-idx3-ubyte.gz")):
    pytest.skip(f"offline datasets not found at {SHARED_DATA}")
  return SHARED_DATA


def tiny_vae(spec="vae/digits.py", **overrides):
  from gen.core import config as config_lib

  c = config_lib.load_file(config_path(*spec.split("/")))
  config_lib.apply_overrides(c, {**TINY_VAE, **overrides})
  config_lib.validate(c)
  return c


def tiny_autoencoder(workdir, spec="diffusion/autoencoder_mnist.py", **overrides):
  """Trains a shrunk autoencoder config (on 8x8 digits unless `data.name` says otherwise)
  in `workdir`; returns `workdir` as a string."""
  from gen.core import config as config_lib
  from gen.core import train as train_lib

  c = config_lib.load_file(config_path(*spec.split("/")))
  config_lib.apply_overrides(c, {"data.name": "digits", **TINY_AUTOENCODER, **overrides})
  config_lib.validate(c)
  train_lib.train(c, str(workdir), handle_signals=False)
  return str(workdir)


def tiny_latent(autoencoder, spec="diffusion/latent_mnist.py", **overrides):
  """A shrunk latent diffusion config on the latents of `autoencoder` (a workdir)."""
  from gen.core import config as config_lib

  c = config_lib.load_file(config_path(*spec.split("/")))
  config_lib.apply_overrides(c, {"data.name": "digits", **TINY_DIFFUSION,
                                 "model.unet.channel_mult": (1, 2), "latent.scale_images": 64,
                                 "latent.autoencoder": str(autoencoder), **overrides})
  config_lib.validate(c)
  return c


def tiny_lm(**overrides):
  """The Shakespeare char config shrunk (pass `data.name="text:FILE"`), without dropout."""
  from gen.core import config as config_lib

  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, {**TINY_LM, "model.dropout": 0.0, **overrides})
  config_lib.validate(c)
  return c


def fixture_script(name: str):
  """tests/fixtures/NAME.py as a module (the scripts that make the committed fixtures)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", "fixtures",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def cli_import(src, dest, *extra, capsys=None):
  """`gen import --from=SRC --workdir=DEST`: its exit code and (with capsys) its stderr."""
  from gen import cli

  rc = cli.main(["import", f"--from={src}", f"--workdir={dest}", *extra])
  return rc, capsys.readouterr().err if capsys is not None else ""


def assert_one_line_error(rc, err, command, *needles):
  """`gen COMMAND` failed as a usage error: exit code 2, one line `gen COMMAND: error: ...`
  on stderr holding every needle. Returns that line."""
  lines = err.strip().splitlines()
  assert rc == 2, err
  assert len(lines) == 1 and lines[0].startswith(f"gen {command}: error: "), err
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]
