"""Discrete-time diffusion as diffusers defines it: a table of betas, timestep spacings, and
the DDIM, DDPM, Euler, Heun and DPM-Solver++(2M) schedulers step for step.

The process (`make_discrete_process`, `diffusion.schedule = "discrete"`) is a table of
`num_train_timesteps` betas, built as diffusers builds it (float32):

| beta_schedule       | betas                                                           |
|---------------------|-----------------------------------------------------------------|
| `linear`            | linspace(beta_start, beta_end, N)                               |
| `scaled_linear`     | linspace(sqrt(beta_start), sqrt(beta_end), N)^2 (latent models) |
| `squaredcos_cap_v2` | 1 - abar((k + 1) / N) / abar(k / N), at most 0.999, with        |
|                     | abar(t) = cos((t + 0.008) / 1.008 pi / 2)^2 (Nichol & Dhariwal) |

alphas_cumprod = cumprod(1 - betas). The natural time t is diffusers' timestep: at an
integer t in [0, N - 1], alpha = sqrt(alphas_cumprod[t]) and sigma = sqrt(1 - alphas_cumprod[t]);
between integers the noise level sigma / alpha is interpolated linearly in t (as diffusers'
Euler and Heun schedulers interpolate it for fractional timesteps), and t = -1 is the clean
data (alpha = 1, sigma = 0). Training draws integer t uniformly from [0, N - 1]; the network
is conditioned on cond = t / 1000, which the backbones embed at 1000 * cond = t, the timestep
diffusers' UNets embed.

Sampling grids (`timesteps`), for a step count n that may be traced:
- `leading`: (n - 1 - i) * (N // n) + steps_offset, i = 0..n-1;
- `trailing`: round(N - i N / n) - 1;
- `linspace`: round(i (N - 1) / (n - 1)) reversed (Euler and Heun keep the fractional
  values); DPM-Solver uses n + 1 points and drops the last, and `leading` with N // (n + 1),
  as diffusers does. Rounding is half to even, in exact integer arithmetic.
A fixed list of timesteps (any sampler) or of noise levels sigma / alpha ending with the final
one (Euler, Heun, DPM-Solver++; its timesteps are found by interpolating log sigma as in
diffusers' `_sigma_to_t`) replaces the spacing; the list's length is the step count.

The diffusers schedulers that step on this process are `gen.diffusion.schedulers`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gen.diffusion.process import Process

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")
TIME_SCALE = 1000.0  # The backbones embed 1000 * cond (gen.diffusion.models.TIME_SCALE).


# ------------------------------------------------------------------------------ tables


def betas_table(beta_schedule: str = "linear", num_train_timesteps: int = 1000,
                beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """diffusers' betas, float32 [N]."""
  n = int(num_train_timesteps)
  if n < 2:
    raise ValueError(f"diffusion.discrete.num_train_timesteps must be >= 2, got {n}")
  if beta_schedule == "linear":
    return _linspace32(beta_start, beta_end, n)
  if beta_schedule == "scaled_linear":
    return np.square(_linspace32(beta_start ** 0.5, beta_end ** 0.5, n))
  if beta_schedule == "squaredcos_cap_v2":
    def abar(t):
      return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)],
                    np.float32)
  raise ValueError(f"diffusion.discrete.beta_schedule must be one of "
                   f"{', '.join(BETA_SCHEDULES)}, got '{beta_schedule}'")


def _linspace32(start, end, n):
  """torch.linspace(start, end, n, dtype=float32): a float32 step, each value one fused
  multiply-add (rounded once) from the nearer end."""
  s32, e32 = np.float32(start), np.float32(end)
  step = np.float64(np.float32((e32 - s32) / np.float32(n - 1)))
  i = np.arange(n)
  return np.where(i < n // 2, np.float64(s32) + step * i,
                  np.float64(e32) - step * (n - 1 - i)).astype(np.float32)


def alphas_cumprod_table(betas: np.ndarray) -> np.ndarray:
  """cumprod(1 - betas): float32 factors, accumulated in float64 (as torch.cumprod does on
  CPU), rounded to float32."""
  alphas = (np.float32(1.0) - betas.astype(np.float32)).astype(np.float64)
  return np.cumprod(alphas).astype(np.float32)


# ----------------------------------------------------------------------------- process


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteProcess(Process):
  """A `Process` on diffusers' table, with the sampling grid settings its samplers read.

  alphas_cumprod: float32 [N]. spacing, steps_offset: the default timestep spacing.
  set_alpha_to_one: DDIM's alphas_cumprod past timestep 0 (1, else alphas_cumprod[0]).
  clip_sample: r > 0 clips x0_hat to [-r, r] in the DDIM and DDPM steps (diffusers'
  clip_sample with clip_sample_range r; DDIM's eps stays the network's).
  timesteps / sigmas: a fixed grid that replaces the spacing (None: use the spacing).
  prediction: epsilon | v_prediction | sample, the network's output.
  """

  alphas_cumprod: np.ndarray = None
  spacing: str = "leading"
  steps_offset: int = 0
  set_alpha_to_one: bool = True
  timesteps: tuple | None = None
  sigmas: tuple | None = None
  clip_sample: float = 0.0  # DDIM's and DDPM's clip of x0_hat to [-r, r]; 0: none.
  # What the network predicts, as diffusers names it: PNDM combines its outputs in that
  # parameterization (`with_prediction`; the other samplers do not depend on it).
  prediction: str = "epsilon"

  @property
  def num_train_timesteps(self) -> int:
    return int(self.alphas_cumprod.shape[0])


def _tables(ac: np.ndarray):
  """float32 tables over the extended time u = t + 1 in [0, N]: alpha, sigma, level."""
  ac = jnp.asarray(ac, jnp.float32)
  one, zero = jnp.ones((1,), jnp.float32), jnp.zeros((1,), jnp.float32)
  a = jnp.concatenate([one, jnp.sqrt(ac)])
  s = jnp.concatenate([zero, jnp.sqrt(1.0 - ac)])
  lev = jnp.concatenate([zero, jnp.sqrt((1.0 - ac) / ac)])
  return a, s, lev


def _sigmas_np(ac: np.ndarray) -> np.ndarray:
  """diffusers' noise levels ((1 - ac) / ac) ** 0.5, float32 [N]."""
  ac = ac.astype(np.float32)
  return np.sqrt((np.float32(1.0) - ac) / ac).astype(np.float32)


def make_discrete_process(beta_schedule: str = "linear", num_train_timesteps: int = 1000,
                          beta_start: float = 1e-4, beta_end: float = 0.02,
                          timestep_spacing: str = "leading", steps_offset: int = 0,
                          set_alpha_to_one: bool = True, timesteps=None, sigmas=None,
                          clip_sample: bool = False, clip_sample_range: float = 1.0
                          ) -> DiscreteProcess:
  """The process of diffusers' table (see the module docstring); arguments as diffusers'
  scheduler configs name them. Errors (ValueError) name the diffusion.discrete key."""
  if timestep_spacing not in SPACINGS:
    raise ValueError(f"diffusion.discrete.timestep_spacing must be one of "
                     f"{', '.join(SPACINGS)}, got '{timestep_spacing}'")
  if clip_sample and not clip_sample_range > 0:
    raise ValueError(f"diffusion.discrete.clip_sample_range must be > 0, got {clip_sample_range}")
  if int(steps_offset) != steps_offset or steps_offset < 0:
    raise ValueError(f"diffusion.discrete.steps_offset must be an integer >= 0, got "
                     f"{steps_offset}")
  ac = alphas_cumprod_table(betas_table(beta_schedule, num_train_timesteps, beta_start,
                                        beta_end))
  n_train = ac.shape[0]
  timesteps = fixed_grid(timesteps, "timesteps", n_train)
  sigmas = fixed_grid(sigmas, "sigmas", None)
  if timesteps is not None and sigmas is not None:
    raise ValueError("give diffusion.discrete.timesteps or diffusion.discrete.sigmas, not both")
  a_tab, s_tab, l_tab = _tables(ac)
  lev_np = np.concatenate([[0.0], _sigmas_np(ac)]).astype(np.float32)

  def alpha_sigma(t):
    t = jnp.asarray(t, jnp.float32)
    u = jnp.clip(t + 1.0, 0.0, float(n_train))
    k = jnp.clip(jnp.floor(u), 0, n_train).astype(jnp.int32)
    w = u - k
    k1 = jnp.minimum(k + 1, n_train)
    lev = l_tab[k] + w * (l_tab[k1] - l_tab[k])
    a_i = 1.0 / jnp.sqrt(lev * lev + 1.0)
    return jnp.where(w == 0, a_tab[k], a_i), jnp.where(w == 0, s_tab[k], lev * a_i)

  def t_of_level(s):
    s = jnp.asarray(s, jnp.float32)
    k = jnp.clip(jnp.searchsorted(l_tab, s, side="right") - 1, 0, n_train - 1)
    w = jnp.clip((s - l_tab[k]) / (l_tab[k + 1] - l_tab[k]), 0.0, 1.0)
    return k + w - 1.0

  def grid(i, n):
    t = ddim_timesteps(i, n, n_train, timestep_spacing, steps_offset)
    return jnp.where(i >= n, -1.0, t.astype(jnp.float32))

  def sample_t(rng, shape):
    return jax.random.randint(rng, shape, 0, n_train).astype(jnp.float32)

  return DiscreteProcess(
      "discrete", alpha_sigma, t_of_level, lambda t: t / TIME_SCALE,
      lambda c: c * TIME_SCALE, grid, sample_t, (float(lev_np[1]), float(lev_np[-1])),
      alphas_cumprod=ac, spacing=timestep_spacing, steps_offset=int(steps_offset),
      set_alpha_to_one=bool(set_alpha_to_one), timesteps=timesteps, sigmas=sigmas,
      clip_sample=float(clip_sample_range) if clip_sample else 0.0)


PREDICTIONS = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def with_prediction(process: DiscreteProcess, objective: str) -> DiscreteProcess:
  """`process` for a network trained with `objective` (eps | v | x0)."""
  return dataclasses.replace(process, prediction=PREDICTIONS.get(objective, "epsilon"))


def fixed_grid(values, name, n_train, key="diffusion.discrete."):
  if values is None or len(values) == 0:
    return None
  try:
    v = tuple(float(x) for x in np.ravel(np.asarray(values, np.float64)))
  except (TypeError, ValueError):
    raise ValueError(f"{key}{name} must be a list of numbers, got {values!r}") from None
  if n_train is not None and not all(-1 < x < n_train for x in v):
    raise ValueError(f"{key}{name} must lie in [0, {n_train - 1}], got {v}")
  if n_train is None and (len(v) < 2 or not all(x >= 0 for x in v)):
    raise ValueError(f"{key}{name} needs >= 2 values >= 0 (the last one the final noise "
                     f"level, usually 0), got {v}")
  return v


# ------------------------------------------------------------------- timestep spacings


def _round_div(num, den):
  """round(num / den) for integers >= 0, half to even, exactly (numpy or jax arrays)."""
  q, r = num // den, num % den
  up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
  return q + up.astype(q.dtype)


def _int(v):
  return jnp.asarray(v, jnp.int32)


def diffusers_timesteps(kind: str, spacing: str, n: int, n_train: int, offset: int = 0):
  """diffusers' set_timesteps in numpy (float64 arithmetic, as diffusers computes them).
  kind: ddim (DDIM, DDPM; int), karras (Euler, Heun; float32), dpm (DPM-Solver; int)."""
  if kind == "dpm":
    if spacing == "linspace":
      return np.linspace(0, n_train - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
      return (np.arange(0, n + 1) * (n_train // (n + 1))).round()[::-1][:-1].astype(
          np.int64) + offset
    return np.arange(n_train, 0, -n_train / n).round().astype(np.int64) - 1
  if kind == "karras" and spacing == "linspace":
    return np.linspace(0, n_train - 1, n, dtype=np.float32)[::-1].copy()
  if spacing == "linspace":
    t = np.linspace(0, n_train - 1, n).round()[::-1].astype(np.int64)
  elif spacing == "leading":
    t = (np.arange(0, n) * (n_train // n)).round()[::-1].astype(np.int64) + offset
  else:
    t = np.round(np.arange(n_train, 0, -n_train / n)).astype(np.int64) - 1
  return t.astype(np.float32) if kind == "karras" else t


def _exact(kind: str, spacing: str, i, n, n_train: int):
  """The rounded grids in exact integer arithmetic (numpy or jax integer arrays)."""
  if spacing == "trailing":
    return _round_div(n_train * (n - i), n) - 1
  if kind == "dpm":  # linspace over n + 1 points, the last dropped.
    return _round_div((n - i) * (n_train - 1), n)
  one = n * 0 + 1
  return _round_div((n - 1 - i) * (n_train - 1), n - 1 + (n == 1) * one) * (n > 1)


@functools.cache
def _corrections(kind: str, spacing: str, n_train: int):
  """(n, i, delta) where diffusers' float64 rounding of a tie differs from the exact one
  (trailing and linspace only; e.g. n = 48 trailing), for n = 1..n_train. int32 arrays."""
  rows = []
  for n in range(1, n_train + 1):
    ref = diffusers_timesteps(kind, spacing, n, n_train)[:n]  # (For some n, trailing gives
    i = np.arange(n)                                          # n + 1: the last is -1.)
    delta = ref - _exact(kind, spacing, i, np.int64(n), n_train)
    rows += [(n, j, d) for j, d in zip(i[delta != 0], delta[delta != 0])]
  arr = np.array(rows, np.int32).reshape(-1, 3)
  return arr[:, 0], arr[:, 1], arr[:, 2]


def _rounded(kind: str, spacing: str, i, n, n_train: int):
  t = _exact(kind, spacing, i, n, n_train)
  cn, ci, cd = (jnp.asarray(a) for a in _corrections(kind, spacing, n_train))
  hit = (n[..., None] == cn) & (i[..., None] == ci)
  return t + jnp.sum(jnp.where(hit, cd, 0), axis=-1)


def ddim_timesteps(i, n, n_train: int, spacing: str, offset: int = 0):
  """Integer timestep i of n (DDIM, DDPM), as diffusers' set_timesteps; int32."""
  i, n = _int(i), _int(n)
  i, n = jnp.broadcast_arrays(i, n)
  if spacing == "leading":
    return (n - 1 - i) * (n_train // n) + offset
  if spacing in ("trailing", "linspace"):
    return _rounded("ddim", spacing, i, n, n_train)
  raise ValueError(f"unknown timestep spacing '{spacing}'; valid: {', '.join(SPACINGS)}")


def karras_timesteps(i, n, n_train: int, spacing: str, offset: int = 0):
  """Timestep i of n (Euler, Heun), as diffusers' set_timesteps; float32 (`linspace` is
  fractional)."""
  if spacing == "linspace":
    i, n = _int(i), _int(n)
    num = ((n - 1 - i) * (n_train - 1)).astype(jnp.float32)
    return jnp.where(n > 1, num / jnp.maximum(n - 1, 1).astype(jnp.float32), 0.0)
  return ddim_timesteps(i, n, n_train, spacing, offset).astype(jnp.float32)


def dpm_timesteps(i, n, n_train: int, spacing: str, offset: int = 0):
  """Integer timestep i of n (DPM-Solver multistep), as diffusers' set_timesteps; int32."""
  i, n = jnp.broadcast_arrays(_int(i), _int(n))
  if spacing == "leading":
    return (n - i) * (n_train // (n + 1)) + offset
  return _rounded("dpm", spacing, i, n, n_train)


def interp_level(process: DiscreteProcess, t):
  """diffusers' np.interp(t, arange(N), sigmas): sigma / alpha at (fractional) t >= 0."""
  lev = jnp.asarray(_sigmas_np(process.alphas_cumprod))
  n_train = lev.shape[0]
  t = jnp.clip(jnp.asarray(t, jnp.float32), 0.0, n_train - 1.0)
  k = jnp.clip(jnp.floor(t), 0, n_train - 1).astype(jnp.int32)
  k1 = jnp.minimum(k + 1, n_train - 1)
  w = t - k
  return jnp.where(w == 0, lev[k], lev[k] + w * (lev[k1] - lev[k]))


def sigma_to_t(process: DiscreteProcess, sigma):
  """diffusers' _sigma_to_t: the timestep of a noise level, interpolating log sigma."""
  log_sigmas = jnp.log(jnp.asarray(_sigmas_np(process.alphas_cumprod)))
  n_train = log_sigmas.shape[0]
  log_sigma = jnp.log(jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-10))
  table = log_sigmas.reshape((-1,) + (1,) * log_sigma.ndim)
  low = jnp.sum(table <= log_sigma, axis=0) - 1  # The last index with log_sigmas <= it.
  low = jnp.clip(low, 0, n_train - 2)
  lo, hi = log_sigmas[low], log_sigmas[low + 1]
  w = jnp.clip((lo - log_sigma) / (lo - hi), 0.0, 1.0)
  return (1.0 - w) * low + w * (low + 1)
