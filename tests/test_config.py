"""Config files, overrides and their errors."""

import glob
import os

import pytest
from conftest import ROOT, config_path

from gen import cli
from gen.core import config as config_lib
from gen.core.config import ConfigError

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_loads_and_documents_itself(path):
  c = config_lib.load(path)
  assert c.family
  doc = config_lib._load_module(path).__doc__ or ""
  for field in ("Run:", "Hardware:", "Wall time:", "Result:"):
    assert field in doc, f"{path} docstring lacks '{field}'"
  for placeholder in ("MEASURED", "TODO"):
    assert placeholder not in doc, f"{path} docstring still has a placeholder"


def test_overrides_are_typed():
  c = config_lib.load(config_path("vae", "digits.py"), [
      "--config.optim.lr=3e-4", "--config.train.num_steps=7", "--config.train.progress=false",
      "--config.model.channels=(4, 8)", "--config.optim.ema_decay=0", "--config.data.name=mnist"])
  assert c.optim.lr == 3e-4 and c.train.num_steps == 7 and c.train.progress is False
  assert c.model.channels == (4, 8)
  assert isinstance(c.optim.ema_decay, float) and c.optim.ema_decay == 0.0
  assert c.data.name == "mnist"


def test_unknown_key_names_the_closest_one():
  with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*'optim\.lr'"):
    config_lib.load(config_path("vae", "digits.py"), ["--config.optim.lrr=1"])
  with pytest.raises(ConfigError, match=r"'train\.num_step'.*'train\.num_steps'"):
    config_lib.load(config_path("vae", "digits.py"), ["--config.train.num_step=1"])


@pytest.mark.parametrize("override, message", [
    ("--config.train.num_steps=1.5", "train.num_steps' expects int"),
    ("--config.optim.lr=fast", "optim.lr' expects float"),
    ("--config.train.progress=maybe", "train.progress' expects a bool"),
    ("--config.optim=3", "is a section"),
])
def test_wrong_type_is_an_error(override, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.load(config_path("vae", "digits.py"), [override])


def test_config_is_locked_after_load():
  c = config_lib.load(config_path("vae", "digits.py"))
  with pytest.raises(AttributeError):
    c.optim.not_a_key = 1


def test_file_argument_and_missing_file(tmp_path):
  p = tmp_path / "c.py"
  p.write_text("from gen.core.config import base_config\n"
               "def get_config(arg='a'):\n  c = base_config(); c.family = 'vae'\n"
               "  c.data.name = arg\n  return c\n")
  assert config_lib.load(f"{p}:mnist").data.name == "mnist"
  with pytest.raises(ConfigError, match="not found"):
    config_lib.load(str(tmp_path / "nope.py"))
  bad = tmp_path / "bad.py"
  bad.write_text("from gen.core.config import base_config\n"
                 "def get_config():\n  c = base_config(); c.family = 'nofamily'; return c\n")
  with pytest.raises(ConfigError, match="no module gen.nofamily"):
    config_lib.load(str(bad))


def test_json_round_trip(tmp_path):
  c = config_lib.load(config_path("vae", "digits.py"))
  config_lib.save_json(c, tmp_path / "config.json")
  back = config_lib.load_json(tmp_path / "config.json")
  assert back.to_dict() == c.to_dict()


@pytest.mark.parametrize("override, message", [
    ("--config.optim.learning_rate=1", "unknown config key 'optim.learning_rate'"),
    ("--config.model.likelihood=gaussian", "needs data.preprocess"),  # Checked by the family.
])
def test_cli_config_errors_exit_2_and_write_nothing(tmp_path, capsys, override, message):
  workdir = tmp_path / "run"
  rc = cli.main(["train", f"--config={config_path('vae', 'digits.py')}",
                 f"--workdir={workdir}", override])
  assert rc == 2
  assert message in capsys.readouterr().err
  assert not workdir.exists()


def test_cli_usage_errors(capsys):
  assert cli.main(["train", "--workdir=x"]) == 2
  assert "--config is required" in capsys.readouterr().err
  assert cli.main(["frobnicate"]) == 2
  assert cli.main(["sample", "--workdir=x", "positional"]) == 2


def test_config_by_module_name():
  """A config a package ships loads by its dotted module name, with or without `:ARG`."""
  c = config_lib.load("gen.classifier.configs.digits")
  assert c.family == "classifier" and c.data.name == "digits"
  with pytest.raises(ConfigError, match="not found: gen.classifier.configs.nope"):
    config_lib.load("gen.classifier.configs.nope")
