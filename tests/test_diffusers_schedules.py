"""Discrete diffusers schedules: gen's samplers on a `discrete` process reproduce diffusers'
DDIM (eta 0 and 1), DDPM, PNDM (PLMS, skip_prk_steps), Euler, Euler ancestral (the same
noise), Heun and DPM-Solver++(2M) schedulers, their timesteps,
trajectories and final samples, within 2e-5 in float32 (ill-conditioned cases: as near
diffusers' float64 run as its float32 run is; see `_compare`).

The default run compares with tests/fixtures/diffusers_schedules.npz (written by
tests/fixtures/make_diffusers_schedules.py with diffusers; no torch needed here). The `peers`
tests run diffusers live and are skipped where torch and diffusers are not installed.
"""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from gen.diffusion import discrete, sampling, schedulers
from gen.diffusion.objectives import make_objective, make_process
from gen.diffusion.denoiser import make_denoiser

TOL = 2e-5
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _load_script():
  spec = importlib.util.spec_from_file_location(
      "make_diffusers_schedules", os.path.join(FIXTURES, "make_diffusers_schedules.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


S = _load_script()
REF = np.load(os.path.join(FIXTURES, "diffusers_schedules.npz"))
CASES = json.loads(bytes(REF["cases"]).decode())["cases"]
SAMPLER = {"ddim": "ddim", "ddim_eta1": "ddim", "ddpm": "ddpm", "euler": "euler",
           "heun": "heun", "dpmpp_2m": "dpmpp_2m", "pndm": "pndm", "euler_a": "euler_a"}


def _process(c):
  schedule, b0, b1 = S.TABLES[c["table"]]
  process = make_process("discrete", discrete=dict(
      beta_schedule=schedule, beta_start=b0, beta_end=b1, timestep_spacing=c["spacing"],
      steps_offset=c["steps_offset"], set_alpha_to_one=c["set_alpha_to_one"],
      timesteps=c["timesteps"], sigmas=c["sigmas"], clip_sample=c.get("clip_sample", False)))
  return discrete.with_prediction(process, "eps" if c["prediction"] == "epsilon" else "v")


def _group(c):
  """What a compiled sampler depends on: everything but the (traced) step count."""
  return tuple((k, json.dumps(v)) for k, v in sorted(c.items())
               if k not in ("steps", "name", "trajectory", "calls", "first_call",
                            "first_input"))


@functools.cache
def _compiled(group):
  """(noise, rng, steps) -> (final, [calls] timesteps, [calls] model inputs) for one group;
  the model's inputs are recorded by an ordered callback, so one program serves 10/25/50."""
  c = {k: json.loads(v) for k, v in group}
  process = _process(c)
  objective = make_objective("eps" if c["prediction"] == "epsilon" else "v")
  seen = []

  def apply_raw(x, cond, labels):
    t = process.t_of_cond(cond)
    jax.debug.callback(lambda x, t: seen.append((np.asarray(x), np.asarray(t)[0])), x, t,
                       ordered=True)
    return jax.pure_callback(
        lambda x, t: S.model(x, np.asarray(t)[:, None, None, None], c["prediction"],
                             c["table"]), jax.ShapeDtypeStruct(x.shape, jnp.float32), x, t)

  denoise = make_denoiser(apply_raw, process, objective, with_eps=True)
  fn = schedulers.SAMPLERS[SAMPLER[c["scheduler"]]]
  opts = {"eta": 1.0} if c["scheduler"] == "ddim_eta1" else {}
  jitted = jax.jit(lambda noise, rng, steps: fn(lambda x, t: denoise(x, t, None), process,
                                                noise, rng, steps, **opts))

  def run(steps, seed=S.SEED):
    seen.clear()
    k_noise, k_run = jax.random.split(jax.random.PRNGKey(seed))
    out = jitted(jax.random.normal(k_noise, S.SHAPE), k_run, steps)
    out = np.asarray(jax.block_until_ready(out))
    jax.effects_barrier()
    return out, np.array([t for _, t in seen]), np.stack([x for x, _ in seen])

  return run


def _gen(c, seed=S.SEED):
  return _compiled(_group(c))(c["steps"], seed)


def _diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _compare(c, ref, got):
  """Asserts gen's run `got` matches diffusers' `ref`; returns the differences.

  Within TOL of diffusers' float32 numbers, unless the case is ill-conditioned in float32:
  where diffusers' own float32 run (final sample, and the trajectory where both have it) is
  more than TOL / 2 from its float64 run (`floor`; the cosine table's trailing and linspace
  grids start at sigma / alpha = 2e4, and the first step's cancellation leaves an ulp of 2e4
  behind), no float32 implementation can agree to TOL, and gen must instead be about as near
  the float64 run as diffusers' float32 run is (within 4 floor + TOL; the live runs' ratio
  is at most 2.9). Neither float32 run is the better one: on DDIM eta 1's trailing cosine
  grid a numpy float32 transcription of diffusers' step agrees with gen to 4e-6 and with
  torch to 2e-4 only (torch's float32 square root is not correctly rounded).
  """
  final, ts, inputs = got
  np.testing.assert_allclose(ts, ref["timesteps"], rtol=0, atol=1e-4,
                             err_msg=f"{c['name']}: timesteps")
  err = {"final": _diff(final, ref["final"])}
  if ref.get("inputs") is not None:
    err["trajectory"] = _diff(inputs, ref["inputs"])
  floor = _diff(ref["final"], ref["final64"])
  err64 = _diff(final, ref["final64"])
  if err.get("trajectory") is not None and ref.get("inputs64") is not None:
    floor = max(floor, _diff(ref["inputs"], ref["inputs64"]))
    err64 = max(err64, _diff(inputs, ref["inputs64"]))
  if floor <= TOL / 2:
    assert max(err.values()) <= TOL, f"{c['name']}: {err}"
  else:
    err["float64"], err["floor"] = err64, floor
    assert err64 <= 4 * floor + TOL, f"{c['name']}: {err}, float32 floor {floor:.2e}"
  return err


def _default(c):
  """The default run's cases: each scheduler on one spacing at 10/25/50 steps (one compiled
  program each) and the fixed-grid, v-prediction and final-alpha cases of DDIM / Euler /
  DPM-Solver++; `slow` compares every case of the fixture."""
  if c["timesteps"] is not None or c["sigmas"] is not None:
    return c["scheduler"] in ("euler", "dpmpp_2m")
  if c["prediction"] != "epsilon" or not c["set_alpha_to_one"] or c.get("clip_sample"):
    return c["scheduler"] in ("ddim", "pndm") or (c["scheduler"] == "euler_a"
                                                   and c["prediction"] != "epsilon")
  if c["table"] == "squaredcos_cap_v2":  # Timestep 999's sigma / alpha = 2e4.
    return c["spacing"] == "trailing" and c["scheduler"] in ("ddim", "euler")
  return c["spacing"] == S.DEFAULT_SPACING[c["scheduler"]] and c["table"] == S.TABLE_OF[
      c["scheduler"]]


def _check_fixture(cases):
  for c in cases:
    _compare(c, S.reference(REF, c), _gen(c))


@pytest.mark.parametrize("scheduler", S.SCHEDULERS)
def test_matches_diffusers_fixture(scheduler):
  _check_fixture([c for c in CASES if c["scheduler"] == scheduler and _default(c)])


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", S.SCHEDULERS)
def test_matches_diffusers_fixture_every_case(scheduler):
  """Every spacing, step count and table of the fixture."""
  _check_fixture([c for c in CASES if c["scheduler"] == scheduler and not _default(c)])


def test_tables_match_diffusers_fixture_betas():
  """The three beta schedules, through the DDIM trajectories above, and directly: the
  linear table's alphas_cumprod is DDPM's (1 - 1e-4, ..., about 4.0e-5)."""
  ac = discrete.alphas_cumprod_table(discrete.betas_table("linear"))
  assert ac[0] == np.float32(1 - 1e-4) and abs(ac[-1] - 4.0358e-5) < 1e-8
  with pytest.raises(ValueError, match="beta_schedule"):
    discrete.betas_table("sigmoid")


def test_grids_exact_for_every_step_count():
  """The traced spacings give diffusers' timesteps for n = 1..1000, ties included (numpy's
  float64 rounding is reproduced), except where diffusers' trailing arange runs one past n
  (an extra timestep -1, e.g. n = 61): there the first n agree. Euler's fractional linspace
  agrees to 1 ulp at 999."""
  i, ns = jnp.arange(1000), jnp.arange(1, 1001)
  for kind, fn, spacing in (("ddim", discrete.ddim_timesteps, "trailing"),
                            ("ddim", discrete.ddim_timesteps, "linspace"),
                            ("ddim", discrete.ddim_timesteps, "leading"),
                            ("dpm", discrete.dpm_timesteps, "linspace"),
                            ("dpm", discrete.dpm_timesteps, "leading"),
                            ("karras", discrete.karras_timesteps, "linspace")):
    grid = np.asarray(jax.jit(jax.vmap(lambda n: fn(i, n, 1000, spacing, 1)))(ns))
    ref = np.full(grid.shape, np.nan)
    for n in range(1, 1001):
      ref[n - 1, :n] = discrete.diffusers_timesteps(kind, spacing, n, 1000, 1)[:n]
    ok = ~np.isnan(ref)
    err = np.abs(grid[ok] - ref[ok])
    assert err.max() <= (7e-5 if kind == "karras" else 0), (kind, spacing, err.max())


def test_step_count_is_traced():
  """One compiled DDIM program runs 10 and 25 steps and gives the 25-step reference."""
  c = next(c for c in CASES if c["scheduler"] == "ddim" and c["spacing"] == "trailing")
  run = _compiled(_group(c))
  run(10)
  ref = S.reference(REF, next(d for d in CASES if d["scheduler"] == "ddim" and d["spacing"]
                              == "trailing" and d["steps"] == 25))["final"]
  assert _diff(run(25)[0], ref) <= TOL


def test_training_times_and_conditioning():
  p = make_process("discrete")
  t = p.sample_t(jax.random.PRNGKey(0), (4096,))
  assert t.min() == 0 and t.max() == 999 and np.all(t == np.round(t))
  a, s = p.alpha_sigma(jnp.asarray([-1.0, 0.0, 999.0]))
  ac = p.alphas_cumprod
  np.testing.assert_array_equal(a, [1.0, np.sqrt(ac[0]), np.sqrt(ac[-1])])
  np.testing.assert_array_equal(s, [0.0, np.sqrt(1 - ac[0]), np.sqrt(1 - ac[-1])])
  assert float(p.cond(999.0)) * 1000 == pytest.approx(999.0)  # The UNet embeds t itself.
  lev = p.level(jnp.asarray([10.0, 10.5, 11.0]))
  assert float(lev[1]) == pytest.approx(0.5 * float(lev[0] + lev[2]), rel=1e-6)
  np.testing.assert_allclose(p.t_of_level(lev), [10.0, 10.5, 11.0], atol=1e-3)


def test_bad_settings_are_errors():
  with pytest.raises(ValueError, match="timestep_spacing"):
    make_process("discrete", discrete=dict(timestep_spacing="karras"))
  with pytest.raises(ValueError, match="timesteps must lie"):
    make_process("discrete", discrete=dict(timesteps=[1000, 10]))
  with pytest.raises(ValueError, match="level_min"):
    sampling.resolve(make_process("discrete"), "euler", 4, level_min=0.1)
  with pytest.raises(ValueError, match="discrete process"):
    sampling.resolve(make_process("linear"), "ddim", 4, timesteps=(10, 0))


# ---------------------------------------------------------------------- peers (live)

HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "diffusers"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch and diffusers")


@peers
@pytest.mark.parametrize("scheduler", S.SCHEDULERS)
def test_peers_matches_diffusers_live(scheduler):
  """Live, full trajectories of every committed case and of a second noise seed."""
  worst, ratio = 0.0, []
  for c in [c for c in S.cases() if c["scheduler"] == scheduler]:
    for seed in (S.SEED, 1):
      r64 = S.run(c, seed, float64=True)
      ref = dict(S.run(c, seed), final64=r64["final"], inputs64=r64["inputs"])
      err = _compare(c, ref, _gen(c, seed))
      if "floor" in err:
        ratio.append(err["float64"] / err["floor"])
      else:
        worst = max(worst, *err.values())
  print(f"\n{scheduler}: max difference {worst:.2e}; {len(ratio)} ill-conditioned runs, "
        f"their distance to float64 / diffusers' float32 one: max {max(ratio, default=0):.2f}")


def test_pipeline_config_builds_the_discrete_process():
  """diffusion.schedule='discrete' with a diffusion.discrete ConfigDict: the denoiser's process
  is the table, with the spacing its samplers use."""
  import ml_collections

  from gen.core.family import DataSpec
  from gen.diffusion import denoiser

  spec = importlib.util.spec_from_file_location(
      "digits_config", os.path.join(ROOT, "configs", "diffusion", "digits.py"))
  digits = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(digits)
  c = digits.get_config()
  c.diffusion.objective, c.diffusion.schedule = "eps", "discrete"
  c.diffusion.discrete = ml_collections.ConfigDict(dict(
      beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
      timestep_spacing="trailing"))
  _, process, _, cfg = denoiser.parts(c, DataSpec((8, 8, 1), 10, "scale"))
  assert isinstance(process, discrete.DiscreteProcess) and cfg.process == "discrete"
  assert process.spacing == "trailing" and process.alphas_cumprod.shape == (1000,)
  ref = discrete.alphas_cumprod_table(discrete.betas_table("scaled_linear", 1000, 0.00085,
                                                           0.012))
  np.testing.assert_array_equal(process.alphas_cumprod, ref)
