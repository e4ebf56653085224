"""The VAE family: ELBO training, IWAE evaluation, prior samples and latent interpolations.

Likelihoods, chosen by `model.likelihood` to match `data.preprocess`:
- `bernoulli` on dynamically binarized data (`binarize`), the standard binarized-MNIST setup;
- `discretized_logistic` on 8-bit data at bin centres in [-1, 1] (`scale`): a true discrete
  likelihood, reported in nats and bits/dim;
- `gaussian` on uniformly dequantized data (`dequantize`): a continuous density, reported on
  the [0, 256) scale so bits/dim is comparable with discrete models (it upper-bounds them).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gen.core.config import ConfigError
from gen.core.pipeline import DataSpec, Pipeline, TrainState, make_optimizer
from gen.nn import distributions as dist
from gen.nn.interpolate import slerp_grid
from gen.vae.models import PARAMS_PER_PIXEL, VAE

LIKELIHOOD_DATA = {"bernoulli": ("binarize", "unit"), "discretized_logistic": ("scale",),
                   "gaussian": ("dequantize",)}
MIN_LOG_SCALE = -7.0


def make(config, spec: DataSpec) -> Pipeline:
  m, ev = config.model, config.eval
  if m.likelihood not in PARAMS_PER_PIXEL:
    raise ConfigError(f"model.likelihood must be one of {sorted(PARAMS_PER_PIXEL)}, "
                     f"got '{m.likelihood}'")
  if spec.preprocess not in LIKELIHOOD_DATA[m.likelihood]:
    raise ConfigError(f"model.likelihood='{m.likelihood}' needs data.preprocess in "
                     f"{LIKELIHOOD_DATA[m.likelihood]}, got '{spec.preprocess}'")
  model = VAE(spec.shape, tuple(m.channels), m.hidden, m.latent_dim, m.likelihood,
              arch=m.arch, mlp_depth=m.mlp_depth)
  tx = make_optimizer(config.optim, config.train.num_steps)
  num_dims = math.prod(spec.shape)
  # Continuous densities in [-1, 1) are moved to the [0, 256) scale: log 128 per dim.
  nats_offset = num_dims * math.log(128.0) if m.likelihood == "gaussian" else 0.0

  def log_px(params, z, x):
    """log p(x | z), summed over pixels: [B]."""
    out = model.apply({"params": params}, z, method=VAE.decode)
    if m.likelihood == "bernoulli":
      lp = dist.bernoulli_log_prob(out[..., 0], x)
    else:
      mean, log_scale = out[..., 0], jnp.maximum(out[..., 1], MIN_LOG_SCALE)
      if m.likelihood == "discretized_logistic":
        lp = dist.discretized_logistic_log_prob(x, mean, log_scale)
      else:
        lp = dist.gaussian_log_prob(x, mean, log_scale)
    return lp.reshape(lp.shape[0], -1).sum(-1)

  def decode_mean(params, z):
    out = model.apply({"params": params}, z, method=VAE.decode)
    if m.likelihood == "bernoulli":
      return jax.nn.sigmoid(out[..., 0])
    return jnp.clip(out[..., 0], -1.0, 1.0)

  def encode(params, x):
    return model.apply({"params": params}, x, method=VAE.encode)

  def elbo_terms(params, x, rng):
    """Per-example reconstruction log-likelihood and KL (nats): ([B], [B])."""
    mean, logvar = encode(params, x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    recon = log_px(params, z, x) - nats_offset
    kl = dist.gaussian_kl_standard(mean, logvar).sum(-1)
    return recon, kl

  def iwae_nll(params, x, rng, k: int, max_batch: int | None = None):
    """-log p(x) upper bound from k importance samples (Burda et al. 2016): [B] nats.

    Samples are drawn in chunks inside a `lax.scan`, with a running log-sum-exp, so memory
    stays at `eval.iwae_batch` decoder inputs whatever k is.
    """
    b = x.shape[0]
    chunk = max(1, min(k, (max_batch or ev.iwae_batch) // b))
    n_chunks = -(-k // chunk)
    mean, logvar = encode(params, x)
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
      lpx = log_px(params, z.reshape(chunk * b, -1), xs).reshape(chunk, b)
      lw = lpx + log_pz - log_q
      valid = idx[:, None] < k  # The last chunk may overshoot k.
      lw = jnp.where(valid, lw, -jnp.inf)
      new_max = jnp.maximum(run_max, lw.max(0))
      run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.exp(lw - new_max).sum(0)
      return (new_max, run_sum), None

    init = (jnp.full((b,), -jnp.inf), jnp.zeros((b,)))
    (run_max, run_sum), _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    log_px_bound = run_max + jnp.log(run_sum) - math.log(k)
    return -(log_px_bound - nats_offset)

  def init(rng, batch):
    params = model.init(rng, batch["image"][:1], jax.random.key(0))["params"]
    return TrainState.create(params, tx, config.optim.ema_decay)

  def train_step(state, batch, rng):
    x = batch["image"]

    def loss_fn(params):
      recon, kl = elbo_terms(params, x, rng)
      loss = jnp.mean(-recon + m.beta * kl)
      return loss, (recon, kl)

    (loss, (recon, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    nelbo = jnp.mean(kl - recon)
    metrics = {"loss": loss, "nelbo": nelbo, "kl": jnp.mean(kl),
               "bpd": dist.bits_per_dim(nelbo, num_dims),
               "grad_norm": jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))}
    return state.apply_gradients(grads), metrics

  def make_eval(k: int):
    def eval_step(state, batch, rng):
      params = state.sample_params
      x = batch["image"]
      r1, r2 = jax.random.split(rng)
      recon, kl = elbo_terms(params, x, r1)
      nelbo = kl - recon
      out = {"nelbo": nelbo, "kl": kl, "nelbo_bpd": dist.bits_per_dim(nelbo, num_dims)}
      if k > 0:
        nll = iwae_nll(params, x, r2, k)
        out.update(iwae_nll=nll, iwae_bpd=dist.bits_per_dim(nll, num_dims))
      return out
    return eval_step

  def sample(params, rng, num):
    z = jax.random.normal(rng, (num, m.latent_dim))
    return decode_mean(params, z)

  def visualize(state, batch, rng):
    """Reconstructions (originals above their reconstructions) and slerp interpolations."""
    params = state.sample_params
    x = batch["image"]
    n = min(8, x.shape[0] // 2)
    mean, _ = encode(params, x[:2 * n])
    recon = decode_mean(params, mean[:n])
    rows = jnp.concatenate([x[:n], recon])  # A row of originals, then their reconstructions.
    steps = 10
    path = slerp_grid(mean[:n], mean[n:2 * n], steps)  # [n, steps, L]
    mid = decode_mean(params, path.reshape(n * steps, -1)).reshape((n, steps) + x.shape[1:])
    interp = jnp.concatenate([x[:n, None], mid, x[n:2 * n, None]], axis=1)
    return {"reconstructions": (rows, n),
            "interpolations": (interp.reshape((-1,) + x.shape[1:]), steps + 2)}

  return Pipeline(init=init, train_step=train_step, eval_step=make_eval(ev.iwae_k_train),
                  sample=sample, final_eval_step=make_eval(ev.iwae_k), visualize=visualize,
                  functions={"elbo_terms": elbo_terms, "iwae_nll": iwae_nll, "log_px": log_px,
                             "encode": encode, "decode_mean": decode_mean})
