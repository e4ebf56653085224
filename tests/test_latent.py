"""Latent diffusion: the autoencoder (shapes, KL in closed form), the normalization of its
latents, sampling that decodes inside the compiled program, and the autoencoder a run
records (missing, another one, a changed one: one-line errors, nothing written)."""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_one_line_error, tiny_autoencoder, tiny_latent

from gen import cli
from gen.core import config as config_lib
from gen.core import runs
from gen.core import train as train_lib
from gen.core.family import DataSpec
from gen.diffusion import autoencoder as ae_lib
from gen.diffusion import latent as latent_lib
import gen.diffusion
from gen.diffusion import denoiser as diffusion


@pytest.fixture(scope="module")
def ae_dir(tmp_path_factory):
  return tiny_autoencoder(tmp_path_factory.mktemp("ae"), **{"train.num_steps": 3})


@pytest.fixture(scope="module")
def latent_run(ae_dir, tmp_path_factory):
  """A conditional latent run (label dropout, for guidance) trained 2 steps: its workdir."""
  workdir = str(tmp_path_factory.mktemp("latent"))
  c = tiny_latent(ae_dir, **{"train.num_steps": 2, "model.conditional": True,
                             "model.label_dropout": 0.2})
  train_lib.train(c, workdir, handle_signals=False)
  return workdir


def test_autoencoder_shapes_and_padding():
  net = ae_lib.Autoencoder(1, latent_channels=3, channels=8, channel_mult=(1, 2, 2), groups=4,
                           pad=2)
  x = jnp.linspace(-1, 1, 2 * 28 * 28).reshape(2, 28, 28, 1)
  params = net.init(jax.random.key(0), x)["params"]
  mean, logvar = net.apply({"params": params}, x, method="encode")
  assert mean.shape == logvar.shape == (2, 8, 8, 3)  # (28 + 4) / 4.
  assert net.apply({"params": params}, mean, method="decode").shape == x.shape
  a = config_lib.ConfigDict({"pad": 2, "channel_mult": (1, 2, 2), "latent_channels": 3})
  assert ae_lib.latent_shape(a, (28, 28, 1)) == (8, 8, 3)
  # A posterior sample differs from the mean; without an rng the mean is decoded.
  x_mean, _, _ = net.apply({"params": params}, x)
  x_sample, _, _ = net.apply({"params": params}, x, jax.random.key(1))
  assert not np.allclose(x_mean, x_sample)


def test_round_trip_is_the_decoded_posterior_mean(ae_dir):
  """The round trip `gen eval --metric=captions --autoencoder=RUN` reads real scenes through:
  the sampling params' decoded posterior mean, in batches padded to one compiled shape."""
  from gen.eval import captions as captions_eval
  from gen.eval import fd

  trip = captions_eval.load_autoencoder(ae_dir, batch=3)
  config, spec, _, state, step = runs.load_workdir(ae_dir)
  assert trip.step == step and trip.shape == tuple(spec.shape)
  images = np.random.default_rng(0).integers(0, 256, (5,) + tuple(spec.shape), np.uint8)
  ae, _ = ae_lib.parts(config, spec)
  x_hat = ae.apply({"params": state.sample_params["ae"]}, images / 127.5 - 1.0)[0]
  expected = fd.to_uint8((np.asarray(x_hat) + 1.0) / 2.0).astype(int)
  got = trip(images)
  assert got.dtype == np.uint8 and got.shape == images.shape
  assert np.abs(got.astype(int) - expected).max() <= 1  # Rounding of float noise only.
  assert np.abs(got.astype(int) - images).mean() > 5  # Three steps: far from the images.


def test_kl_in_closed_form():
  mean = jnp.array([[0.0, 1.0, -2.0, 0.5]])
  logvar = jnp.log(jnp.array([[1.0, 1.0, 0.25, 4.0]]))
  var = np.exp(np.asarray(logvar))
  want = 0.5 * np.sum(var + np.asarray(mean) ** 2 - 1.0 - np.log(var))
  np.testing.assert_allclose(ae_lib.kl_per_pixel(mean, logvar, 1), [want], rtol=1e-6)
  np.testing.assert_allclose(ae_lib.kl_per_pixel(mean, logvar, 8), [want / 8], rtol=1e-6)
  # Monte Carlo: E_q[log q(z) - log N(z; 0, 1)] with 400k draws.
  z = np.asarray(mean) + np.sqrt(var) * np.random.default_rng(0).standard_normal((400_000, 4))
  log_q = -0.5 * ((z - np.asarray(mean)) ** 2 / var + np.log(2 * math.pi * var))
  log_p = -0.5 * (z ** 2 + math.log(2 * math.pi))
  assert abs(np.mean(np.sum(log_q - log_p, 1)) - want) < 0.02
  assert float(ae_lib.kl_per_pixel(jnp.zeros((1, 3)), jnp.zeros((1, 3)), 1)[0]) == 0.0


def test_autoencoder_discriminator_joins_at_its_start_step(tmp_path):
  c = config_lib.load_file(os.path.join(os.path.dirname(__file__), "..", "configs", "diffusion",
                                        "autoencoder_mnist.py"))
  from conftest import TINY_AUTOENCODER
  config_lib.apply_overrides(c, {"data.name": "digits", **TINY_AUTOENCODER,
                                 "model.autoencoder.disc_weight": 0.5,
                                 "model.autoencoder.disc_start": 2})
  spec = DataSpec.images((8, 8, 1), 10, "scale")
  p = gen.diffusion.make(c, spec)
  batch = {"image": jnp.linspace(-1, 1, 8 * 64).reshape(8, 8, 8, 1),
           "label": jnp.zeros((8,), jnp.int32)}
  state = p.init(jax.random.key(0), batch)
  step = jax.jit(p.train_step)
  disc = lambda s: s.params["disc"]  # noqa: E731
  before = disc(state)
  for _ in range(2):  # Steps 0 and 1: before disc_start, the discriminator stays put.
    state, metrics = step(state, batch, jax.random.key(1))
  jax.tree.map(np.testing.assert_array_equal, before, disc(state))
  state, metrics = step(state, batch, jax.random.key(2))
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, disc(state))
  assert any(jax.tree.leaves(moved))
  assert {"d_loss", "g_loss", "rec_loss", "kl"} <= set(metrics)


@pytest.mark.parametrize("normalize", ["scalar", "channel"])
def test_normalization_makes_training_latents_unit_variance(ae_dir, normalize):
  c = tiny_latent(ae_dir, **{"latent.normalize": normalize})
  data = latent_lib.make_data(c)
  record = data.spec.extra["latent"]
  assert record["step"] == 3 and record["shape"] == [4, 4, 2]
  assert record["autoencoder"] == os.path.abspath(ae_dir)
  codec = latent_lib.codec(c, data.spec)
  first = np.stack([data.train_source[i]["image"] for i in range(64)])
  images = data.prepare_eval({"image": first, "label": np.zeros(64, np.int32)}, 0)["image"]
  z = np.asarray(codec.encode(jnp.asarray(images)), np.float64).reshape(-1, 2)
  if normalize == "scalar":
    assert abs(z.std() - 1.0) < 1e-4
    assert len(set(record["scale"])) == 1 and record["shift"] == [0.0, 0.0]
  else:
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)


def test_latent_sample_is_the_decoded_sampler_output(latent_run):
  config, spec, pipeline, state, _ = runs.load_workdir(latent_run)
  net, process, objective, cfg = diffusion.parts(config, spec,
                                                          latent_lib.codec(config, spec))
  assert cfg.shape == (4, 4, 2)
  params, rng = pipeline.sample_params(state), jax.random.key(3)
  sample = functools.partial(diffusion.sample, net, process, objective, cfg, params, rng, 6,
                             "heun", 3)
  full = jax.jit(lambda g: sample(guidance=g))(2.0)
  latents = jax.jit(lambda g: sample(guidance=g, decode=False))(2.0)
  assert latents.shape == (6, 4, 4, 2) and full.shape == (6, 8, 8, 1)
  decoded = jax.jit(lambda z: jnp.clip(cfg.codec.decode(z), -1.0, 1.0))(latents)
  np.testing.assert_allclose(full, decoded, rtol=0, atol=1e-6)
  assert float(jnp.max(jnp.abs(full - decoded))) <= 1e-6


def test_gen_sample_on_a_latent_run(latent_run, tmp_path, capsys):
  out = str(tmp_path / "s.png")
  assert cli.main(["sample", f"--workdir={latent_run}", "--num=4", f"--out={out}",
                   "--steps=2", "--guidance=1.5"]) == 0
  assert os.path.isfile(out)
  with open(os.path.join(latent_run, "data_spec.json")) as f:
    assert json.load(f)["extra"]["latent"]["shape"] == [4, 4, 2]


def test_missing_autoencoder_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
  workdir = tmp_path / "run"
  rc = cli.main(["train", "--config=configs/diffusion/latent_mnist.py",
                 f"--workdir={workdir}", f"--config.latent.autoencoder={tmp_path / 'none'}",
                 "--config.data.name=digits"])
  assert_one_line_error(rc, capsys.readouterr().err, "train", "latent.autoencoder=",
                        "no training run there")
  assert not workdir.exists()


def test_a_denoiser_is_not_an_autoencoder(latent_run, tmp_path, capsys):
  workdir = tmp_path / "run"
  rc = cli.main(["train", "--config=configs/diffusion/latent_mnist.py",
                 f"--workdir={workdir}", f"--config.latent.autoencoder={latent_run}",
                 "--config.data.name=digits"])
  assert_one_line_error(rc, capsys.readouterr().err, "train", "not an autoencoder")
  assert not workdir.exists()


def _resume(workdir, capsys, **overrides):
  capsys.readouterr()  # What training logged before.
  args = [f"--config.{k}={v}" for k, v in overrides.items()]
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  rc = cli.main(["train", "--config=configs/diffusion/latent_mnist.py", f"--workdir={workdir}",
                 "--config.data.name=digits", f"--config.latent.autoencoder="
                 f"{config['latent']['autoencoder']}", *args])
  return rc, capsys.readouterr().err


@pytest.mark.slow  # Four refused starts of a latent run (70 s on 2 cores).
def test_a_run_refuses_another_or_a_changed_autoencoder(ae_dir, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  c = tiny_latent(ae_dir, **{"train.num_steps": 1})
  train_lib.train(c, workdir, handle_signals=False)
  other = tiny_autoencoder(tmp_path / "other", **{"train.num_steps": 1})
  before = sorted(os.listdir(workdir))
  assert_one_line_error(*_resume(workdir, capsys, **{"latent.autoencoder": other}), "train",
                        "is another folder")
  # The recorded scale no longer matches what the autoencoder gives (it was changed).
  path = os.path.join(workdir, "data_spec.json")
  with open(path) as f:
    spec = json.load(f)
  spec["extra"]["latent"]["scale"] = [2 * s for s in spec["extra"]["latent"]["scale"]]
  with open(path, "w") as f:
    json.dump(spec, f)
  assert_one_line_error(*_resume(workdir, capsys), "train", "is not the one this run was "
                        "trained with", "scale")
  # Sampling checks the latent shape the run was trained on.
  spec["extra"]["latent"]["shape"] = [2, 2, 2]
  with open(path, "w") as f:
    json.dump(spec, f)
  rc = cli.main(["sample", f"--workdir={workdir}", "--num=2",
                 f"--out={tmp_path / 's.png'}"])
  assert_one_line_error(rc, capsys.readouterr().err, "sample", "makes (4, 4, 2) latents")
  assert sorted(os.listdir(workdir)) == before


def test_latent_config_errors(ae_dir):
  spec = latent_lib.make_data(tiny_latent(ae_dir)).spec
  with pytest.raises(config_lib.ConfigError, match="clip_denoised"):
    gen.diffusion.make(tiny_latent(ae_dir, **{"diffusion.clip_denoised": True}), spec)
  with pytest.raises(config_lib.ConfigError, match="no latent record"):
    gen.diffusion.make(tiny_latent(ae_dir), DataSpec.images((8, 8, 1), 10, "scale"))
  with pytest.raises(config_lib.ConfigError, match="latent.normalize"):
    latent_lib.make_data(tiny_latent(ae_dir, **{"latent.normalize": "zscore"}))
  with pytest.raises(config_lib.ConfigError, match="no checkpoint of step 7"):
    latent_lib.make_data(tiny_latent(ae_dir, **{"latent.autoencoder_step": 7}))


def test_latent_benchmark_runs_on_trained_workdirs(latent_run, ae_dir):
  import sys

  from conftest import ROOT
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import latent as latent_bench

  rows = latent_bench.main([f"--workdirs={latent_run},{latent_run}", "--steps=2", "--batch=2",
                            "--repeats=1", "--json"])
  assert [r["latent"] for r in rows] == [True, True]
  assert rows[0]["vs_first"] == 1.0 and rows[0]["images_per_s"] > 0
