"""Classifier guidance: the guided denoiser on an analytic case, the noise-conditional
classifier's pipeline, traced scales, errors, the CLI.

For data from a mixture of isotropic Gaussians sum_k w_k N(mu_k, v_k I), the noised
x = alpha x0 + sigma eps has p_t(x | k) = N(alpha mu_k, (alpha^2 v_k + sigma^2) I), so the
classifier p_t(k | x) is known in closed form, and by Bayes' rule the unconditional
denoiser guided by it with scale 1 is the class-conditional (Gaussian) denoiser
mu_k + alpha v_k / (alpha^2 v_k + sigma^2) (x - alpha mu_k): samplers must reach N(mu_k, v_k I).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_DIFFUSION, config_path
from test_diffusion import (DIGITS, MIX, NUM, SETUPS, STEPS, analytic_raw, batch_of, key,
                            mixture_x0, tiny)

from gen import cli
from gen.core import config as config_lib
from gen.core import train as train_lib
from gen.core.config import ConfigError
from gen.core.family import DataSpec
from gen.diffusion import make
from gen.diffusion import samplers as S
from gen.diffusion.guidance import NoisyClassifier, classifier_guided
from gen.diffusion.models import DiTClassifier, UNetClassifier
from gen.diffusion.objectives import make_objective, make_process
from gen.diffusion.denoiser import make_denoiser
from gen.diffusion.noisy_classifier import EVAL_LEVELS, noisy_classifier


def mixture_classifier(process, name):
  """The exact p_t(k | x) of MIX as a NoisyClassifier on [B, 1, 2, 1] points."""
  w, means, var = MIX

  def apply(params, x, t):
    del params
    a, s = (v.reshape(-1, 1) for v in process.alpha_sigma(jnp.broadcast_to(t, x.shape[:1])))
    tot = a * a * var + s * s  # [B, K]
    sq = jnp.sum((x.reshape(-1, 1, 2) - a[..., None] * means) ** 2, -1)
    return jnp.log(w) - sq / (2 * tot) - jnp.log(tot)  # 2-d: log det / 2 = log tot.

  return NoisyClassifier(None, apply, name, (1, 2, 1), 2)


def component_x0(x, a, s, k):
  """E[x0 | x, class k]: the Gaussian denoiser of N(mu_k, v_k I)."""
  _, means, var = MIX
  mu, v = means[k].reshape(-1, 1, 2, 1), var[k].reshape(-1, 1, 1, 1)
  return mu + a * v / (a * a * v + s * s) * (x - a * mu)


def guided_denoiser(setup):
  """The process and scale -> the mixture's denoiser guided by its exact classifier."""
  obj_name, proc_name = SETUPS[setup]
  process, objective = make_process(proc_name), make_objective(obj_name)
  denoise = make_denoiser(analytic_raw(objective, process, mixture_x0), process, objective)
  clf = mixture_classifier(process, proc_name)
  return process, lambda scale: classifier_guided(denoise, process.alpha_sigma, clf.log_prob,
                                                  scale)


@pytest.mark.parametrize("setup", ["eps-linear", "v-cosine", "edm", "flow"])
def test_guided_denoiser_is_the_class_conditional_one(setup):
  process, guided = guided_denoiser(setup)
  denoise = jax.jit(guided(1.0))
  rng = np.random.default_rng(0)
  n = 64
  t = rng.uniform(0.05, 0.95, n).astype(np.float32) * (20.0 if setup == "edm" else 1.0)
  labels = jnp.asarray(rng.integers(0, 2, n), jnp.int32)
  a, s = (np.asarray(v).reshape(-1, 1, 1, 1) for v in process.alpha_sigma(jnp.asarray(t)))
  x0 = MIX[1][np.asarray(labels)].reshape(-1, 1, 2, 1)
  x = (a * x0 + s * rng.normal(size=(n, 1, 2, 1))).astype(np.float32)
  want = component_x0(x, a, s, np.asarray(labels))
  np.testing.assert_allclose(denoise(jnp.asarray(x), jnp.asarray(t), labels), want,
                             atol=2e-4, rtol=1e-4)


def test_guidance_of_a_denoiser_that_returns_eps():
  """The (x0_hat, eps_hat) form the discrete samplers take: classifier guidance moves both
  consistently (x = alpha x0 + sigma eps still holds) and x0_hat as in the plain form;
  classifier-free guidance combines both, for a scalar t and for one t per example."""
  from gen.diffusion.guidance import guided
  process, objective = make_process("linear"), make_objective("eps")
  raw = analytic_raw(objective, process, mixture_x0)
  clf = mixture_classifier(process, "linear")
  single = classifier_guided(make_denoiser(raw, process, objective), process.alpha_sigma,
                             clf.log_prob, 2.0)
  pair = classifier_guided(make_denoiser(raw, process, objective, with_eps=True),
                           process.alpha_sigma, clf.log_prob, 2.0)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 1, 2, 1)), jnp.float32)
  t = jnp.asarray(rng.uniform(0.1, 0.9, 8), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 2, 8), jnp.int32)
  x0, eps = pair(x, t, labels)
  np.testing.assert_allclose(x0, single(x, t, labels), rtol=1e-5, atol=1e-6)
  a, s = (v.reshape(-1, 1, 1, 1) for v in process.alpha_sigma(t))
  np.testing.assert_allclose(a * x0 + s * eps, x, rtol=1e-4, atol=1e-4)

  def cond_pair(x, t, y):  # A toy conditional pair denoiser: the label and t shift both.
    shift = y.astype(jnp.float32).reshape(-1, 1, 1, 1)
    tb = jnp.broadcast_to(t, x.shape[:1]).reshape(-1, 1, 1, 1)
    return x * 0.5 + shift + tb, x - shift * tb
  w = 3.0
  for tt in (jnp.float32(0.5), t):
    g0, g1 = guided(cond_pair, 2, w)(x, tt, labels)
    u0, u1 = cond_pair(x, tt, jnp.full_like(labels, 2))
    c0, c1 = cond_pair(x, tt, labels)
    np.testing.assert_allclose(g0, u0 + w * (c0 - u0), rtol=1e-6)
    np.testing.assert_allclose(g1, u1 + w * (c1 - u1), rtol=1e-6)


@functools.cache
def compiled_guided(setup, sampler):
  """(guided samples, samples from the exact class-conditional denoiser) from the same noise,
  in one compiled program per (setup, sampler); steps and the scale are traced."""
  process, guided = guided_denoiser(setup)
  objective = make_objective(SETUPS[setup][0])

  @jax.jit
  def run(noise, rng, steps, scale):
    labels = jnp.arange(noise.shape[0], dtype=jnp.int32) % 2
    exact = make_denoiser(analytic_raw(objective, process, functools.partial(
        component_x0, k=np.arange(noise.shape[0]) % 2)), process, objective)
    fn = S.SAMPLERS[sampler]
    return (fn(lambda x, t: guided(scale)(x, t, labels), process, noise, rng, steps),
            fn(lambda x, t: exact(x, t, None), process, noise, rng, steps))
  return run


# Each sampler with a process it is natural on; every process and objective appears.
GUIDED = {"ddpm": "eps-linear", "ddim": "v-cosine", "euler": "edm", "heun": "edm",
          "dpmpp_2m": "eps-linear", "flow_euler": "flow", "flow_heun": "flow"}


@pytest.mark.parametrize("sampler", list(S.SAMPLERS))
def test_classifier_guidance_reaches_the_class(sampler):
  """Scale 1 is the class-conditional sampler, and reaches the class: means within 0.03,
  variances within 30% (the sampler's own error at these steps), and as many points past the
  midpoint between the modes as a Gaussian has (0.13% of all).

  The same noise gives the same samples to float precision (measured: < 1e-6, 4e-5 on the
  cosine schedule, whose 1 / alpha(1) = e^10 magnifies rounding), except that
  the flow samplers start at t = 1, where alpha = 0 and a classifier's gradient says nothing:
  their guidance starts a step late, which measured 0.11 / steps (flow_euler), 0.055 / steps
  (flow_heun) at most.
  """
  steps = STEPS[sampler]
  noise = jax.random.normal(jax.random.key(0), (NUM, 1, 2, 1))
  x, exact = compiled_guided(GUIDED[sampler], sampler)(
      noise, jax.random.key(1), jnp.int32(steps), jnp.float32(1.0))
  x, exact = (np.asarray(v).reshape(NUM, 2) for v in (x, exact))
  np.testing.assert_allclose(x, exact, atol=0.15 / steps if GUIDED[sampler] == "flow" else 1e-4)
  _, means, var = MIX
  labels = np.arange(NUM) % 2
  nearest = np.argmin(((x[:, None] - means) ** 2).sum(-1), axis=1)
  assert np.mean(nearest != labels) < 0.004
  for k in range(2):
    pts = x[labels == k]
    np.testing.assert_allclose(pts.mean(0), means[k], atol=0.03)
    np.testing.assert_allclose(pts.var(0), var[k], rtol=0.3)


# ------------------------------------------------------------------------- pipeline


def classifier_config(**overrides):
  return tiny("diffusion/digits_classifier.py", **overrides)


def randomized(params, seed=0):
  """Params moved off their zero-initialized output layers, so outputs depend on inputs."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32), params)


def test_classifier_train_and_eval_steps():
  pipe = make(classifier_config(), DIGITS)
  state = jax.jit(pipe.init)(key(0), batch_of())

  @jax.jit
  def run(state):
    new, metrics = pipe.train_step(state, batch_of(), key(1))
    return new, metrics, pipe.eval_step(new, batch_of(), key(2))

  new, metrics, ev = run(state)
  # The zero-initialized output layer: uniform logits, loss log 10, argmax class 0.
  np.testing.assert_allclose(metrics["loss"], np.log(10.0), rtol=1e-6)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(batch_of()["label"] == 0))
  assert int(new.step) == 1
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(new.params)))
  assert set(ev) == {"loss", "accuracy"} | {f"accuracy_s{s:g}" for s in EVAL_LEVELS}
  for v in ev.values():
    assert v.shape == (8,) and np.all(np.isfinite(v))


@pytest.mark.parametrize("net", [
    UNetClassifier(10, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,), heads=2, groups=8, dropout=0.1),
    DiTClassifier(10, patch=2, dim=32, depth=2, heads=4, dropout=0.1)], ids=["unet", "dit"])
def test_classifier_network_shapes(net):
  x, cond = jnp.zeros((2, 8, 8, 1)), jnp.array([0.1, 0.9])
  variables = jax.eval_shape(net.init, jax.random.key(0), x, cond)
  out = jax.eval_shape(lambda v: net.apply(v, x, cond, True,
                                           rngs={"dropout": jax.random.key(1)}), variables)
  assert out.shape == (2, 10)


def test_classifier_scale_is_traced_and_zero_is_unguided():
  pipe = make(tiny(), DIGITS)
  params = randomized(jax.jit(pipe.init)(key(0), batch_of()).params)
  cpipe = make(classifier_config(), DIGITS)
  clf = noisy_classifier(classifier_config(), DIGITS,
                         randomized(jax.jit(cpipe.init)(key(1), batch_of()).params, seed=1))
  traces = []

  @jax.jit
  def sample(params, clf, scale):
    traces.append(1)
    return pipe.sample(params, key(2), 4, sampler="dpmpp_2m", steps=3, label=3,
                       classifier=clf, classifier_scale=scale)

  zero, two, four = (sample(params, clf, s) for s in (0.0, 2.0, 4.0))
  assert len(traces) == 1
  assert not np.allclose(zero, two) and not np.allclose(two, four)
  plain = jax.jit(lambda p: pipe.sample(p, key(2), 4, sampler="dpmpp_2m", steps=3))(params)
  np.testing.assert_allclose(zero, plain, atol=1e-6)  # A traced 0: one more program.
  untraced = jax.jit(lambda p: pipe.sample(p, key(2), 4, sampler="dpmpp_2m", steps=3, label=3,
                                           classifier=clf, classifier_scale=0.0))(params)
  np.testing.assert_array_equal(untraced, plain)  # A Python 0 leaves the classifier out.


def fake_classifier(process="edm", shape=(8, 8, 1), num_classes=10):
  return NoisyClassifier(None, None, process, shape, num_classes)


@pytest.mark.parametrize("overrides, kwargs, message", [
    ({}, {"classifier_scale": 2.0}, "classifier_scale=2.0 needs --classifier=WORKDIR"),
    ({}, {"classifier": fake_classifier(), "label": 10}, r"label must be in \[0, 10\)"),
    ({}, {"classifier": fake_classifier("cosine")},
     "trained on the 'cosine' process, this model samples the 'edm' process"),
    ({}, {"classifier": fake_classifier(shape=(28, 28, 1))},
     r"classifies \(28, 28, 1\) images, this model makes \(8, 8, 1\)"),
    ({"model.conditional": True}, {"classifier": fake_classifier(num_classes=5)},
     "it has 5 classes, this model 10"),
    ({}, {"classifier": "no/such/run"}, "the sampler takes a NoisyClassifier"),
])
def test_classifier_guidance_errors(overrides, kwargs, message):
  pipe = make(tiny(**overrides), DIGITS)
  with pytest.raises(ValueError, match=message):
    pipe.sample(None, key(0), 2, **kwargs)


def test_sample_options():
  """A workdir is loaded (and checked) eagerly, before compiling; other flags pass through."""
  pipe = make(tiny(), DIGITS)
  assert pipe.sample_options(2, {"steps": 3, "label": -1}) == (2, {"steps": 3, "label": -1})
  assert pipe.sample_options(0, {}) == (64, {})  # No --num.
  with pytest.raises(ValueError, match="no/such/run: no training run there"):
    pipe.sample_options(2, {"classifier": "no/such/run"})
  with pytest.raises(ValueError, match="not a noise-conditional classifier"):
    noisy_classifier(tiny(), DIGITS, None)


@pytest.mark.parametrize("overrides, spec, message", [
    ({"model.kind": "critic"}, DIGITS, "model.kind must be one of denoiser, classifier"),
    ({}, DataSpec((8, 8, 1), 0, "scale"), "needs a labelled dataset"),
])
def test_classifier_config_errors(overrides, spec, message):
  with pytest.raises(ConfigError, match=message):
    make(classifier_config(**overrides), spec)


def test_cli_sample_with_a_classifier(tmp_path, capsys):
  # The settings of test_configs.py's runs of these configs: compiled programs are shared
  # through the persistent compilation cache.
  runs = {}
  for name in ("digits.py", "digits_classifier.py"):
    config = config_lib.load_file(config_path("diffusion", name))
    config_lib.apply_overrides(config, {**TINY_DIFFUSION, "train.num_steps": 2,
                                        "train.checkpoint_every": 0})
    runs[name] = str(tmp_path / name[:-3])
    train_lib.train(config, runs[name], handle_signals=False)
  out = str(tmp_path / "threes.png")
  model, clf = runs["digits.py"], runs["digits_classifier.py"]
  assert cli.main(["sample", f"--workdir={model}", f"--classifier={clf}", "--steps=2",
                   "--classifier_scale=2", "--label=3", "--num=4", f"--out={out}"]) == 0
  assert os.path.isfile(out)
  assert cli.main(["sample", f"--workdir={model}", f"--classifier={model}", "--num=4",
                   f"--out={out}"]) == 2
  assert "not a noise-conditional classifier" in capsys.readouterr().err
  assert cli.main(["sample", f"--workdir={model}", "--classifier_scale=2", "--num=4",
                   f"--out={out}"]) == 2
  assert "needs --classifier" in capsys.readouterr().err
