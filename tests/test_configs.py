"""Every config (configs/, and those a family ships in gen/<family>/configs/) trains for a
few steps, shrunk, and leaves its pictures."""

import contextlib
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (ROOT, TINY_AUTOENCODER, TINY_CLASSIFIER, TINY_DIFFUSION, TINY_GAN, TINY_LM,
                      TINY_PIXELCNN, TINY_VAE, tiny_autoencoder)

from gen import cli
from gen.core import config as config_lib
from gen.core import train as train_lib

SD_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd", "sd1")

# Per-family overrides that shrink a config to seconds on a CPU, and the pictures it leaves.
TINY = {"vae": TINY_VAE, "pixelcnn": TINY_PIXELCNN, "gan": TINY_GAN, "lm": TINY_LM,
        "lm.finetune": TINY_LM, "diffusion": TINY_DIFFUSION, "classifier": TINY_CLASSIFIER,
        "diffusion.autoencoder": TINY_AUTOENCODER}
PICTURES = {"vae": ("samples", "reconstructions", "interpolations"),
            "pixelcnn": ("samples", "completions"), "gan": ("samples", "interpolations"),
            "diffusion": ("samples",), "classifier": (), "diffusion.autoencoder": ("reconstructions",)}
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.py"))
                 + glob.glob(os.path.join(ROOT, "gen", "*", "configs", "[!_]*.py")))
# One config per family in the default run (each shrunk config costs a compile of every
# step); all of them with `pytest -m slow`.
DEFAULT = {"configs/vae/digits.py", "configs/gan/digits.py", "configs/diffusion/digits.py",
           "configs/pixelcnn/digits.py", "configs/lm/shakespeare_char_cpu.py",
           "configs/lm/shakespeare_char_rl.py", "gen/classifier/configs/digits.py"}
# (configs/diffusion/latent_mnist.py: tests/test_latent.py trains latent runs in the default set.)


def _param(path):
  rel = os.path.relpath(path, ROOT)
  return pytest.param(path, id=rel, marks=() if rel in DEFAULT else pytest.mark.slow)


@pytest.mark.parametrize("path", [_param(p) for p in CONFIGS])
def test_config_trains_shrunk(path, tmp_path, request):
  config = config_lib.load_file(path)
  if config.get("model", {}).get("kind") == "text_to_image":  # Fine-tunes an imported run:
    imported = str(tmp_path / "imported")  # the tiny Stable Diffusion fixture, its argument.
    assert cli.main(["import", f"--from={SD_FIXTURE}", f"--workdir={imported}"]) == 0
    config = config_lib.load_file(f"{path}:{imported}")
  kind = config.family + (".autoencoder" if config.get("model", {}).get("kind") == "autoencoder"
                          else "")
  assert kind in TINY, f"add shrinking overrides for family '{kind}'"
  overrides = {**TINY[kind], "train.num_steps": 2, "train.checkpoint_every": 0}
  if config.data.name in ("mnist", "fashion_mnist", "jsb_chorales") or (
      config.data.name.startswith("captions:")) or (
      config.data.name.startswith("text:") and not os.path.isabs(config.data.name[5:])):
    overrides["data.dir"] = request.getfixturevalue("shared_data")
  if config.optim.get("lora", {}).get("rank", 0):  # Shrunk, a matrix may be thinner than r
    overrides["optim.lora.rank"] = 1  # (the tiny UNet's output convolution: 72 x 1).
  if config.get("latent", {}).get("autoencoder"):  # Latent diffusion: a tiny autoencoder first.
    data = {k: v for k, v in overrides.items() if k == "data.dir"}
    overrides["latent.autoencoder"] = tiny_autoencoder(
        tmp_path / "autoencoder", **{"data.name": config.data.name, **data,
                                     "train.num_steps": 2})
    overrides["latent.scale_images"] = 64
    overrides["model.unet.channel_mult"] = (1, 2)
  config_lib.apply_overrides(config, overrides)
  config_lib.validate(config)
  if "pairs" in config.data:  # Preference pairs (DPO) come from a trained run: a few stand-ins.
    config.data.pairs = _stand_in_pairs(config, tmp_path / "pairs.jsonl")
  mock = contextlib.nullcontext()
  if config.data.name.startswith("tfds:"):  # No network here: TFDS's mock data, same shapes.
    mock = __import__("tensorflow_datasets").testing.mock_data(num_examples=32)
  with mock:
    state = train_lib.train(config, str(tmp_path / "run"), handle_signals=False)
  assert int(state.step) == 2
  for name in PICTURES.get(kind, ("samples",)) + ("config", "metrics"):
    assert glob.glob(str(tmp_path / "run" / f"{name}.*")), name
  floats = [np.asarray(x) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
  assert floats and all(np.all(np.isfinite(x)) for x in floats)


def _stand_in_pairs(config, path):
  from gen.lm.data.text import build_tokenizer

  start = build_tokenizer(config.data).start_ids or [0]
  with open(path, "w") as f:
    for i in range(config.data.batch_size):
      f.write(json.dumps({"prompt_ids": start, "chosen_ids": [2, 3 + i % 3],
                          "rejected_ids": [4, 2]}) + "\n")
  return str(path)
