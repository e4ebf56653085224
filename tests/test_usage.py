"""Bad usage is one line on stderr and exit code 2, before anything is computed or written:
config files that fail, config values a family refuses, sampler and eval arguments."""

import os

import pytest
from conftest import (TINY_DIFFUSION, TINY_VAE, assert_one_line_error, config_path, tiny_lm,
                      tiny_vae)

from gen import cli
from gen.core import config as config_lib
from gen.core import runs
from gen.core import train as train_lib


def _one_line_usage_error(rc, capsys, command, *expected):
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err  # Nothing else printed either.
  return assert_one_line_error(rc, err, command, *expected)


def _vae_train(tmp_path, config, *overrides):
  workdir = tmp_path / "run"
  flags = [f"--config.{k}={v}" for k, v in TINY_VAE.items()] if "digits" in config else []
  rc = cli.main(["train", f"--config={config}", f"--workdir={workdir}", *flags, *overrides])
  return rc, workdir


@pytest.mark.parametrize("body, spec_suffix, expected", [
    ("def get_config():\n  return 1 / 0\n", "",
     "get_config() in {path} raised ZeroDivisionError: division by zero"),
    ("def get_config():\n  return None\n", ":wide",
     "get_config() in {path} takes no argument: drop ':wide' from --config"),
    ("def get_config(arg):\n  raise KeyError(arg)\n", ":wide",
     "get_config('wide') in {path} raised KeyError: 'wide'"),
    ("import no_such_module_here\n", "", "error while importing config file {path}"),
])
def test_a_config_file_that_fails_is_a_usage_error(tmp_path, capsys, body, spec_suffix, expected):
  path = tmp_path / "cfg.py"
  path.write_text(body)
  rc, workdir = _vae_train(tmp_path, f"{path}{spec_suffix}")
  _one_line_usage_error(rc, capsys, "train", expected.format(path=path))
  assert not workdir.exists()


@pytest.mark.parametrize("override, expected", [
    ("model.arch=bogus", "model.arch must be 'conv' or 'mlp', got 'bogus'"),
    ("optim.name=bogus", "optim.name must be adam, adamw or sgd"),
    ("optim.schedule=bogus", "optim.schedule must be"),
    ("data.preprocess=bogus", "data.preprocess must be one of"),
])
def test_a_value_the_family_refuses_is_a_usage_error(tmp_path, capsys, override, expected):
  rc, workdir = _vae_train(tmp_path, config_path("vae", "digits.py"), f"--config.{override}")
  err = _one_line_usage_error(rc, capsys, "train", expected)
  assert "ValueError" not in err and not workdir.exists()


def test_a_config_error_is_a_config_error_in_python_too():
  config = config_lib.load_file(config_path("vae", "digits.py"))
  config_lib.apply_overrides(config, {"model.arch": "bogus"})
  with pytest.raises(config_lib.ConfigError, match="model.arch"):
    runs.build(config, runs.open_data(config).spec)


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
  # The settings of test_diffusion.py's CLI run: compiled programs come from the cache.
  config = config_lib.load_file(config_path("diffusion", "digits.py"))
  config_lib.apply_overrides(config, {**TINY_DIFFUSION, "train.num_steps": 2,
                                      "train.checkpoint_every": 0})
  workdir = str(tmp_path_factory.mktemp("usage") / "diffusion")
  train_lib.train(config, workdir, handle_signals=False)
  return workdir


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("usage")
  text = base / "play.txt"
  text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 40)
  config = tiny_lm(**{"data.name": f"text:{text}", "train.num_steps": 2,
                      "train.checkpoint_every": 0})
  workdir = str(base / "lm")
  train_lib.train(config, workdir, handle_signals=False)
  return workdir


def _samples_written(workdir):
  return sorted(f for f in os.listdir(workdir) if f.startswith("samples_step"))


@pytest.mark.parametrize("flag, expected", [
    ("--num=-2", "--num must be a positive integer, got -2"),
    ("--num=0", "--num must be a positive integer, got 0"),  # Not silently 64.
    ("--ncol=-1", "--ncol must be >= 0"),
    ("--steps=2.5", "--steps must be a positive integer, got 2.5"),
    ("--steps=0", "--steps must be a positive integer, got 0"),
    ("--steps=-3", "--steps must be a positive integer, got -3"),
    ("--sampler=bogus", "unknown sampler 'bogus'"),
    ("--guidance=3", "need a class-conditional model"),
    ("--eta=0.5", "--eta applies to the ddim sampler(s)"),  # (digits samples with heun.)
    ("--out={missing}/grid.png", "the folder {missing} does not exist"),
    ("--top_k=3", "takes no argument(s) --top_k"),
])
def test_bad_sample_arguments_of_an_image_model(diffusion_run, tmp_path, capsys, flag,
                                                 expected):
  missing = str(tmp_path / "missing")
  rc = cli.main(["sample", f"--workdir={diffusion_run}", flag.format(missing=missing)])
  _one_line_usage_error(rc, capsys, "sample", expected.format(missing=missing))
  assert _samples_written(diffusion_run) == [] and not os.path.exists(missing)


@pytest.mark.parametrize("flag, expected", [
    ("--num=0", "--num must be a positive integer, got 0"),
    ("--num=-1", "--num must be a positive integer, got -1"),
    ("--max_new_tokens=-5", "--max_new_tokens must be >= 1"),
    ("--max_new_tokens=0", "--max_new_tokens must be >= 1"),
    ("--max_new_tokens=2.5", "--max_new_tokens must be an integer, got 2.5"),
    ("--temperature=-1", "--temperature must be >= 0.0 (0 is greedy), got -1"),
    ("--temperature=hot", "--temperature must be a number, got 'hot'"),
    ("--top_k=-1", "--top_k must be >= 0"),
    ("--top_k=1.5", "--top_k must be an integer"),
    ("--top_p=0", "--top_p must be in (0, 1.0]"),
    ("--top_p=2", "--top_p must be in (0, 1.0]"),
    ("--prompt_file={missing}/prompts.txt", "{missing}/prompts.txt: No such file or directory"),
    ("--out={missing}/s.txt", "the folder {missing} does not exist"),
])
def test_bad_sample_arguments_of_a_language_model(lm_run, tmp_path, capsys, flag, expected):
  missing = str(tmp_path / "missing")
  rc = cli.main(["sample", f"--workdir={lm_run}", flag.format(missing=missing)])
  _one_line_usage_error(rc, capsys, "sample", expected.format(missing=missing))
  assert _samples_written(lm_run) == [] and not os.path.exists(missing)


def test_good_sample_arguments_still_sample(lm_run, tmp_path, capsys):
  out = tmp_path / "s.txt"
  assert cli.main(["sample", f"--workdir={lm_run}", "--num=2", "--max_new_tokens=3",
                   "--temperature=0", "--top_k=0", "--top_p=1", f"--out={out}"]) == 0
  assert out.read_text().count("---------- sample ") == 2


@pytest.mark.parametrize("flag", ["--num_batches=-1", "--batch_size=-8"])
def test_bad_eval_arguments(diffusion_run, capsys, flag):
  rc = cli.main(["eval", f"--workdir={diffusion_run}", flag])
  _one_line_usage_error(rc, capsys, "eval", f"--{flag[2:].split('=')[0]} must be >= 0")
  assert not os.path.exists(os.path.join(diffusion_run, "eval.json"))


def test_not_a_workdir(tmp_path, capsys):
  (tmp_path / "folder").mkdir()
  for command in ("sample", "eval"):
    rc = cli.main([command, f"--workdir={tmp_path / 'folder'}"])
    _one_line_usage_error(rc, capsys, command, "is this a gen workdir?")


def test_an_empty_prompt_starts_from_the_start_token_or_is_an_error():
  """As the README says: `--prompt=` is one sample from the start tokens (a newline for a
  character model), and an error for a character vocabulary without a newline."""
  from gen.lm import steps as lm
  from gen.lm.data import tokenizers as tok_lib

  with_newline = tok_lib.CharTokenizer.build("ab\nc")
  num, kwargs = lm.sample_options(with_newline, 0, {"prompt": ""})
  assert num == 1 and kwargs["prompt"].tolist() == [with_newline.start_ids]
  assert lm.sample_options(with_newline, 0, {}) == (4, {})  # No prompt: 4 from the start.
  with pytest.raises(ValueError, match="empty prompt: the char tokenizer has no start token"):
    lm.sample_options(tok_lib.CharTokenizer.build("abc"), 0, {"prompt": ""})


def test_no_checkpoint_is_one_line_every_time(tmp_path):
  """`gen sample` / `gen eval` on a run whose checkpoints are gone print one line and exit 1;
  nothing that orbax opened outlives the interpreter (no background-thread traceback)."""
  import shutil
  import subprocess
  import sys

  workdir = tmp_path / "run"
  train_lib.train(tiny_vae(**{"train.num_steps": 1, "train.checkpoint_every": 0}), str(workdir),
                  handle_signals=False)
  shutil.rmtree(workdir / "checkpoints")
  for command in ("sample", "eval"):
    out = subprocess.run([sys.executable, "-m", "gen.cli", command, f"--workdir={workdir}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"gen {command}: error: no checkpoint in {workdir / 'checkpoints'}: train first"]


def test_help_of_each_command(diffusion_run, capsys):
  for command in ("train", "sample", "eval", "import", "export"):
    assert cli.main([command, "--help"]) == 0
    assert capsys.readouterr().out.lstrip().startswith(f"gen {command} ")
  assert cli.main(["sample", f"--workdir={diffusion_run}", "--help"]) == 0
  out = capsys.readouterr().out
  assert "--sampler=None" in out and "--guidance=None" in out and "--eta=0.0" in out
