"""gen.eval: Fréchet distance against scipy, precision/recall, FID Inception weights, likelihood
units, and `gen eval --metric=fd` ranking a trained GAN above its first step."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
import scipy.linalg
from conftest import TINY_GAN, config_path

from gen import cli
from gen.core import config as config_lib
from gen.core import train as train_lib
from gen.core.family import DataSpec
from gen.eval import frechet, likelihood


def _random_gaussian(rng, d):
  a = rng.normal(size=(d, d))
  return rng.normal(size=d), a @ a.T / d + 0.01 * np.eye(d)


@pytest.mark.parametrize("d", [1, 4, 32])
def test_frechet_distance_matches_scipy(d):
  rng = np.random.default_rng(d)
  (m1, s1), (m2, s2) = _random_gaussian(rng, d), _random_gaussian(rng, d)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
  assert frechet.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
  assert frechet.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(0)
  m1, m2 = rng.normal(size=8), rng.normal(size=8)
  v1, v2 = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  expected = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
  got = frechet.frechet_distance(m1, np.diag(v1), m2, np.diag(v2))
  assert got == pytest.approx(expected, rel=1e-12)
  # A singular covariance (fewer samples than dimensions) is fine: one zero variance.
  v1[0] = 0.0
  expected = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
  assert frechet.frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected)


def test_gaussian_stats_estimate_the_frechet_distance_of_known_gaussians():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(20000, 3))
  y = rng.normal(size=(20000, 3)) * 2.0 + 1.0
  fd = frechet.frechet_distance(*frechet.gaussian_stats(x), *frechet.gaussian_stats(y))
  assert fd == pytest.approx(3 * 1.0 + 3 * (1 + 4 - 2 * 2), rel=0.05)  # |dmu|^2 + sum (1-2)^2


def test_precision_recall():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(500, 4))
  p, r = frechet.precision_recall(real, real.copy())
  assert p == 1.0 and r == 1.0
  assert frechet.precision_recall(real, real + 100.0) == (0.0, 0.0)
  # Mode collapse: every sample near one real point is precise but recalls almost nothing.
  collapsed = real[:1] + 1e-3 * rng.normal(size=(500, 4))
  p, r = frechet.precision_recall(real, collapsed)
  assert p == 1.0 and r < 0.05


def test_likelihood_units_and_convention():
  image = DataSpec((28, 28, 1), 10, "binarize")
  metrics = {"nll": 81.3, "iwae_nll": 85.0, "iwae_bpd": 0.1564}
  extra = likelihood.units(metrics, image)
  assert extra == {"bpd": pytest.approx(81.3 / (784 * np.log(2)))}  # iwae_bpd is kept.
  assert "binarized" in likelihood.convention(metrics, image)
  assert likelihood.convention({"loss": 0.1, "x0_mse": 0.02}, image) is None  # Diffusion.
  tokens = DataSpec((256,), kind="tokens", fields={"tokens": ((257,), "int32")})
  extra = likelihood.units({"loss": 1.47, "nll_per_char": 1.47}, tokens)
  assert extra["bits_per_token"] == pytest.approx(1.47 / np.log(2))
  assert extra["bits_per_char"] == pytest.approx(1.47 / np.log(2))
  assert "per token" in likelihood.convention({"loss": 1.47}, tokens)


def test_inception_weights_round_trip(tmp_path):
  """Random weights -> pytorch-fid names and layouts -> .npz -> converter: the same params and
  the same features; every key is named and shaped as in the FID weights file."""
  from gen.eval import inception

  abstract = inception.abstract_variables()
  assert sum(x.size for x in jax.tree.leaves(abstract["params"])) == 21_785_568  # torchvision's
  rng = np.random.default_rng(0)  # Inception3 without its aux head and fc layer.
  variables = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), abstract)
  variables["batch_stats"] = jax.tree.map(lambda v: 1.0 + np.abs(v), variables["batch_stats"])
  state = inception.to_torch_names(variables)
  assert len(state) == 5 * inception.NUM_CONVS
  assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)  # OIHW.
  assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert state["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
  assert {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in state} == {
      "conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
  extra = {"fc.weight": np.zeros((1008, 2048)), "fc.bias": np.zeros(1008),
           "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros((), np.int64)}
  np.savez(tmp_path / "w.npz", **state, **extra)
  back = inception.load(str(tmp_path / "w.npz"))
  jax.tree.map(np.testing.assert_array_equal, back, variables)
  images = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  a = inception.features(variables, images, size=75)  # The smallest size the network takes.
  b = inception.features(back, images, size=75)
  assert a.shape == (2, inception.FEATURES) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="missing Mixed_5b.branch1x1.conv.weight"):
    inception.from_torch_names({k: v for k, v in state.items() if "Mixed_5b.branch1x1." not in k})
  with pytest.raises(ValueError, match="unexpected AuxLogits.fc.weight"):
    inception.from_torch_names({**state, "AuxLogits.fc.weight": np.zeros((1008, 768))})
  bad = {**state, "Conv2d_1a_3x3.conv.weight": np.zeros((32, 1, 3, 3))}
  with pytest.raises(ValueError, match="Conv2d_1a_3x3.conv.weight: shape"):
    inception.from_torch_names(bad)
  if importlib.util.find_spec("torch") is None:  # torch is optional: a clear error without it.
    with pytest.raises(ValueError, match="needs PyTorch"):
      inception.read_state_dict(str(tmp_path / "w.pth"))


def _load(name, **overrides):
  config = config_lib.load_file(name if "/" not in name else config_path(*name.split("/")))
  config_lib.apply_overrides(config, {
      "train.progress": False, "train.log_every": 0, "train.eval_every": 0,
      "train.sample_every": 0, "train.checkpoint_every": 0, **overrides})
  return config


def test_fd_of_a_run_from_the_cli(tmp_path, capsys, monkeypatch):
  """`gen eval --metric=fd` end to end at tiny sizes: a 2-step GAN and a 2-step classifier
  found in the cache; the statistics of the reference split are cached; the floor (real
  test images) is below the untrained GAN. The ranking of a trained GAN is the slow test below."""
  monkeypatch.setenv("GEN_CACHE_DIR", str(tmp_path / "cache"))
  clf_dir = tmp_path / "cache" / "classifiers" / "digits"
  clf = _load("gen.classifier.configs.digits", **{"train.num_steps": 2, "model.channels": (8,),
                                                   "model.features": 8})
  train_lib.train(clf, str(clf_dir), handle_signals=False)
  gan = _load("gan/digits.py", **{"train.num_steps": 2, "model.g_channels": (16, 8),
                                  "model.d_channels": (16,), "model.d_convs_per_stage": 1,
                                  "gan.standing_stats": 16})
  workdir = str(tmp_path / "gan")
  train_lib.train(gan, workdir, handle_signals=False)
  out = tmp_path / "fd.json"
  assert cli.main(["eval", f"--workdir={workdir}", "--metric=fd", "--num_samples=64",
                   f"--out={out}", "--batch_size=32"]) == 0
  result = json.loads(out.read_text())
  printed = capsys.readouterr()
  assert "from 64 samples" in printed.out and "only 64 samples" in printed.err
  assert result["metric"] == "FD (gen classifier features, digits)"
  assert result["num_samples"] == 64 and result["step"] == 2 and result["fd"] > 0
  assert os.path.isfile(clf_dir / "stats_train_scale.npz")
  assert cli.main(["eval", "--metric=fd", "--data=digits", "--real=test", "--num_samples=64",
                   f"--out={tmp_path / 'floor.json'}"]) == 0
  floor = json.loads((tmp_path / "floor.json").read_text())
  assert floor["num_samples"] == 64 and floor["fd"] < result["fd"]


@pytest.mark.slow
def test_fd_ranks_a_trained_gan_below_its_first_step(tmp_path, capsys, monkeypatch):
  """The GAN digits quickstart after 200 steps has a lower FD than after 1. Kept small for
  CI: 200 GAN steps, a narrower classifier trained 200 steps (placed in the cache, so
  `gen eval` finds it there), 500 samples (biased FDs, but both runs share the bias)."""
  monkeypatch.setenv("GEN_CACHE_DIR", str(tmp_path / "cache"))
  clf = _load("gen.classifier.configs.digits", **{"train.num_steps": 200, "model.channels": (16, 32)})
  train_lib.train(clf, str(tmp_path / "cache" / "classifiers" / "digits"), handle_signals=False)
  gan = _load("gan/digits.py", **{"train.num_steps": 200})
  workdir = str(tmp_path / "gan")
  train_lib.train(gan, workdir, stop_at_step=1, handle_signals=False)
  train_lib.train(gan, workdir, handle_signals=False)
  fds = {}
  for step in (1, 200):
    out = tmp_path / f"fd{step}.json"
    assert cli.main(["eval", f"--workdir={workdir}", "--metric=fd", "--num_samples=500",
                     f"--step={step}", f"--out={out}", "--batch_size=250"]) == 0
    fds[step] = json.loads(out.read_text())
    printed = capsys.readouterr()
    assert "from 500 samples" in printed.out and "only 500 samples" in printed.err
  assert fds[200]["fd"] < fds[1]["fd"]
  assert fds[200]["metric"] == "FD (gen classifier features, digits)"
  assert fds[200]["num_samples"] == 500 and fds[200]["step"] == 200
  assert os.path.isfile(tmp_path / "cache" / "classifiers" / "digits" / "stats_train_scale.npz")
  # The floor: real test images against the same reference.
  assert cli.main(["eval", "--metric=fd", "--data=digits", "--real=test", "--num_samples=500",
                   f"--out={tmp_path / 'floor.json'}"]) == 0
  floor = json.loads((tmp_path / "floor.json").read_text())
  assert floor["num_samples"] == 297 and floor["fd"] < fds[200]["fd"]


def test_fd_without_a_feature_classifier_trains_nothing_and_says_how(tmp_path, capsys,
                                                                    monkeypatch):
  monkeypatch.setenv("GEN_CACHE_DIR", str(tmp_path / "cache"))
  assert cli.main(["eval", "--metric=fd", "--data=digits", "--real=test"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "no feature classifier for digits" in err
  assert "gen train --config=gen.classifier.configs.digits" in err
  assert not (tmp_path / "cache").exists()  # Nothing trained, nothing written.
  # The command it prints names a config the package ships.
  assert config_lib.load("gen.classifier.configs.digits").family == "classifier"
  # A run without a feature map is refused by name.
  gan = _load("gan/digits.py", **{**TINY_GAN, "train.num_steps": 1})
  train_lib.train(gan, str(tmp_path / "gan"), handle_signals=False)
  assert cli.main(["eval", "--metric=fd", "--data=digits", "--real=test",
                   f"--fd_classifier={tmp_path / 'gan'}"]) == 2
  assert "has no feature map" in capsys.readouterr().err


def test_eval_flag_errors(capsys):
  assert cli.main(["eval", "--workdir=x", "--metric=is"]) == 2
  assert "--metric must be fd or fid" in capsys.readouterr().err
  assert cli.main(["eval", "--workdir=x", "--steps=3"]) == 2
  assert "unknown flag '--steps'" in capsys.readouterr().err
  assert cli.main(["eval", "--metric=fd"]) == 2
