"""Compiler options reach the programs, and only on the backend they name."""

import jax
import jax.numpy as jnp
import pytest

from gen.core import xla


def test_for_backend_keeps_only_the_compiling_backends_options():
  opts = {"xla_cpu_a": "1", "xla_gpu_b": "2", "xla_tpu_c": "3", "xla_llvm_d": "4"}
  assert xla.for_backend(opts, "cpu") == {"xla_cpu_a": "1", "xla_llvm_d": "4"}
  assert xla.for_backend(opts, "cuda") == {"xla_gpu_b": "2", "xla_llvm_d": "4"}
  assert xla.for_backend({"xla_cpu_a": "1"}, "gpu") is None
  assert xla.for_backend({}, "cpu") is None and xla.for_backend(None, "cpu") is None


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")
def test_convnet_options_move_convolutions_out_of_ynnpack():
  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  args = jnp.ones((64, 8, 8, 32)), jnp.ones((3, 3, 32, 32))

  def library_convolutions(fn):
    hlo = fn.lower(*args).compile().as_text()
    fused = [line for line in hlo.splitlines() if "fusion(" in line and "conv" in line]
    return [line for line in fused if "ynn_fusion" in line]

  assert library_convolutions(jax.jit(conv)), "the default no longer sends convs to YNNPACK"
  assert not library_convolutions(xla.jit(conv, xla.CONVNET_CPU))


@pytest.mark.parametrize("config,overrides,expected", [
    ("diffusion/digits", [], xla.CONVNET_CPU),
    ("diffusion/digits", ["--config.model.arch=dit"], {}),
    ("vae/digits", [], {}),
    ("gan/digits", [], xla.CONVNET_CPU),
    ("pixelcnn/digits", [], xla.CONVNET_CPU),
    ("gen.classifier.configs.digits", [], xla.CONVNET_CPU),
    ("lm/shakespeare_char_cpu", [], {}),
])
def test_each_family_asks_for_its_options(config, overrides, expected):
  from gen.core import config as config_lib
  from gen.core.family import DataSpec
  from gen.core.runs import build
  c = config_lib.load(config if config.startswith("gen.") else f"configs/{config}.py", overrides)
  if c.family == "lm":
    from gen.lm.data import token_spec

    spec = token_spec(c.data.seq_len, vocab_size=65)
  else:
    spec = DataSpec((8, 8, 1), 10, c.data.preprocess)
  assert dict(build(c, spec).compiler_options) == dict(expected)
