"""Diffusion: samplers against analytic denoisers, objective losses, networks, guidance, CLI.

For data x0 ~ N(mu, Sigma) the optimal denoiser is linear,
  E[x0 | x_t] = mu + Sigma alpha (alpha^2 Sigma + sigma^2 I)^-1 (x_t - alpha mu),
and for a mixture of isotropic Gaussians it is the posterior-weighted mix of those. Each
test turns the analytic denoiser into the *raw output* the objective's network would give
(eps, v, x0, EDM's F, velocity), so the samplers see it through the same conversions as a
trained network. The probability-flow ODE of a Gaussian is solvable too: from the start
point x (alpha, sigma) it ends at mu + U diag(sqrt(l / (alpha^2 l + sigma^2))) U^T (x - alpha mu)
with Sigma = U diag(l) U^T, which the deterministic samplers must approach as steps grow.
"""

import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_DIFFUSION, config_path

from gen import cli
from gen.core import config as config_lib
from gen.core import train as train_lib
from gen.core.config import ConfigError
from gen.core.family import DataSpec
from gen.diffusion import make
from gen.diffusion import samplers as S
from gen.diffusion.models import DiT, UNet
from gen.diffusion.objectives import make_objective, make_process
from gen.diffusion.denoiser import make_denoiser, per_example_loss

# (objective, process): every objective, eps / v / x0 on both VP schedules between them.
SETUPS = {"eps-linear": ("eps", "linear"), "v-cosine": ("v", "cosine"),
          "x0-linear": ("x0", "linear"), "eps-cosine": ("eps", "cosine"),
          "edm": ("edm", "edm"), "flow": ("flow", "flow")}
MU = np.array([0.5, -0.3], np.float32)
COV = np.array([[0.30, 0.12], [0.12, 0.20]], np.float32)
LAM, U = (x.astype(np.float32) for x in np.linalg.eigh(COV))
# A mixture of two isotropic Gaussians: weights, means, variances.
MIX = (np.array([0.3, 0.7], np.float32), np.array([[-0.6, 0.4], [0.5, -0.2]], np.float32),
       np.array([0.02, 0.05], np.float32))
NUM = 4000  # Samples per distribution check: the mean's standard error is ~0.01.


def gaussian_x0(x, a, s):
  """E[x0 | x] for N(MU, COV), x: [B, 1, 2, 1], a, s broadcastable."""
  z = (x.reshape(-1, 2) - a.reshape(-1, 1) * MU) @ U
  gain = a.reshape(-1, 1) * LAM / (a.reshape(-1, 1) ** 2 * LAM + s.reshape(-1, 1) ** 2)
  return (MU + (gain * z) @ U.T).reshape(x.shape)


def mixture_x0(x, a, s):
  w, means, var = MIX
  x2, a, s = x.reshape(-1, 1, 2), a.reshape(-1, 1, 1), s.reshape(-1, 1, 1)
  tot = a ** 2 * var[:, None] + s ** 2  # [B, K, 1]: the components' variance at time t.
  logp = jnp.log(w)[:, None] - jnp.sum((x2 - a * means) ** 2, -1, keepdims=True) / (2 * tot) \
      - jnp.log(tot)  # 2-d: log det = 2 log tot, halved.
  post = jax.nn.softmax(logp, axis=1)
  comp = means + a * var[:, None] / tot * (x2 - a * means)
  return jnp.sum(post * comp, axis=1).reshape(x.shape)


def analytic_raw(objective, process, posterior_mean):
  """The raw network output (x_in, cond, labels) -> raw of the Bayes-optimal model."""
  def apply_raw(x_in, cond, labels):
    del labels
    t = process.t_of_cond(cond)
    a, s = (v.reshape(-1, 1, 1, 1) for v in process.alpha_sigma(t))
    x = x_in / objective.c_in(a, s)
    x0 = posterior_mean(x, a, s)
    return objective.target(x0, (x - a * x0) / s, a, s)
  return apply_raw


@functools.cache
def compiled_sampler(setup, sampler, data="gauss"):
  """One compiled program per (setup, sampler): steps and options are traced arguments."""
  obj_name, proc_name = SETUPS[setup]
  process, objective = make_process(proc_name), make_objective(obj_name)
  posterior = gaussian_x0 if data == "gauss" else mixture_x0
  denoise = make_denoiser(analytic_raw(objective, process, posterior), process, objective)
  fn = S.SAMPLERS[sampler]

  @jax.jit
  def run(noise, rng, steps, opts):
    return fn(lambda x, t: denoise(x, t, None), process, noise, rng, steps, **opts)
  return run


def draw(setup, sampler, steps, data="gauss", seed=0, **opts):
  noise = jax.random.normal(jax.random.key(seed), (NUM, 1, 2, 1))
  opts = {k: jnp.float32(v) for k, v in opts.items()}
  out = compiled_sampler(setup, sampler, data)(noise, jax.random.key(seed + 1),
                                               jnp.int32(steps), opts)
  return noise, np.asarray(out).reshape(NUM, 2)


# Steps per sampler for the distribution checks: first-order and stochastic ones need more.
STEPS = {"ddpm": 200, "ddim": 50, "euler": 100, "heun": 24, "dpmpp_2m": 32, "flow_euler": 100,
         "flow_heun": 24}


@pytest.mark.parametrize("sampler", list(S.SAMPLERS))
@pytest.mark.parametrize("setup", list(SETUPS))
def test_sampler_reaches_the_gaussian(setup, sampler):
  """Mean within 0.05 and covariance entries within 0.04 of the truth (4000 samples)."""
  _, x = draw(setup, sampler, STEPS[sampler])
  np.testing.assert_allclose(x.mean(0), MU, atol=0.05)
  np.testing.assert_allclose(np.cov(x.T), COV, atol=0.04)


@pytest.mark.parametrize("sampler, steps, opts", [
    ("ddim", 100, {"eta": 1.0}), ("ddim", 100, {"eta": 0.5}), ("heun", 100, {"churn": 10.0}),
    ("euler", 200, {"churn": 10.0})])  # Euler with churn is first order in a noisy way: slow.
def test_stochastic_options_reach_the_gaussian(sampler, steps, opts):
  _, x = draw("eps-linear" if sampler == "ddim" else "edm", sampler, steps, **opts)
  np.testing.assert_allclose(x.mean(0), MU, atol=0.05)
  np.testing.assert_allclose(np.cov(x.T), COV, atol=0.04)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "heun", "dpmpp_2m", "flow_heun"])
@pytest.mark.parametrize("setup", ["eps-linear", "edm", "flow"])
def test_sampler_reaches_the_mixture(setup, sampler):
  """Both modes with their weights (within 0.03), means within 0.05, spread within 30%."""
  _, x = draw(setup, sampler, STEPS[sampler], data="mixture")
  w, means, var = MIX
  nearest = np.argmin(((x[:, None] - means) ** 2).sum(-1), axis=1)
  for k in range(2):
    pts = x[nearest == k]
    assert abs(len(pts) / NUM - w[k]) < 0.03
    np.testing.assert_allclose(pts.mean(0), means[k], atol=0.05)
    np.testing.assert_allclose(pts.var(0), var[k], rtol=0.3)


def exact_ode(setup, sampler, noise, steps):
  process = make_process(SETUPS[setup][1])
  a, s = (float(v) for v in S.start_level(sampler, process, jnp.int32(steps)))
  x = s * noise.reshape(-1, 2)
  gain = np.sqrt(LAM / (a * a * LAM + s * s))
  return MU + ((x - a * MU) @ U * gain) @ U.T


@pytest.mark.parametrize("sampler, order", [("ddim", 1), ("euler", 1), ("flow_euler", 1),
                                            ("heun", 2), ("dpmpp_2m", 2), ("flow_heun", 2)])
@pytest.mark.parametrize("setup", ["eps-linear", "edm", "flow"])
def test_deterministic_samplers_converge(setup, sampler, order):
  """Max error against the exact ODE solution shrinks like steps^-order.

  Measured: first-order samplers halve it per doubling of steps (0.6 -> 0.09 from 8 to 64
  steps), second-order ones quarter it (0.3-0.8 -> 0.006-0.008); the bounds leave slack.
  """
  errs = []
  for steps in (8, 16, 32, 64):
    noise, x = draw(setup, sampler, steps)
    errs.append(np.abs(x - exact_ode(setup, sampler, noise, steps)).max())
  assert all(b < a for a, b in zip(errs, errs[1:])), errs
  assert errs[-2] / errs[-1] > (1.7 if order == 1 else 3.3), errs  # The last doubling.
  assert errs[0] / errs[-1] > (5 if order == 1 else 20), errs
  assert errs[-1] < (0.1 if order == 1 else 0.01), errs


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("setup", ["edm", "eps-linear"])
def test_karras_samplers_without_churn_ignore_the_key(setup, sampler):
  """At churn 0 Euler and Heun solve the ODE: another key gives the very same bits.

  The churn noise used to be sqrt(max(s_hat^2 - s^2, 0)) z, which float32 does not round to 0
  when s_hat == s, so the key leaked into every step (about 1e-4 relative here).
  """
  noise = jax.random.normal(jax.random.key(0), (NUM, 1, 2, 1))
  run = compiled_sampler(setup, sampler)
  a, b = (np.asarray(run(noise, jax.random.key(k), jnp.int32(20), {"churn": jnp.float32(0)}))
          for k in (1, 2))
  np.testing.assert_array_equal(a, b)
  c = np.asarray(run(noise, jax.random.key(2), jnp.int32(20), {"churn": jnp.float32(1.0)}))
  assert np.abs(c - b).max() > 1e-3  # With churn the key does matter.


def test_ddpm_is_ddim_with_eta_one():
  """Two derivations of the ancestral step (posterior mean/variance vs DDIM's eta) agree."""
  _, a = draw("v-cosine", "ddpm", 20)
  _, b = draw("v-cosine", "ddim", 20, eta=1.0)
  np.testing.assert_allclose(a, b, atol=2e-4)


# The loss of the Bayes-optimal model at time t: (d raw / d x0)^2 times the posterior
# variance of x0, per objective, derived by hand from each target's definition.
GAIN_SQ = {"eps": lambda a, s: a * a / (s * s), "v": lambda a, s: (a * a + s * s) ** 2 / (s * s),
           "x0": lambda a, s: 1.0, "edm": lambda a, s: (s * s + 0.25) / (s * s * 0.25),
           "flow": lambda a, s: 1.0 / (s * s)}


@pytest.mark.parametrize("setup", ["eps-linear", "v-cosine", "x0-linear", "edm", "flow"])
def test_objective_losses_at_known_points(setup):
  obj_name, proc_name = SETUPS[setup]
  process, objective = make_process(proc_name), make_objective(obj_name)
  n = 20000
  chol = np.linalg.cholesky(COV)
  x0 = (MU + np.random.default_rng(0).normal(size=(n, 2)) @ chol.T).astype(np.float32)
  x0 = jnp.asarray(x0.reshape(n, 1, 2, 1))
  eps = jax.random.normal(jax.random.key(0), x0.shape)
  labels = jnp.zeros((n,), jnp.int32)
  for t in (0.3, 0.7) if proc_name != "edm" else (0.2, 2.0):
    tt = jnp.full((n,), t, jnp.float32)
    a, s = (float(v) for v in process.alpha_sigma(jnp.float32(t)))
    # A network that outputs the exact target has zero loss and denoises perfectly.
    def perfect(x_in, cond, y):
      av, sv = (v.reshape(-1, 1, 1, 1) for v in process.alpha_sigma(process.t_of_cond(cond)))
      return objective.target(x0, eps, av, sv)
    loss, x0_mse = per_example_loss(perfect, process, objective, x0, tt, eps, labels)
    assert float(jnp.max(loss)) < 1e-6 and float(jnp.max(x0_mse)) < 1e-6
    # The analytic denoiser's expected loss is its closed form (Monte Carlo within 3%).
    loss, x0_mse = per_example_loss(analytic_raw(objective, process, gaussian_x0), process,
                                    objective, x0, tt, eps, labels)
    post_var = np.mean(LAM * s * s / (a * a * LAM + s * s))
    np.testing.assert_allclose(float(jnp.mean(x0_mse)), post_var, rtol=0.03)
    np.testing.assert_allclose(float(jnp.mean(loss)), GAIN_SQ[obj_name](a, s) * post_var,
                               rtol=0.03)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_objectives_eps_and_x0_agree(setup):
  """to_eps and to_x0 of one raw output satisfy x = alpha x0_hat + sigma eps_hat, and the
  exact target's eps_hat is the noise; make_denoiser(with_eps=True) returns that pair, with
  x0_hat clipped and eps_hat the network's."""
  obj_name, proc_name = SETUPS[setup]
  process, objective = make_process(proc_name), make_objective(obj_name)
  rng = np.random.default_rng(0)
  x0, eps = (jnp.asarray(rng.normal(size=(6, 1, 2, 1)), jnp.float32) for _ in range(2))
  t = jnp.asarray(rng.uniform(0.1, 0.9, 6) * (20.0 if proc_name == "edm" else 1.0), jnp.float32)
  a, s = (v.reshape(-1, 1, 1, 1) for v in process.alpha_sigma(t))
  x = a * x0 + s * eps
  raw = objective.target(x0, eps, a, s)
  np.testing.assert_allclose(objective.to_eps(x, raw, a, s), eps, rtol=1e-4, atol=1e-4)
  other = jnp.asarray(rng.normal(size=x.shape), jnp.float32)  # Any raw output.
  np.testing.assert_allclose(a * objective.to_x0(x, other, a, s) + s * objective.to_eps(
      x, other, a, s), x, rtol=1e-4, atol=1e-4)
  apply_raw = lambda x_in, cond, y: objective.target(x0, eps, a, s)
  pair = make_denoiser(apply_raw, process, objective, clip=True, with_eps=True)(x, t, None)
  np.testing.assert_allclose(pair[0], jnp.clip(x0, -1, 1), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(pair[1], eps, rtol=1e-4, atol=1e-4)


def test_processes_are_consistent():
  """t_of_level inverts sigma / alpha; cond round-trips; grids run from t_max down to 0."""
  for name in ("linear", "cosine", "edm", "flow"):
    p = make_process(name)
    t = jnp.linspace(0.05, 0.95, 7) * (80.0 if name == "edm" else 1.0)
    np.testing.assert_allclose(p.t_of_level(p.level(t)), t, rtol=1e-4)
    np.testing.assert_allclose(p.t_of_cond(p.cond(t)), t, rtol=1e-5)
    g = np.array([float(p.grid(i, 10)) for i in range(11)])
    assert np.all(np.diff(g) < 0) and g[-1] == 0.0
    a, s = p.alpha_sigma(g[-1])
    assert float(s) == 0.0 and float(a) == 1.0
    if name in ("linear", "cosine"):
      a, s = p.alpha_sigma(t)
      np.testing.assert_allclose(a * a + s * s, 1.0, rtol=1e-5)  # Variance preserving.


# ------------------------------------------------------------------------- networks


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_network_shapes(arch, shape):
  """Shapes only (jax.eval_shape: traced, not compiled), conditional, in training mode."""
  if arch == "unet":
    mult = (1, 2, 2) if shape[0] != 8 else (1, 2)
    net = UNet(shape[-1], channels=16, channel_mult=mult, num_res_blocks=1,
               attn_resolutions=(shape[0] // 2,), heads=2, groups=8, num_classes=10,
               dropout=0.1)
  else:
    net = DiT(shape[-1], patch=4 if shape[0] == 28 else 2, dim=32, depth=2, heads=4,
              num_classes=10, dropout=0.1)
  x = jnp.zeros((2,) + shape)
  cond, labels = jnp.array([0.1, 0.9]), jnp.array([3, 10])  # 10: the null label.
  variables = jax.eval_shape(net.init, jax.random.key(0), x, cond, labels)
  out = jax.eval_shape(lambda v: net.apply(v, x, cond, labels, True,
                                           rngs={"dropout": jax.random.key(1)}), variables)
  assert out.shape == x.shape


def test_dit_positions():
  """Fixed sine-cosine positions are not parameters; learned ones are one per token, and
  the two nets differ only by them."""
  x, cond, labels = jnp.zeros((1, 8, 8, 1)), jnp.array([0.5]), None
  shapes = {}
  for positions in ("sincos", "learned"):
    net = DiT(1, patch=2, dim=32, depth=1, heads=4, positions=positions)
    params = jax.eval_shape(net.init, jax.random.key(0), x, cond, labels)["params"]
    shapes[positions] = jax.tree.map(lambda a: a.shape, params)
  assert "pos" not in shapes["sincos"]
  assert shapes["learned"].pop("pos") == (16, 32)
  assert shapes["learned"] == shapes["sincos"]
  with pytest.raises(ValueError, match="positions must be 'sincos' or 'learned', got 'rope'"):
    DiT(1, patch=2, dim=32, depth=1, heads=4, positions="rope").init(
        jax.random.key(0), x, cond, labels)


# ------------------------------------------------------------------------- pipeline


def key(seed):
  """XLA:CPU compiles threefry slowly (~20 s to initialize even a tiny UNet); these tests
  use the RngBitGenerator-based PRNG for the keys they make themselves."""
  return jax.random.key(seed, impl="unsafe_rbg")


def tiny(spec="diffusion/digits.py", **overrides):
  c = config_lib.load_file(config_path(*spec.split("/")))
  config_lib.apply_overrides(c, {**TINY_DIFFUSION, "optim.warmup_steps": 0, **overrides})
  config_lib.validate(c)
  return c


DIGITS = DataSpec((8, 8, 1), 10, "scale")


def batch_of(n=8):
  x = np.random.default_rng(0).uniform(-1, 1, (n, 8, 8, 1)).astype(np.float32)
  return {"image": x, "label": jnp.arange(n, dtype=jnp.int32) % 10}


# The objectives differ only in `per_example_loss` and `make_denoiser`, which the analytic
# tests above run for every objective; here each backbone trains and samples end to end.
@pytest.mark.parametrize("overrides", [
    {"diffusion.objective": "eps", "diffusion.schedule": "linear", "diffusion.sampler": "ddpm"},
    {"diffusion.objective": "flow", "model.arch": "dit", "model.dropout": 0.1,
     "model.conditional": True, "model.label_dropout": 0.2, "diffusion.sampler": "flow_heun"},
], ids=["eps-unet", "flow-dit-conditional"])
def test_train_step_and_sample(overrides):
  pipe = make(tiny(**overrides), DIGITS)
  state = jax.jit(pipe.init)(key(0), batch_of())

  @jax.jit
  def run(state):
    new, metrics = pipe.train_step(state, batch_of(), key(1))
    ev = pipe.eval_step(new, batch_of(), key(2))
    return new, metrics, ev, pipe.sample(new.sample_params, key(3), 4)

  new, metrics, ev, x = run(state)
  assert int(new.step) == 1
  for v in (*metrics.values(), *ev.values()):
    assert np.all(np.isfinite(v))
  assert ev["loss"].shape == (8,)
  # The zero-initialized output layer moves first (everything behind it has zero gradient).
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(new.params)))
  assert x.shape == (4, 8, 8, 1) and np.all(np.abs(x) <= 1.0)


def test_guidance_and_steps_do_not_recompile():
  pipe = make(tiny(**{"model.conditional": True, "model.label_dropout": 0.1}), DIGITS)
  state = jax.jit(pipe.init)(key(0), batch_of())
  # Random weights (the zero-initialized output layer would make every guidance equal).
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32),
                        state.params)
  traces = []

  @jax.jit
  def sample(params, steps, guidance):
    traces.append(1)
    return pipe.sample(params, key(0), 4, sampler="dpmpp_2m", steps=steps,
                       guidance=guidance, label=3)

  a = sample(params, 3, 1.0)
  b = sample(params, 3, 4.0)
  c = sample(params, 5, 4.0)
  assert len(traces) == 1
  assert not np.allclose(a, b) and not np.allclose(b, c)
  # Guidance 1 (traced, two network passes) is the plain conditional model (one pass).
  plain = jax.jit(lambda p: pipe.sample(p, key(0), 4, sampler="dpmpp_2m", steps=3,
                                        label=3))(params)
  np.testing.assert_allclose(a, plain, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"sampler": "dpm"}, "unknown sampler 'dpm'; valid: ddpm, ddim, euler, heun"),
    ({"steps": 0}, "steps must be a positive integer, got 0"),
    ({"guidance": 2.0}, "need a class-conditional model"),
    ({"label": 3}, "need a class-conditional model"),
    ({"sampler": "heun", "eta": 0.5}, "eta applies to the ddim sampler"),
    ({"sampler": "ddim", "churn": 1.0}, "churn applies to the euler, heun"),
    ({"timesteps": (999, 0)}, "a fixed grid applies to a discrete process"),
])
def test_sample_errors(kwargs, message):
  pipe = make(tiny(), DIGITS)
  with pytest.raises(ValueError, match=message):
    pipe.sample(None, key(0), 2, **kwargs)


def test_conditional_sample_errors():
  pipe = make(tiny(**{"model.conditional": True}), DIGITS)
  with pytest.raises(ValueError, match=r"label must be in \[0, 10\) or -1.*got 10"):
    pipe.sample(None, key(0), 2, label=10)
  with pytest.raises(ValueError, match="label dropout"):
    pipe.sample(None, key(0), 2, guidance=2.0)


@pytest.mark.parametrize("overrides, message", [
    ({"diffusion.objective": "score"}, "objective must be one of eps, v, x0, edm, flow"),
    ({"diffusion.objective": "eps", "diffusion.schedule": "sqrt"}, "schedule must be one of"),
    ({"diffusion.sampler": "plms"}, "sampler must be one of ddpm, ddim"),
    ({"diffusion.sample_steps": 0}, "sample_steps must be >= 1"),
    ({"model.arch": "mlp"}, "arch must be one of unet, dit"),
    ({"model.unet.channel_mult": (1, 2, 2, 2, 2)}, "must be divisible by 16"),
    ({"model.arch": "dit", "model.dit.patch": 3}, "divisible by model.dit.patch = 3"),
    ({"model.arch": "dit", "model.dit.positions": "rope"},
     "positions must be one of sincos, learned, got 'rope'"),
    ({"diffusion.guidance": 3.0}, "needs a class-conditional model trained with label"),
    ({"data.preprocess": "binarize"}, "data.preprocess must be 'scale' or 'dequantize'"),
])
def test_config_errors(overrides, message):
  config = tiny(**overrides)
  spec = DataSpec((8, 8, 1), 10, config.data.preprocess)
  with pytest.raises(ConfigError, match=message):
    make(config, spec)


def test_cli_sample(tmp_path, capsys):
  # The settings of test_configs.py's run of this config: compiled programs are shared
  # through the persistent compilation cache.
  config = config_lib.load_file(config_path("diffusion", "digits.py"))
  config_lib.apply_overrides(config, {**TINY_DIFFUSION, "train.num_steps": 2,
                                      "train.checkpoint_every": 0})
  workdir = str(tmp_path / "run")
  train_lib.train(config, workdir, handle_signals=False)
  out = str(tmp_path / "grid.png")
  assert cli.main(["sample", f"--workdir={workdir}", "--sampler=ddim", "--steps=3",
                   "--eta=0.5", "--num=4", f"--out={out}"]) == 0
  assert os.path.isfile(out)
  assert cli.main(["sample", f"--workdir={workdir}", "--guidance=2.0", "--num=4",
                   f"--out={out}"]) == 2  # Bad usage: guidance on an unconditional model.
  assert "class-conditional" in capsys.readouterr().err
  assert glob.glob(os.path.join(workdir, "samples.png"))


# ------------------------------------------------------------------- bf16 compute

# Small enough to compile in seconds, large enough to hold every layer kind: two UNet
# levels (down and up convolutions, GroupNorm, attention in the middle), two DiT blocks.
BF16_NETS = {
    "unet": {"model.unet.channels": 8, "model.unet.groups": 4, "model.unet.channel_mult": (1, 2),
             "model.unet.attn_resolutions": (), "diffusion.sample_steps": 4},
    "dit": {"model.dit.dim": 32, "model.dit.depth": 2, "diffusion.sample_steps": 8},
}
# Relative L2 difference between 16 DDIM samples of float32 and bfloat16 compute from the
# same perturbed weights. Measured over three perturbations: UNet (4 steps) 0.0080-0.0093,
# DiT (8 steps) 0.0038-0.0045; with the time embedding fed bfloat16 times (a broken cast:
# 1000 t rounded to 8 bits before the sines), UNet 0.029-0.042, DiT 0.015-0.023.
BF16_TOL = {"unet": 0.015, "dit": 0.009}


def bf16_config(arch, dtype, **overrides):
  return tiny(**BF16_NETS[arch], **{"diffusion.sampler": "ddim", "model.arch": arch,
                                    "model.dtype": dtype, **overrides})


def perturbed(params, scale=0.1, seed=7):
  """`params` plus N(0, scale^2) noise: the zero-initialized output layers of a fresh
  network would make every sample the same whatever the compute dtype."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape)
                                   for p, k in zip(leaves, keys)])


def rel_diff(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_bf16_samples_agree_with_float32(arch, monkeypatch):
  from gen.diffusion import models

  pipes = {dt: make(bf16_config(arch, dt), DIGITS) for dt in ("float32", "bfloat16")}
  state = jax.jit(pipes["float32"].init)(key(0), batch_of())
  # bf16 compute, float32 parameters: the same tree of float32 leaves.
  abstract = jax.eval_shape(pipes["bfloat16"].init, key(0), batch_of()).params
  assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
      lambda a: (a.shape, a.dtype), state.params)
  params = perturbed(state.params)

  def draw(dtype):
    return np.asarray(jax.jit(lambda p: pipes[dtype].sample(p, key(3), 16))(params))

  x32, x16 = draw("float32"), draw("bfloat16")
  assert x16.dtype == np.float32 and x16.shape == (16, 8, 8, 1)
  diff = rel_diff(x16, x32)
  assert 1e-5 < diff < BF16_TOL[arch], diff  # bf16 really ran, and agrees.
  # The tolerance catches a broken cast: the same model with bf16 times in its embedding.
  real = models.sinusoidal
  monkeypatch.setattr(models, "sinusoidal", lambda t, dim: real(
      jnp.asarray(t).astype(jnp.bfloat16).astype(jnp.float32), dim))
  assert rel_diff(draw("bfloat16"), x32) > BF16_TOL[arch]


@pytest.mark.parametrize("arch,op", [("unet", "convolution"), ("dit", "dot_general")])
def test_bf16_train_step_keeps_float32_state(arch, op):
  configs = {dt: bf16_config(arch, dt, **{"model.dropout": 0.1})
             for dt in ("float32", "bfloat16")}
  pipes = {dt: make(c, DIGITS) for dt, c in configs.items()}
  state = jax.jit(pipes["float32"].init)(key(0), batch_of())
  state = state.replace(params=perturbed(state.params))
  steps = {dt: jax.jit(p.train_step) for dt, p in pipes.items()}
  hlo = steps["bfloat16"].lower(state, batch_of(), key(1)).as_text()
  assert any(op in line and "bf16" in line for line in hlo.splitlines())
  out = {dt: step(state, batch_of(), key(1)) for dt, step in steps.items()}
  new, metrics = out["bfloat16"]
  for tree in (new.params, new.ema_params, new.opt_state):
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(tree))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new.params))
  assert metrics["loss"].dtype == jnp.float32 and np.isfinite(metrics["loss"])
  # The same loss and gradient norm to bf16 precision (measured: 0.06% and 0.2% apart).
  m32 = out["float32"][1]
  for name in ("loss", "grad_norm"):
    assert abs(float(metrics[name]) - float(m32[name])) < 0.01 * float(m32[name]), name


def test_norms_take_float32_statistics_of_bf16_inputs():
  import flax.linen as nn

  from gen.nn.norm import group_norm

  # A mean of 8 against a spread of 1: E[x^2] - E[x]^2 in bf16 loses the variance.
  x = (8.0 + jax.random.normal(jax.random.key(0), (2, 16, 16, 32))).astype(jnp.bfloat16)
  ones, zeros = jnp.ones(32), jnp.zeros(32)
  ref = np.asarray(group_norm(x.astype(jnp.float32), 8, ones, zeros))
  out = group_norm(x, 8, ones, zeros)
  assert out.dtype == jnp.bfloat16
  # Outputs up to about 4 in size: bf16's rounding of them is below 0.016.
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.02)
  v = x.reshape(2, 256, 8, 4)  # Statistics taken in bf16 are off by more than 1.
  mean = v.mean((1, 3), keepdims=True, dtype=jnp.bfloat16)
  var = (v * v).mean((1, 3), keepdims=True, dtype=jnp.bfloat16) - mean * mean
  naive = ((v - mean) * jax.lax.rsqrt(jnp.maximum(var, 0) + 1e-6)).reshape(x.shape)
  assert np.abs(np.asarray(naive, np.float32) - ref).max() > 0.5
  # The DiT's LayerNorm: flax takes its statistics in float32 too.
  tokens = x.reshape(2, 256, 32)
  ln = nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, dtype=jnp.bfloat16)
  ln_ref = nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6).apply(
      {}, tokens.astype(jnp.float32))
  got = ln.apply({}, tokens)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ln_ref), atol=0.02)


def test_bf16_config_errors():
  with pytest.raises(ConfigError, match="model.dtype must be one of float32, bfloat16, got "
                                        "'float16'"):
    make(tiny(**{"model.dtype": "float16"}), DIGITS)


def test_a_run_saved_before_model_dtype_resumes_as_float32(tmp_path):
  import json

  config = config_lib.load_file(config_path("diffusion", "digits.py"))
  saved = json.loads(config_lib.to_json(config))
  del saved["model"]["dtype"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  train_lib.check_restart(config, str(tmp_path), spec=None)  # The same model: no error.
  config.model.dtype = "bfloat16"
  with pytest.raises(ConfigError, match="model.dtype: 'float32' -> 'bfloat16'"):
    train_lib.check_restart(config, str(tmp_path), spec=None)
