"""PixelCNN: causality, exact normalization, and the fast sampler against the naive one."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen.core import config as config_lib
from gen.core.config import ConfigError
from gen.core.family import DataSpec
from gen.nn import distributions as dist
from gen.pixelcnn import make
from gen.pixelcnn import steps as pixelcnn
from gen.pixelcnn.models import GatedPixelCNN


def _config(**overrides):
  c = config_lib.load_file(__import__("conftest").config_path("pixelcnn", "digits.py"))
  config_lib.apply_overrides(c, {"model.features": 8, "model.num_layers": 2,
                                 "model.input_kernel": 3, **overrides})
  return c


def _bound(config, spec):
  """The network and `fn(model, settings, ...)` bound to them, as `make` binds them."""
  model, s = pixelcnn.parts(config, spec), pixelcnn.PixelCNNSettings.of(config, spec)
  return model, lambda fn: functools.partial(fn, model, s)


def _random_params(model, x, labels=None, seed=0):
  """Init, then randomize every leaf (biases too) so no dependence hides behind a zero."""
  params = model.init(jax.random.key(seed), x, labels)["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree,
                            [0.5 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


@pytest.mark.parametrize("num_layers", [0, 1, 3])
@pytest.mark.parametrize("input_kernel", [3, 5])
def test_outputs_depend_only_on_earlier_pixels(num_layers, input_kernel):
  h, w = 5, 6
  model = GatedPixelCNN(features=4, num_layers=num_layers, out_channels=2,
                        input_kernel=input_kernel)
  x = jax.random.normal(jax.random.key(0), (1, h, w, 2))
  params = _random_params(model, x)
  jac = jax.jacrev(lambda x: model.apply({"params": params}, x))(x)[0]  # [h, w, P, 1, h, w, C]
  dep = np.abs(np.asarray(jac)).sum(axis=(2, 3, 6)) > 0  # [h, w, h, w]: output i <- input j
  for r, c in itertools.product(range(h), range(w)):
    i = r * w + c
    after = dep[r, c].reshape(-1)[i:]  # Inputs at or after pixel i in raster order.
    assert not after.any(), f"output ({r},{c}) depends on a later or the same pixel"
    if c > 0:
      assert dep[r, c, r, c - 1], f"output ({r},{c}) misses its left neighbour"
    if r > 0:
      assert dep[r, c, r - 1, c], f"output ({r},{c}) misses the pixel above"
    if r > 0 and c < w - 1 and num_layers >= 1:
      # The original PixelCNN's blind spot: up and to the right.
      assert dep[r, c, r - 1, c + 1], f"output ({r},{c}) has a blind spot at ({r - 1},{c + 1})"


def test_channels_are_autoregressive_within_a_pixel():
  """With the mixture head, channel c's distribution sees only channels < c of its pixel."""
  model = GatedPixelCNN(features=4, num_layers=2, out_channels=dist.mixture_num_params(3, 2))
  x = jax.random.uniform(jax.random.key(0), (1, 4, 4, 3), minval=-1, maxval=1)
  params = _random_params(model, x)

  def channel_means(x):  # Mixture means after the channel coefficients: [1, H, W, K, C].
    out = model.apply({"params": params}, x)
    _, means, _, coeffs = dist._split_mixture(out, 3, 2)
    return dist._conditional_means(means, coeffs, x)

  jac = np.abs(np.asarray(jax.jacrev(channel_means)(x)[0])).sum(axis=2)  # [H, W, C, 1, H, W, C]
  for r, c, ch in itertools.product(range(4), range(4), range(3)):
    d = jac[r, c, ch, 0]  # [H, W, C]
    i = r * 4 + c
    flat = d.reshape(16, 3)
    assert not flat[i + 1:].any(), "depends on a later pixel"
    assert not flat[i, ch:].any(), f"channel {ch} depends on channel >= {ch} of its own pixel"
    if ch > 0:
      assert flat[i, :ch].all(), f"channel {ch} ignores earlier channels of its pixel"


@pytest.mark.parametrize("conditional", [False, True])
def test_likelihood_sums_to_one_over_the_2x2_binary_world(conditional):
  config = _config(**{"model.conditional": conditional})
  model, bind = _bound(config, DataSpec((2, 2, 1), 3, "binarize"))
  world = jnp.array(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 2, 2, 1)
  labels = jnp.zeros(16, jnp.int32) if conditional else None
  params = _random_params(model, world, labels)
  nll = jax.jit(bind(pixelcnn.nll))
  for label in range(3 if conditional else 1):
    lab = jnp.full(16, label, jnp.int32) if conditional else None
    total = jnp.exp(-nll(params, world, lab)).sum()
    assert np.isclose(float(total), 1.0, atol=1e-5), total


def test_mixture_likelihood_sums_to_one_over_a_1x2_8bit_world():
  config = _config(**{"model.head": "logistic_mixture", "data.preprocess": "scale",
                      "model.num_mix": 3})
  model, bind = _bound(config, DataSpec((1, 2, 1), 10, "scale"))
  v = jnp.arange(256) / 127.5 - 1.0
  world = jnp.stack(jnp.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 1, 2, 1)  # 65,536 images.
  params = _random_params(model, world[:1])
  total = jnp.exp(-jax.jit(bind(pixelcnn.nll))(params, world, None)).sum()
  assert np.isclose(float(total), 1.0, atol=1e-3), total


def test_mixture_probabilities_sum_to_one_over_all_values():
  p = jax.random.normal(jax.random.key(0), (dist.mixture_num_params(1, 4),))
  x = (jnp.arange(256) / 127.5 - 1.0)[:, None]
  assert np.isclose(float(jnp.exp(dist.mixture_log_prob(p, x, 4)).sum()), 1.0, atol=1e-4)
  p3 = jax.random.normal(jax.random.key(1), (dist.mixture_num_params(3, 2),))
  v = jnp.arange(4) / 1.5 - 1.0
  rgb = jnp.stack(jnp.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)
  p3 = jnp.broadcast_to(p3, (len(rgb),) + p3.shape)
  total = jnp.exp(dist.mixture_log_prob(p3, rgb, 2, num_bins=4)).sum()
  assert np.isclose(float(total), 1.0, atol=1e-5)


@pytest.mark.parametrize("head, shape, conditional", [("bernoulli", (5, 4, 1), False),
                                                      ("bernoulli", (4, 4, 1), True),
                                                      ("logistic_mixture", (3, 4, 3), False)])
def test_fast_sampler_matches_naive_exactly(head, shape, conditional):
  pre = "binarize" if head == "bernoulli" else "scale"
  config = _config(**{"model.head": head, "data.preprocess": pre, "model.conditional": conditional})
  spec = DataSpec(shape, 4, pre)
  pipe = make(config, spec)
  model, bind = _bound(config, spec)
  x0 = jnp.zeros((1,) + shape)
  params = _random_params(model, x0,
                          jnp.zeros(1, jnp.int32) if conditional else None)
  fast = jax.jit(lambda p, r: pipe.sample(p, r, 6, sampler="fast"))(params, jax.random.key(3))
  naive = jax.jit(lambda p, r: pipe.sample(p, r, 6, sampler="naive"))(params, jax.random.key(3))
  assert fast.shape == (6,) + shape
  np.testing.assert_array_equal(fast, naive)
  assert len(np.unique(np.asarray(fast))) > 1  # Not a constant image.
  # Completing the bottom half leaves the given top half alone and agrees too.
  top = fast.at[:, 2:].set(0.0)
  labels = jnp.zeros(6, jnp.int32) if conditional else None
  a = jax.jit(bind(pixelcnn.sample_fast), static_argnums=4)(
      params, jax.random.key(4), top, labels, 2)
  b = jax.jit(bind(pixelcnn.sample_naive), static_argnums=4)(
      params, jax.random.key(4), top, labels, 2)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[:, :2], fast[:, :2])


def test_train_step_and_errors():
  config = _config()
  pipe = make(config, DataSpec((8, 8, 1), 10, "binarize"))
  batch = {"image": jnp.ones((2, 8, 8, 1)), "label": jnp.zeros(2, jnp.int32)}
  state = pipe.init(jax.random.key(0), batch)
  state, metrics = jax.jit(pipe.train_step)(state, batch, jax.random.key(1))
  assert int(state.step) == 1 and np.isfinite(metrics["loss"])
  assert np.isclose(float(metrics["bpd"]), float(metrics["loss"]) / np.log(2), rtol=1e-5)
  pics = jax.jit(pipe.visualize)(state, batch, jax.random.key(2))
  assert pics["completions"].shape == (2, 5, 8, 8, 1)  # Original, top half, three completions.
  with pytest.raises(ConfigError, match="needs data.preprocess"):
    make(config, DataSpec((8, 8, 1), 10, "scale"))
  with pytest.raises(ValueError, match="sampler must be"):
    pipe.sample(state.params, jax.random.key(0), 2, sampler="fastest")
