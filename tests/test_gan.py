"""The GAN family: one step per loss/regularizer, R1, EMA, D/G isolation, sampling, configs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import config_path

from gen.core import config as config_lib
from gen.core.config import ConfigError
from gen.core.data import ImageData
from gen.core.family import DataSpec
from gen.gan import augment as aug
from gen.gan import losses, make
from gen.gan import steps as gp

# Shrinks any GAN config to something that compiles and steps in seconds.
TINY_GAN = {
    "model.latent_dim": 8, "model.g_channels": (16, 8), "model.d_channels": (16,),
    "model.d_convs_per_stage": 1, "gan.standing_stats": 16, "data.batch_size": 8,
    "data.eval_batch_size": 16, "train.num_steps": 4, "train.log_every": 1,
    "train.eval_every": 0, "train.eval_batches": 1, "train.sample_every": 0,
    "train.num_samples": 4, "train.checkpoint_every": 2, "train.progress": False,
}
TRAIN_METRICS = ("loss", "loss_d", "loss_g", "d_real", "d_fake", "d_acc_real", "d_acc_fake", "r1",
                 "d_grad_norm", "g_grad_norm")


def tiny_gan(spec="gan/digits.py", **overrides):
  c = config_lib.load_file(config_path(*spec.split("/")))
  config_lib.apply_overrides(c, {**TINY_GAN, **overrides})
  config_lib.validate(c)
  return c


def _setup(**overrides):
  config = tiny_gan(**overrides)
  data = ImageData(config)
  spec = DataSpec(data.shape, data.num_classes, config.data.preprocess)
  pipe = make(config, spec)
  batch = next(data.eval_batches(1, batch_size=8))
  state = jax.jit(pipe.init)(jax.random.key(0), batch)
  return config, pipe, state, batch, gp.parts(config, spec)


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _same(a, b):
  chex.assert_trees_all_equal(a, b)  # Exactly: the other network's step must not touch it.


def _check_step(config, state, new, metrics):
  """One D + G step: shapes kept, metrics finite, both networks moved, EMA updated."""
  assert int(new.step) == 1
  chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
  for k in TRAIN_METRICS:
    chex.assert_shape(metrics[k], ())
    assert np.isfinite(metrics[k]), k
  assert 0.0 <= float(metrics["d_acc_real"]) <= 1.0 and 0.0 <= float(metrics["d_acc_fake"]) <= 1.0
  assert float(metrics["r1"]) > 0.0  # Monitored whether or not the penalty is on.
  assert _changed(state.g.params, new.g.params) and _changed(state.d.params, new.d.params)
  if config.model.spectral_norm:
    assert _changed(state.d_stats, new.d_stats)  # The power iteration advanced.
  # EMA: the core's warm-up decay at step 0 is min(ema_decay, 1 / 10).
  decay = min(config.optim.ema_decay, 0.1)
  expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.g.ema_params,
                          new.g.params)
  chex.assert_trees_all_close(new.g.ema_params, expected, rtol=1e-5, atol=1e-6)
  assert new.sample_params is new.g.ema_params


# One step for each loss x R1 combination; other options ride along to be exercised too.
# The fourth, non-saturating + R1, is `test_d_and_g_updates_do_not_leak` (below), which runs
# train_step's two halves separately to look between them.
COMBOS = {
    "nonsaturating": {"gan.loss": "nonsaturating", "gan.r1_gamma": 0.0},
    "hinge-conditional": {"gan.loss": "hinge", "gan.r1_gamma": 0.0, "model.conditional": True},
    "hinge-r1-lazy": {"gan.loss": "hinge", "gan.r1_gamma": 10.0, "gan.r1_every": 2},
}


@pytest.mark.parametrize("name", list(COMBOS))
def test_one_train_step(name):
  config, pipe, state, batch, _ = _setup(**COMBOS[name])
  new, metrics = jax.jit(pipe.train_step)(state, batch, jax.random.key(1))
  _check_step(config, state, new, metrics)


def test_d_and_g_updates_do_not_leak():
  """Non-saturating loss + R1 (every step) + spectral norm + DiffAugment, half by half."""
  config, _, state, batch, (gen, disc, s) = _setup(**{
      "gan.loss": "nonsaturating", "gan.r1_gamma": 1.0, "gan.r1_every": 1,
      "model.spectral_norm": True, "gan.augment": "color,translation,cutout"})

  @jax.jit
  def probe(state, rng):
    k_d, k_g = jax.random.split(rng)  # As train_step splits it.
    after_d, d_metrics = gp.d_step(gen, disc, s, state, batch, k_d)
    after_g, g_metrics = gp.g_step(gen, disc, s, after_d, batch["image"].shape[0], k_g)
    # The D loss sees generated images as constants: zero gradient w.r.t. G's params.
    g_grads = jax.grad(lambda g_params: gp.d_loss(gen, disc, s, state.d.params, state.d_stats,
                                                  g_params, batch, k_d)[0])(state.g.params)
    new = after_g.replace(step=after_g.step + 1)
    # R1's parameter gradient (forward-over-reverse) against plain reverse-over-reverse.
    k = jax.random.key(5)
    g = jax.grad(lambda v: jnp.sum(gp.d_apply(disc, state.d.params, state.d_stats,
                                              gp.augment(s, v, k), batch["label"])[0]))(
        batch["image"])
    r1_fast = gp.r1_param_grad(disc, s, state.d.params, state.d_stats, batch, k, g)
    r1_slow = jax.grad(lambda p: jnp.mean(gp.r1_sq(disc, s, p, state.d_stats, batch, k)))(
        state.d.params)
    metrics = {"loss": d_metrics["loss_d"], **d_metrics, **g_metrics}
    return after_d, new, metrics, g_grads, (r1_fast, r1_slow)

  after_d, new, metrics, g_grads, (r1_fast, r1_slow) = probe(state, jax.random.key(1))
  chex.assert_trees_all_close(r1_fast, r1_slow, rtol=1e-4, atol=1e-7)
  _check_step(config, state, new, metrics)
  _same(state.g, after_d.g)  # D's update leaves G's params, EMA and optimizer exactly.
  _same(after_d.d, new.d)  # G's update leaves D's params, optimizer and SN vectors.
  _same(after_d.d_stats, new.d_stats)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_grads))


def test_r1_matches_closed_form_on_a_linear_discriminator():
  x = jax.random.normal(jax.random.key(0), (5, 4, 4, 2))
  w = jax.random.normal(jax.random.key(1), (32,))
  linear = lambda v: v.reshape(v.shape[0], -1) @ w  # D(x) = w . x: grad_x D = w everywhere.
  sq = losses.grad_sq_norm(linear, x)
  np.testing.assert_allclose(sq, np.full(5, float(w @ w)), rtol=1e-5)
  gamma = 10.0
  np.testing.assert_allclose(losses.r1_penalty(linear, x, gamma), gamma / 2 * float(w @ w),
                             rtol=1e-5)
  # Quadratic D(x) = 0.5 ||x||^2 has grad x: R1 = gamma / 2 * mean ||x||^2.
  quad = lambda v: 0.5 * jnp.sum(jnp.square(v).reshape(v.shape[0], -1), -1)
  np.testing.assert_allclose(losses.r1_penalty(quad, x, gamma),
                             gamma / 2 * float(jnp.mean(jnp.sum(x ** 2, (1, 2, 3)))), rtol=1e-5)


def test_losses_closed_form():
  logits = jnp.array([-2.0, 0.0, 3.0])
  np.testing.assert_allclose(losses.d_loss_real(logits, "hinge"), [3.0, 1.0, 0.0])
  np.testing.assert_allclose(losses.d_loss_fake(logits, "hinge"), [0.0, 1.0, 4.0])
  np.testing.assert_allclose(losses.g_loss(logits, "hinge"), [2.0, 0.0, -3.0])
  np.testing.assert_allclose(losses.d_loss_real(logits, "nonsaturating"),
                             np.log1p(np.exp(-np.array([-2.0, 0.0, 3.0]))), rtol=1e-6)
  np.testing.assert_allclose(losses.g_loss(logits, "nonsaturating"),
                             losses.d_loss_real(logits, "nonsaturating"))


def test_sampling_and_eval():
  """Truncation, interpolation, class-conditional samples, pictures and eval, one compile."""
  _, pipe, state, batch, (gen, _, s) = _setup(**{"model.conditional": True})
  # At init every class has the same batch-norm scale and offset: perturb the weights so
  # that labels matter.
  leaves, tree = jax.tree.flatten(state.g.ema_params)
  keys = jax.random.split(jax.random.key(9), len(leaves))
  noisy = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, (p.size,)).reshape(p.shape)
                                    for p, k in zip(leaves, keys)])
  state = state.replace(g=state.g.replace(ema_params=noisy))

  @jax.jit
  def probe(state):
    params = state.sample_params
    z = gp.latents(s, jax.random.key(2), 6)
    y = jnp.array([3, 3, 3, 4, 4, 4], jnp.int32)
    return {"trunc": pipe.sample(params, jax.random.key(0), 5, truncation=0.5),
            "interp": pipe.sample(params, jax.random.key(0), 12, interpolate=True, steps=4,
                                  label=7),
            "one_class": pipe.sample(params, jax.random.key(0), 3, label=2),
            "z": gp.latents(s, jax.random.key(1), 100, 0.5),
            "two": gp.generate(gen, s, params, z[:2], y[:2]),
            "six": gp.generate(gen, s, params, jnp.concatenate([z[:3], z[:3]]), y),
            "pics": pipe.visualize(state, batch, jax.random.key(3)),
            "eval": pipe.eval_step(state, batch, jax.random.key(4))}

  out = probe(state)
  x = out["trunc"]
  chex.assert_shape(x, (5, 8, 8, 1))
  assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
  assert float(jnp.abs(out["z"]).max()) <= 0.5  # Truncated latents.
  chex.assert_shape(out["interp"], (3, 4, 8, 8, 1))  # 3 paths of 4 points, one per row.
  chex.assert_shape(out["one_class"], (3, 8, 8, 1))
  # Standing batch-norm statistics: a sample does not depend on what it is drawn with.
  np.testing.assert_allclose(out["two"], out["six"][:2], atol=1e-5)
  # The same latents with another class give other images.
  assert float(jnp.abs(out["six"][:3] - out["six"][3:]).max()) > 1e-3
  pics = out["pics"]
  assert set(pics) == {"interpolations", "classes"}
  chex.assert_shape(pics["interpolations"], (8, 10, 8, 8, 1))  # 8 paths of 10 points.
  chex.assert_shape(pics["classes"], (10, 8, 8, 8, 1))  # 10 classes x 8 latents.
  for k in ("d_real", "d_fake", "d_acc_real", "d_acc_fake", "d_loss_real", "d_loss_fake"):
    chex.assert_shape(out["eval"][k], (batch["image"].shape[0],))  # Per-example values.
  with pytest.raises(ValueError, match="must be in \\[0, 10\\)"):
    pipe.sample(state.sample_params, jax.random.key(0), 2, label=10)
  uncond = make(tiny_gan(), DataSpec((8, 8, 1), 10, "scale"))
  with pytest.raises(ValueError, match="class-conditional"):
    uncond.sample(state.sample_params, jax.random.key(0), 2, label=1)


def test_fast_transposed_conv_equals_flax():
  import flax.linen as nn

  from gen.gan.models import ConvTranspose2x

  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  fast = ConvTranspose2x(4, use_bias=True)
  variables = fast.init(jax.random.key(1), x)
  variables["params"]["bias"] = jnp.arange(4.0)
  ref = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding="SAME")
  np.testing.assert_allclose(fast.apply(variables, x), ref.apply(variables, x), atol=1e-5)


def test_diff_augment():
  x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 3), minval=-1, maxval=1)
  policy = aug.parse_policy("color, translation,cutout")
  assert policy == ("color", "translation", "cutout")

  @jax.jit
  def probe(x):
    grad = jax.grad(lambda v: jnp.sum(aug.diff_augment(v, jax.random.key(4), policy) ** 2))(x)
    return (aug.diff_augment(x, jax.random.key(1), ()),
            aug.diff_augment(x, jax.random.key(1), policy),
            aug.translation(x, jax.random.key(2)), aug.cutout(x, jax.random.key(3)), grad)

  same, y, t, c, g = jax.device_get(probe(x))
  np.testing.assert_array_equal(same, x)
  chex.assert_shape(y, x.shape)
  # Translation moves pixels (zero-filled): every output value is an input value or 0.
  for i in range(6):
    assert np.isin(t[i], np.append(np.asarray(x[i]), 0.0)).all()
  assert ((c == 0).all(-1).sum((1, 2)) > 0).all()  # Each image lost a patch.
  assert float(np.abs(g).sum()) > 0  # Differentiable: G learns through it.
  with pytest.raises(ValueError, match="unknown augmentation"):
    aug.parse_policy("color,rotate")


def test_config_errors():
  spec = DataSpec((8, 8, 1), 10, "scale")
  with pytest.raises(ConfigError, match="gan.loss must be one of"):
    make(tiny_gan(**{"gan.loss": "wasserstein"}), spec)
  with pytest.raises(ConfigError, match="data.preprocess must be 'scale' or 'dequantize'"):
    make(tiny_gan(), DataSpec((8, 8, 1), 10, "binarize"))
  with pytest.raises(ConfigError, match="model.conditional=True needs a labelled dataset"):
    make(tiny_gan(**{"model.conditional": True}), DataSpec((8, 8, 1), 0, "scale"))
  with pytest.raises(ConfigError,
                     match="must be divisible by 2\\*\\*4 = 16: the generator upsamples"):
    make(tiny_gan(**{"model.g_channels": (32, 16, 8, 4, 2)}), spec)
  with pytest.raises(ConfigError, match="gan.augment: unknown augmentation"):
    make(tiny_gan(**{"gan.augment": "color,flip"}), spec)
  with pytest.raises(ConfigError, match="gan.r1_every must be >= 1"):
    make(tiny_gan(**{"gan.r1_every": 0}), spec)
  with pytest.raises(ConfigError, match="unknown config key 'gan.r1_gama'.*gan.r1_gamma"):
    tiny_gan(**{"gan.r1_gama": 1.0})
