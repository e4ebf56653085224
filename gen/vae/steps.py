"""The VAE family: ELBO training, IWAE evaluation, prior samples and latent interpolations.

Likelihoods, chosen by `model.likelihood` to match `data.preprocess`:
- `bernoulli` on dynamically binarized data (`binarize`), the standard binarized-MNIST setup;
- `discretized_logistic` on 8-bit data at bin centres in [-1, 1] (`scale`): a true discrete
  likelihood, reported in nats and bits/dim;
- `gaussian` on uniformly dequantized data (`dequantize`): a continuous density, reported on
  the [0, 256) scale so bits/dim is comparable with discrete models (it upper-bounds them).

Every function takes the `VAE` module first (its `likelihood`, `latent_dim` and `shape`
are the settings they need); `make` binds it, and the config values, with `functools.partial`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax

from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.nn import distributions as dist
from gen.nn.interpolate import slerp_grid
from gen.vae.models import PARAMS_PER_PIXEL, VAE

LIKELIHOOD_DATA = {"bernoulli": ("binarize", "unit"), "discretized_logistic": ("scale",),
                   "gaussian": ("dequantize",)}
MIN_LOG_SCALE = -7.0


def parts(config, spec: DataSpec) -> VAE:
  """The network of `config.model` for `spec`'s images, once the likelihood fits the data."""
  m = config.model
  if m.likelihood not in PARAMS_PER_PIXEL:
    raise ConfigError(f"model.likelihood must be one of {sorted(PARAMS_PER_PIXEL)}, "
                      f"got '{m.likelihood}'")
  if m.arch not in ("conv", "mlp"):  # (The module checks too, but only once it is applied.)
    raise ConfigError(f"model.arch must be 'conv' or 'mlp', got '{m.arch}'")
  if spec.preprocess not in LIKELIHOOD_DATA[m.likelihood]:
    raise ConfigError(f"model.likelihood='{m.likelihood}' needs data.preprocess in "
                      f"{LIKELIHOOD_DATA[m.likelihood]}, got '{spec.preprocess}'")
  return VAE(spec.shape, tuple(m.channels), m.hidden, m.latent_dim, m.likelihood,
             arch=m.arch, mlp_depth=m.mlp_depth)


def num_dims(model: VAE) -> int:
  return math.prod(model.shape)


def nats_offset(model: VAE) -> float:
  """Continuous densities in [-1, 1) are moved to the [0, 256) scale: log 128 per dim."""
  return num_dims(model) * math.log(128.0) if model.likelihood == "gaussian" else 0.0


def log_px(model: VAE, params, z, x):
  """log p(x | z), summed over pixels: [B]."""
  out = model.apply({"params": params}, z, method=VAE.decode)
  if model.likelihood == "bernoulli":
    lp = dist.bernoulli_log_prob(out[..., 0], x)
  else:
    mean, log_scale = out[..., 0], jnp.maximum(out[..., 1], MIN_LOG_SCALE)
    if model.likelihood == "discretized_logistic":
      lp = dist.discretized_logistic_log_prob(x, mean, log_scale)
    else:
      lp = dist.gaussian_log_prob(x, mean, log_scale)
  return lp.reshape(lp.shape[0], -1).sum(-1)


def decode_mean(model: VAE, params, z):
  """The decoder's mean image for latents z: [B, H, W, C] in the data space."""
  out = model.apply({"params": params}, z, method=VAE.decode)
  if model.likelihood == "bernoulli":
    return jax.nn.sigmoid(out[..., 0])
  return jnp.clip(out[..., 0], -1.0, 1.0)


def encode(model: VAE, params, x):
  """The posterior's mean and log-variance: ([B, L], [B, L])."""
  return model.apply({"params": params}, x, method=VAE.encode)


def elbo_terms(model: VAE, params, x, rng):
  """Per-example reconstruction log-likelihood and KL (nats): ([B], [B])."""
  mean, logvar = encode(model, params, x)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
  recon = log_px(model, params, z, x) - nats_offset(model)
  kl = dist.gaussian_kl_standard(mean, logvar).sum(-1)
  return recon, kl


def iwae_nll(model: VAE, params, x, rng, k: int, max_batch: int):
  """-log p(x) upper bound from k importance samples (Burda et al. 2016): [B] nats.

  Samples are drawn in chunks inside a `lax.scan`, with a running log-sum-exp, so memory
  stays at `max_batch` decoder inputs (`eval.iwae_batch`) whatever k is.
  """
  b = x.shape[0]
  chunk = max(1, min(k, max_batch // b))
  n_chunks = -(-k // chunk)
  mean, logvar = encode(model, params, x)
  std = jnp.exp(0.5 * logvar)

  def body(carry, c):
    run_max, run_sum = carry
    # Sample j always uses key fold_in(rng, j): the bound does not depend on `chunk`.
    idx = c * chunk + jnp.arange(chunk)
    eps = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(rng, j), mean.shape))(idx)
    z = mean + std * eps
    log_q = (dist.standard_normal_log_prob(eps) - 0.5 * logvar).sum(-1)
    log_pz = dist.standard_normal_log_prob(z).sum(-1)
    xs = jnp.broadcast_to(x, (chunk,) + x.shape).reshape((chunk * b,) + x.shape[1:])
    lpx = log_px(model, params, z.reshape(chunk * b, -1), xs).reshape(chunk, b)
    lw = lpx + log_pz - log_q
    valid = idx[:, None] < k  # The last chunk may overshoot k.
    lw = jnp.where(valid, lw, -jnp.inf)
    new_max = jnp.maximum(run_max, lw.max(0))
    run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.exp(lw - new_max).sum(0)
    return (new_max, run_sum), None

  init = (jnp.full((b,), -jnp.inf), jnp.zeros((b,)))
  (run_max, run_sum), _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
  log_px_bound = run_max + jnp.log(run_sum) - math.log(k)
  return -(log_px_bound - nats_offset(model))


def init(model: VAE, tx: optax.GradientTransformation, ema_decay: float, rng, batch):
  params = model.init(rng, batch["image"][:1], jax.random.key(0))["params"]
  return TrainState.create(params, tx, ema_decay)


def train_step(model: VAE, beta: float, state, batch, rng):
  """One step on the beta-weighted negative ELBO, -recon + beta * KL."""
  x = batch["image"]

  def loss_fn(params):
    recon, kl = elbo_terms(model, params, x, rng)
    loss = jnp.mean(-recon + beta * kl)
    return loss, (recon, kl)

  (loss, (recon, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  nelbo = jnp.mean(kl - recon)
  metrics = {"loss": loss, "nelbo": nelbo, "kl": jnp.mean(kl),
             "bpd": dist.bits_per_dim(nelbo, num_dims(model)),
             "grad_norm": jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))}
  return state.apply_gradients(grads), metrics


def eval_step(model: VAE, k: int, iwae_batch: int, state, batch, rng):
  """Per-example negative ELBO and KL, and with k > 0 the IWAE bound from k samples."""
  params = state.sample_params
  x = batch["image"]
  r1, r2 = jax.random.split(rng)
  recon, kl = elbo_terms(model, params, x, r1)
  nelbo = kl - recon
  out = {"nelbo": nelbo, "kl": kl, "nelbo_bpd": dist.bits_per_dim(nelbo, num_dims(model))}
  if k > 0:
    nll = iwae_nll(model, params, x, r2, k, iwae_batch)
    out.update(iwae_nll=nll, iwae_bpd=dist.bits_per_dim(nll, num_dims(model)))
  return out


def sample(model: VAE, params, rng, num):
  """Decoder means of `num` prior draws: [num, H, W, C]."""
  z = jax.random.normal(rng, (num, model.latent_dim))
  return decode_mean(model, params, z)


def visualize(model: VAE, state, batch, rng):
  """Reconstructions, [2, n, H, W, C]: a row of originals above their reconstructions; and
  slerp interpolations, [n, 12, H, W, C]: per row an original, ten decoded points on the
  path between the two posterior means, and the other original."""
  del rng
  params = state.sample_params
  x = batch["image"]
  n = min(8, x.shape[0] // 2)
  mean, _ = encode(model, params, x[:2 * n])
  recon = decode_mean(model, params, mean[:n])
  rows = jnp.stack([x[:n], recon])
  steps = 10
  path = slerp_grid(mean[:n], mean[n:2 * n], steps)  # [n, steps, L]
  mid = decode_mean(model, params, path.reshape(n * steps, -1)).reshape((n, steps) + x.shape[1:])
  interp = jnp.concatenate([x[:n, None], mid, x[n:2 * n, None]], axis=1)
  return {"reconstructions": rows, "interpolations": interp}


def make(config, spec: DataSpec) -> Pipeline:
  ev = config.eval
  model = parts(config, spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(
      init=functools.partial(init, model, tx, config.optim.ema_decay),
      train_step=functools.partial(train_step, model, config.model.beta),
      eval_step=functools.partial(eval_step, model, ev.iwae_k_train, ev.iwae_batch),
      sample=functools.partial(sample, model),
      final_eval_step=functools.partial(eval_step, model, ev.iwae_k, ev.iwae_batch),
      visualize=functools.partial(visualize, model))
