"""diffusers' schedulers on a discrete process, step for step: DDIM, DDPM, PNDM (PLMS),
EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete and DPMSolverMultistep (dpmsolver++ 2M).

These are the samplers of a `discrete` process (`gen.diffusion.discrete`: diffusers' table of
betas and its timestep spacings); `gen.diffusion.sampling` picks this table for such a
process, `gen.diffusion.samplers` for the continuous ones. Each name is one algorithm here:
diffusers' scheduler of that name.

They follow diffusers'
step functions operation for operation. Their denoiser returns x0_hat or the pair
(x0_hat, eps_hat): the pipeline's (`make_denoiser(with_eps=True)`) gives eps_hat from the
network's raw output, as diffusers uses it; from x0_hat alone eps_hat = (x - alpha x0_hat) /
sigma (taken before any clip_sample; the same numbers to float32 rounding).
- `ddim`: DDIMScheduler (with `clip_sample`, x0_hat clipped to [-clip_sample_range,
  clip_sample_range] and eps left as the network's, as diffusers does unless
  use_clipped_model_output); the previous timestep is t - N // n (diffusers' rule, whatever the
  spacing; with a fixed list, the next entry), and past 0 alphas_cumprod is 1
  (`set_alpha_to_one`) or alphas_cumprod[0]. eta scales the noise (eta = 1 with the same
  noise is DDPM-like). Starts from x = noise.
- `ddpm`: DDPMScheduler ("fixed_small" variance, x0_hat clipped with `clip_sample`, the next timestep of the grid, no noise at
  t = 0).
- `pndm`: PNDMScheduler with `skip_prk_steps` (PLMS, as Stable Diffusion 1.x ships it): n + 1
  network calls on the grid t_0, t_1, t_1, t_2, ..., t_{n-1} (one call for n = 1); the second
  call redoes the first step with the mean of both outputs, then Adams-Bashforth of order 2,
  3 and 4 on the last outputs; the previous timestep is t - N // n (whatever the spacing), past
  0 alphas_cumprod is 1 (`set_alpha_to_one`) or alphas_cumprod[0]. Its outputs are combined
  in the network's own parameterization (eps, or v for a v-prediction process, converted at
  the step's timestep and sample as diffusers does). Starts from x = noise.
- `euler`, `heun`: EulerDiscreteScheduler / HeunDiscreteScheduler in the coordinates
  x / alpha, starting from sigma_max * noise (`linspace`, `trailing`) or
  sqrt(sigma_max^2 + 1) * noise (`leading`), the final sigma 0; `euler` takes S_churn.
- `euler_a`: EulerAncestralDiscreteScheduler, the same start and grid: a step to sigma_down and
  noise of sigma_up, sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2.
- `dpmpp_2m`: DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint), first order at
  the first and the last step (final sigma 0). Starts from x = noise.
Each returns the clean sample; each is one `lax.fori_loop`, the step count traced. All but
heun also start from an image's latents (`init`, img2img): diffusers' add_noise of `init` and
`noise` at step `start` (a traced index), then the steps from there, as the img2img pipelines
run them (`IMG2IMG`). Noise (ddpm,
ddim with eta > 0, euler with churn, euler_a) is normal(fold_in(rng, i)) at step i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gen.diffusion.discrete import (DiscreteProcess, ddim_timesteps, dpm_timesteps,
                                    fixed_grid, interp_level, karras_timesteps, sigma_to_t)
from gen.diffusion.process import Process


def _int(v):
  return jnp.asarray(v, jnp.int32)


def check_grid(process: DiscreteProcess, sampler: str, timesteps=None, sigmas=None) -> int:
  """Errors (ValueError, naming the --timesteps / --sigmas flags) unless `sampler` can take
  this fixed grid on `process`; returns its step count. Traced arrays are checked by shape."""
  if timesteps is not None and sigmas is not None:
    raise ValueError("give --timesteps or --sigmas, not both")
  if sampler not in SAMPLERS:
    raise ValueError(f"--timesteps and --sigmas apply to the {', '.join(SAMPLERS)} samplers "
                     f"of a discrete process, not '{sampler}'")
  if sigmas is not None and sampler in ("ddim", "ddpm"):
    raise ValueError(f"{sampler} takes a list of --timesteps, not of --sigmas")
  name, values = ("timesteps", timesteps) if timesteps is not None else ("sigmas", sigmas)
  if isinstance(values, (list, tuple)) and any(isinstance(x, jax.core.Tracer) for x in values):
    values = jnp.stack([jnp.asarray(x, jnp.float32) for x in values])
  if isinstance(values, jax.core.Tracer):
    if values.ndim != 1 or values.shape[0] < (1 if name == "timesteps" else 2):
      raise ValueError(f"--{name} must be a list, got an array of shape {values.shape}")
    return int(values.shape[0]) - (name == "sigmas")
  v = fixed_grid(values, name, process.num_train_timesteps if name == "timesteps" else None,
             key="--")
  if v is None:
    raise ValueError(f"--{name} is empty")
  return len(v) - (name == "sigmas")


def _grid(process: DiscreteProcess, steps, timesteps, sigmas, kind: str):
  """(n, t_of(i), level_of(i) or None, fixed) for a sampler: the step count and functions of
  the step index i (level_of(n) is the final level). kind: ddim | karras | dpm."""
  timesteps = process.timesteps if timesteps is None and sigmas is None else timesteps
  sigmas = process.sigmas if timesteps is None and sigmas is None else sigmas
  n_train = process.num_train_timesteps
  if sigmas is not None:
    if kind == "ddim":
      raise ValueError("ddim and ddpm take a list of timesteps, not of sigmas")
    sig = jnp.asarray(sigmas, jnp.float32)
    n = sig.shape[0] - 1
    ts = sigma_to_t(process, sig[:-1])
    return n, (lambda i: ts[jnp.minimum(i, n - 1)]), (lambda i: sig[i]), True
  if timesteps is not None:
    ts = jnp.asarray(timesteps, jnp.float32)
    if kind != "karras":
      ts = jnp.round(ts)
    n = ts.shape[0]
    t_of = lambda i: ts[jnp.minimum(i, n - 1)]
    return n, t_of, (lambda i: jnp.where(i >= n, 0.0, interp_level(process, t_of(i)))), True
  fn = {"ddim": ddim_timesteps, "karras": karras_timesteps, "dpm": dpm_timesteps}[kind]

  def t_of(i):
    return fn(i, steps, n_train, process.spacing, process.steps_offset).astype(jnp.float32)

  return (steps, t_of, lambda i: jnp.where(i >= steps, 0.0, interp_level(process, t_of(i))),
          False)


def _eps(denoise, process: Process, x, t):
  """(x0_hat, eps_hat) at (x, t): the denoiser's pair, or from x0_hat alone eps_hat =
  (x - alpha x0_hat) / sigma."""
  out = denoise(x, t)
  if isinstance(out, tuple):
    return out
  a, s = process.alpha_sigma(t)
  return out, (x - a * out) / s


def _zero(v) -> bool:
  """A noise scale known to be 0 while tracing: the step draws no noise (and ignores rng)."""
  return isinstance(v, (int, float)) and v == 0


def _clipped(process: DiscreteProcess, x0):
  r = process.clip_sample
  return jnp.clip(x0, -r, r) if r else x0


def _noise(rng, i, shape):
  return jax.random.normal(jax.random.fold_in(rng, i), shape)


def _vp_noised(process: DiscreteProcess, t, init, noise):
  """DDPM / DDIM / PNDM's add_noise at integer timestep t: sqrt(ac) init + sqrt(1 - ac) noise."""
  a = jnp.asarray(process.alphas_cumprod, jnp.float32)[jnp.asarray(t).astype(jnp.int32)]
  return a ** 0.5 * init + (1 - a) ** 0.5 * noise


# ------------------------------------------------------------------------- samplers


def ddim(denoise, process: DiscreteProcess, noise, rng, steps, eta=0.0, timesteps=None,
         init=None, start=0):
  """DDIMScheduler.step over the grid, from x = noise; returns the clean sample. With `init`
  (img2img), from add_noise(init, noise) at step `start` (may be traced) on."""
  n, t_of, _, fixed = _grid(process, steps, timesteps, None, "ddim")
  ac = jnp.asarray(process.alphas_cumprod, jnp.float32)
  final = jnp.float32(1.0) if process.set_alpha_to_one else ac[0]
  ratio = process.num_train_timesteps // _int(n)

  def body(i, x):
    t = t_of(i)
    prev = jnp.where(i + 1 >= n, -1.0, t_of(i + 1)) if fixed else t - ratio
    ti, pi = t.astype(jnp.int32), prev.astype(jnp.int32)
    a_t = ac[ti]
    a_p = jnp.where(pi >= 0, ac[jnp.maximum(pi, 0)], final)
    x0, eps = _eps(denoise, process, x, t)
    x0 = _clipped(process, x0)
    variance = (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
    std = eta * variance ** 0.5
    x_prev = a_p ** 0.5 * x0 + (1 - a_p - std ** 2) ** 0.5 * eps
    return x_prev if _zero(eta) else x_prev + std * _noise(rng, i, x.shape)

  x = noise if init is None else _vp_noised(process, t_of(start), init, noise)
  return jax.lax.fori_loop(start, n, body, x)


def ddpm(denoise, process: DiscreteProcess, noise, rng, steps, timesteps=None, init=None,
         start=0):
  """DDPMScheduler.step ("fixed_small") over the grid, from x = noise (or `init` noised at
  step `start`, as ddim)."""
  n, t_of, _, _ = _grid(process, steps, timesteps, None, "ddim")
  ac = jnp.asarray(process.alphas_cumprod, jnp.float32)

  def body(i, x):
    t = t_of(i)
    prev = jnp.where(i + 1 >= n, -1, t_of(i + 1).astype(jnp.int32))
    a_t = ac[t.astype(jnp.int32)]
    a_p = jnp.where(prev >= 0, ac[jnp.maximum(prev, 0)], 1.0)
    beta_t, beta_p = 1 - a_t, 1 - a_p
    cur_alpha = a_t / a_p
    cur_beta = 1 - cur_alpha
    x0 = _clipped(process, _eps(denoise, process, x, t)[0])
    mean = (a_p ** 0.5 * cur_beta) / beta_t * x0 + cur_alpha ** 0.5 * beta_p / beta_t * x
    variance = jnp.maximum(beta_p / beta_t * cur_beta, 1e-20)
    return mean + jnp.where(t > 0, variance ** 0.5, 0.0) * _noise(rng, i, x.shape)

  x = noise if init is None else _vp_noised(process, t_of(start), init, noise)
  return jax.lax.fori_loop(start, n, body, x)


def pndm(denoise, process: DiscreteProcess, noise, rng, steps, init=None, start=0):
  """PNDMScheduler.step_plms with skip_prk_steps over the grid, from x = noise; with `init`
  (img2img) from add_noise(init, noise) at call `start` of the n + 1 (may be traced), the
  multistep history starting there, as diffusers' scheduler does."""
  del rng
  n = _int(steps)
  n_train = process.num_train_timesteps
  ac = jnp.asarray(process.alphas_cumprod, jnp.float32)
  final = jnp.float32(1.0) if process.set_alpha_to_one else ac[0]
  ratio = n_train // n
  v_pred = process.prediction == "v_prediction"

  def grid(j):
    return ddim_timesteps(j, n, n_train, process.spacing, process.steps_offset)

  def prev_sample(sample, t, prev, out):  # _get_prev_sample, t and prev int32.
    a_t = ac[jnp.clip(t, 0, n_train - 1)]
    a_p = jnp.where(prev >= 0, ac[jnp.clip(prev, 0, n_train - 1)], final)
    b_t, b_p = 1 - a_t, 1 - a_p
    if v_pred:
      out = (a_t ** 0.5) * out + (b_t ** 0.5) * sample
    coeff = (a_p / a_t) ** 0.5
    denom = a_t * b_p ** 0.5 + (a_t * b_t * a_p) ** 0.5
    return coeff * sample - (a_p - a_t) * out / denom

  def call_t(k):  # t_0, t_1, t_1, t_2, ...: calls 0, 1, 2, 3.
    return grid(jnp.where(k >= 2, k - 1, k))

  def body(j, carry):
    x, cur, e1, e2, e3 = carry  # e1, e2, e3: ets[-1], ets[-2], ets[-3].
    t = call_t(j)
    k = j - start  # diffusers' counter.
    x0, eps = _eps(denoise, process, x, t.astype(jnp.float32))
    if v_pred:  # The network's v: alpha eps - sigma x0.
      a, s = process.alpha_sigma(t.astype(jnp.float32))
      out = a * eps - s * x0
    else:
      out = eps
    count = jnp.where(k == 0, 1, jnp.minimum(k, 4))  # len(ets) after this call's append.
    multistep = jnp.select(
        [count == 1, count == 2, count == 3],
        [out, (3 * out - e1) / 2, (23 * out - 16 * e1 + 5 * e2) / 12],
        (1 / 24) * (55 * out - 59 * e1 + 37 * e2 - 9 * e3))
    second = k == 1  # Redo the first step with the mean of both outputs.
    mixed = jnp.where(second, (out + e1) / 2, multistep)
    sample = jnp.where(second, cur, x)
    t_step = jnp.where(second, t + ratio, t)
    prev = jnp.where(second, t, t - ratio)
    x_next = prev_sample(sample, t_step, prev, mixed)
    ets = (jnp.where(second, e1, out), jnp.where(second, e2, e1), jnp.where(second, e3, e2))
    return x_next, jnp.where(k == 0, x, cur), *ets

  zero = jnp.zeros_like(noise)
  calls = n + (n > 1).astype(jnp.int32)
  x = noise if init is None else _vp_noised(process, call_t(start), init, noise)
  return jax.lax.fori_loop(start, calls, body, (x, zero, zero, zero, zero))[0]


def _karras_start(process: DiscreteProcess, level_of, n, fixed):
  """init_noise_sigma of diffusers' Euler / Heun schedulers."""
  if fixed:
    top = jnp.max(jax.vmap(level_of)(jnp.arange(n + 1)))
  else:
    top = level_of(0)
  return top if process.spacing in ("linspace", "trailing") else (top ** 2 + 1) ** 0.5


def _karras_x(process, level_of, n, fixed, noise, init, start):
  """Euler's and Euler ancestral's start: init_noise_sigma * noise, or with `init` (img2img)
  add_noise: init + sigma_start * noise."""
  if init is None:
    return _karras_start(process, level_of, n, fixed) * noise
  return init + noise * level_of(start)


def euler(denoise, process: DiscreteProcess, noise, rng, steps, churn=0.0, s_noise=1.0,
          timesteps=None, sigmas=None, init=None, start=0):
  """EulerDiscreteScheduler.step, in x / alpha; churn is its s_churn (s_tmin 0, s_tmax inf).
  With `init`, img2img from step `start` (may be traced)."""
  n, t_of, level_of, fixed = _grid(process, steps, timesteps, sigmas, "karras")
  gamma = jnp.minimum(churn / n, 2 ** 0.5 - 1)

  def body(i, x):
    s, s_next, t = level_of(i), level_of(i + 1), t_of(i)
    s_hat = s * (gamma + 1)
    if not _zero(churn):
      z = _noise(rng, i, x.shape) * s_noise
      x = jnp.where(gamma > 0, x + z * jnp.maximum(s_hat ** 2 - s ** 2, 0.0) ** 0.5, x)
    _, eps = _eps(denoise, process, x / (s ** 2 + 1) ** 0.5, t)
    pred = x - s_hat * eps
    d = (x - pred) / s_hat
    return x + d * (s_next - s_hat)

  x = _karras_x(process, level_of, n, fixed, noise, init, start)
  return jax.lax.fori_loop(start, n, body, x)


def euler_a(denoise, process: DiscreteProcess, noise, rng, steps, timesteps=None, sigmas=None,
            init=None, start=0):
  """EulerAncestralDiscreteScheduler.step, in x / alpha: to sigma_down, plus sigma_up noise.
  With `init`, img2img from step `start` (may be traced)."""
  n, t_of, level_of, fixed = _grid(process, steps, timesteps, sigmas, "karras")

  def body(i, x):
    s, s_to = level_of(i), level_of(i + 1)
    _, eps = _eps(denoise, process, x / (s ** 2 + 1) ** 0.5, t_of(i))
    pred = x - s * eps
    up = (s_to ** 2 * (s ** 2 - s_to ** 2) / s ** 2) ** 0.5
    down = (s_to ** 2 - up ** 2) ** 0.5
    d = (x - pred) / s
    x = x + d * (down - s)
    return x + _noise(rng, i, x.shape) * up

  x = _karras_x(process, level_of, n, fixed, noise, init, start)
  return jax.lax.fori_loop(start, n, body, x)


def heun(denoise, process: DiscreteProcess, noise, rng, steps, churn=0.0, timesteps=None,
         sigmas=None):
  """HeunDiscreteScheduler: n - 1 Heun steps and a last Euler step to sigma 0, in x / alpha."""
  del rng
  if not (isinstance(churn, (int, float)) and churn == 0):
    raise ValueError("diffusers' Heun scheduler has no churn: --churn applies to euler here")
  n, t_of, level_of, fixed = _grid(process, steps, timesteps, sigmas, "karras")

  def derivative(x, s, t):
    _, eps = _eps(denoise, process, x / (s ** 2 + 1) ** 0.5, t)
    pred = x - s * eps
    return (x - pred) / s

  def body(i, x):
    s, s_next = level_of(i), level_of(i + 1)
    d = derivative(x, s, t_of(i))
    dt = s_next - s
    x_next = x + d * dt

    def second(_):
      d2 = derivative(x_next, s_next, t_of(i + 1))
      return x + (d + d2) / 2 * dt

    return jax.lax.cond(i + 1 < n, second, lambda _: x_next, None)

  return jax.lax.fori_loop(0, n, body, _karras_start(process, level_of, n, fixed) * noise)


def dpmpp_2m(denoise, process: DiscreteProcess, noise, rng, steps, timesteps=None,
             sigmas=None, init=None, start=0):
  """DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint, final sigma 0), from
  x = noise: first order at the first and the last step. With `init` (img2img), from
  add_noise(init, noise) = alpha init + sigma noise at step `start` (may be traced) on."""
  del rng
  n, t_of, level_of, _ = _grid(process, steps, timesteps, sigmas, "dpm")

  def vp(s):  # _sigma_to_alpha_sigma_t, and lambda = log alpha - log sigma.
    a = 1 / (s ** 2 + 1) ** 0.5
    sv = s * a
    return a, sv, jnp.log(a) - jnp.log(sv)

  def body(i, carry):
    x, m_prev = carry
    a_s, s_s, l_s = vp(level_of(i))
    a_t, s_t, l_t = vp(level_of(i + 1))
    _, _, l_p = vp(level_of(jnp.maximum(i - 1, 0)))
    _, eps = _eps(denoise, process, x, t_of(i))
    m = (x - s_s * eps) / a_s
    h = l_t - l_s
    first = (s_t / s_s) * x - (a_t * (jnp.exp(-h) - 1.0)) * m
    r0 = (l_s - l_p) / h
    d1 = (1.0 / r0) * (m - m_prev)
    second = ((s_t / s_s) * x - (a_t * (jnp.exp(-h) - 1.0)) * m
              - 0.5 * (a_t * (jnp.exp(-h) - 1.0)) * d1)
    return jnp.where((i == start) | (i == n - 1), first, second), m

  if init is None:
    x = noise
  else:
    a0, s0, _ = vp(level_of(start))
    x = a0 * init + s0 * noise
  x, _ = jax.lax.fori_loop(start, n, body, (x, jnp.zeros_like(noise)))
  return x


SAMPLERS = {"ddim": ddim, "ddpm": ddpm, "pndm": pndm, "euler": euler, "euler_a": euler_a,
            "heun": heun, "dpmpp_2m": dpmpp_2m}
# The options each takes besides (denoise, process, noise, rng, steps).
OPTIONS = {"ddim": ("eta", "timesteps"), "ddpm": ("timesteps",), "pndm": (),
           "euler": ("churn", "timesteps", "sigmas"), "euler_a": ("timesteps", "sigmas"),
           "heun": ("churn", "timesteps", "sigmas"), "dpmpp_2m": ("timesteps", "sigmas")}
# The samplers that start from an image (init, start): all but heun.
IMG2IMG = ("ddim", "ddpm", "pndm", "euler", "euler_a", "dpmpp_2m")
# The denoiser these steps want: (x0_hat, eps_hat), eps_hat the network's own.
WITH_EPS = True
