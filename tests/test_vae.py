"""The VAE family: shapes, bounds and likelihood options."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_vae

from gen.core.config import ConfigError
from gen.core.data import ImageData
from gen.core.family import DataSpec
from gen.vae import make
from gen.vae import steps as vae


def _setup(**overrides):
  config = tiny_vae(**overrides)
  data = ImageData(config)
  spec = DataSpec(data.shape, data.num_classes, config.data.preprocess)
  pipe = make(config, spec)
  batch = next(data.eval_batches(1))
  state = pipe.init(jax.random.key(0), batch)
  return config, pipe, state, batch, vae.parts(config, spec)


def test_shapes_and_dtypes():
  _, pipe, state, batch, _ = _setup()
  new_state, metrics = jax.jit(pipe.train_step)(state, batch, jax.random.key(1))
  chex.assert_trees_all_equal_shapes_and_dtypes(state.params, new_state.params)
  assert int(new_state.step) == 1
  for k in ("loss", "nelbo", "kl", "bpd", "grad_norm"):
    chex.assert_shape(metrics[k], ())
    assert np.isfinite(metrics[k]), k
  ev = jax.jit(pipe.eval_step)(state, batch, jax.random.key(2))
  for k in ("nelbo", "kl", "nelbo_bpd", "iwae_nll", "iwae_bpd"):
    chex.assert_shape(ev[k], (batch["image"].shape[0],))
  x = jax.jit(pipe.sample, static_argnums=2)(state.params, jax.random.key(3), 5)
  chex.assert_shape(x, (5, 8, 8, 1))
  assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # Bernoulli means.
  pics = jax.jit(pipe.visualize)(state, batch, jax.random.key(4))
  assert pics["reconstructions"].shape == (2, 8, 8, 8, 1)
  assert pics["interpolations"].shape == (8, 12, 8, 8, 1)


def test_iwae_bound_does_not_depend_on_chunking():
  _, _, state, batch, model = _setup()
  iwae = functools.partial(vae.iwae_nll, model)
  x, b = batch["image"], batch["image"].shape[0]
  iwae = jax.jit(iwae, static_argnums=(3, 4))
  whole = iwae(state.params, x, jax.random.key(5), 6, 6 * b)
  ones = iwae(state.params, x, jax.random.key(5), 6, b)
  uneven = iwae(state.params, x, jax.random.key(5), 6, 4 * b)  # 4 + 2 (masked 2).
  np.testing.assert_allclose(whole, ones, rtol=1e-5)
  np.testing.assert_allclose(whole, uneven, rtol=1e-5)


def test_elbo_is_below_the_iwae_bound_and_iwae_tightens_with_k():
  config, pipe, state, batch, model = _setup()
  # A few steps so the posterior is not the prior (where all bounds coincide).
  step = jax.jit(pipe.train_step)
  for i in range(5):
    state, _ = step(state, batch, jax.random.key(10 + i))
  x, params = batch["image"], state.params
  iwae = jax.jit(functools.partial(vae.iwae_nll, model), static_argnums=(3, 4))
  recon, kl = jax.jit(jax.vmap(lambda r: vae.elbo_terms(model, params, x, r)))(
      jax.random.split(jax.random.key(6), 256))
  nelbo = float(jnp.mean(kl - recon))  # Averaged over 256 posterior draws: E[-ELBO].
  nll = {k: float(jnp.mean(iwae(params, x, jax.random.key(7), k, config.eval.iwae_batch)))
         for k in (1, 16, 256)}
  assert abs(nll[1] - nelbo) < 0.05 * abs(nelbo)  # k = 1 is the ELBO, sampled.
  assert nll[256] < nll[16] < nelbo  # -log p(x) <= IWAE_k bound <= -ELBO.


@pytest.mark.parametrize("likelihood, preprocess", [("discretized_logistic", "scale"),
                                                    ("gaussian", "dequantize")])
def test_8bit_likelihoods_train(likelihood, preprocess):
  _, pipe, state, batch, _ = _setup(**{"model.likelihood": likelihood,
                                         "data.preprocess": preprocess})
  state, metrics = jax.jit(pipe.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(metrics["loss"])
  ev = jax.jit(pipe.eval_step)(state, batch, jax.random.key(2))
  # Bits/dim of 8-bit data under a near-untrained model: positive, below ~16.
  assert 0.0 < float(jnp.mean(ev["nelbo_bpd"])) < 16.0
  x = jax.jit(pipe.sample, static_argnums=2)(state.params, jax.random.key(3), 3)
  assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_likelihood_must_match_preprocessing():
  config = tiny_vae(**{"model.likelihood": "discretized_logistic"})
  with pytest.raises(ConfigError, match="needs data.preprocess in \\('scale',\\)"):
    make(config, DataSpec((8, 8, 1), 10, "binarize"))
  config = tiny_vae(**{"model.channels": (4, 8, 16, 32)})
  pipe = make(config, DataSpec((8, 8, 1), 10, "binarize"))
  with pytest.raises(ValueError, match="divisible by 2\\*\\*len\\(model.channels\\)"):
    pipe.init(jax.random.key(0), {"image": jnp.zeros((1, 8, 8, 1))})
