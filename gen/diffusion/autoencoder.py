"""A KL-regularized convolutional autoencoder: the canvas of latent diffusion.

`model.kind = "autoencoder"` trains LDM's first stage (Rombach et al. 2022, the "KL-f" models)
at the size of the data here: an encoder from images [H, W, C] to a diagonal Gaussian
posterior over latents [(H + 2 pad) / f, (W + 2 pad) / f, c], f = 2^(levels - 1), and a
decoder back. `model.autoencoder.pad` pads the image (edge values) before encoding and the
decoder crops it off, so 28 x 28 digits give an 8 x 8 latent at f = 4 that a UNet can halve.

The loss per example is the reconstruction error (`model.autoencoder.loss`: l1 or l2, the
mean over pixels) + `kl_weight` * KL(q(z | x) || N(0, I)) summed over latent dimensions and
divided by the number of pixels: LDM's weighting of a summed NLL and a summed KL, per pixel.
With `disc_weight` > 0 a patch discriminator (PatchGAN, Isola et al. 2017) joins from step
`disc_start`: hinge loss for the discriminator, -disc_weight * D(x_hat) for the decoder, as
in LDM (with a fixed weight where LDM adapts it to the gradient norms). Both networks share
one optimizer over `{"ae", "disc"}`; Adam's updates are per parameter, so this is two Adams
with the same settings, and the discriminator's gradient is zero before `disc_start`.

`eval_step` reports, per test image, the reconstruction `mse` (data range [-1, 1]), `psnr` (dB
on the [0, 1] pixel range), `l1`, the `kl` in nats, and the root mean square of each latent
channel's posterior mean (`latent_rms_c{i}`): the scale a latent diffusion run divides out
(`gen.diffusion.latent` measures it exactly on a fixed batch). `visualize` draws test images
over their reconstructions, row by row.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gen.core import xla
from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.diffusion.models import num_groups as _groups
from gen.nn.conv import UpsampleConv
from gen.nn.distributions import gaussian_kl_standard
from gen.nn.norm import GroupNorm

LOSSES = ("l1", "l2")
LOGVAR_RANGE = (-30.0, 20.0)  # LDM clamps the posterior's log-variance to this range.


class Res(nn.Module):
  """GroupNorm, SiLU, conv, twice, plus the input (a 1x1 conv when the width changes)."""

  features: int
  groups: int

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.features, (3, 3))(nn.silu(GroupNorm(_groups(x.shape[-1], self.groups))(x)))
    h = nn.Conv(self.features, (3, 3))(nn.silu(GroupNorm(_groups(self.features, self.groups))(h)))
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1))(x)
    return x + h


class Autoencoder(nn.Module):
  """`encode(x) -> (mean, logvar)`, `decode(z) -> x_hat`; one level per `channel_mult` entry,
  halving the resolution between levels (stride-2 convs down, nearest 2x + conv up)."""

  out_channels: int
  latent_channels: int = 4
  channels: int = 32
  channel_mult: tuple[int, ...] = (1, 2, 2)
  num_res_blocks: int = 1
  groups: int = 8
  pad: int = 0

  def setup(self):
    levels = len(self.channel_mult)
    widths = [self.channels * m for m in self.channel_mult]
    self.enc_in = nn.Conv(widths[0], (3, 3))
    self.enc_res = [[Res(w, self.groups) for _ in range(self.num_res_blocks)] for w in widths]
    self.enc_down = [nn.Conv(w, (3, 3), strides=(2, 2)) for w in widths[:-1]]
    self.enc_mid = Res(widths[-1], self.groups)
    self.enc_norm = GroupNorm(_groups(widths[-1], self.groups))
    self.enc_out = nn.Conv(2 * self.latent_channels, (3, 3))
    self.dec_in = nn.Conv(widths[-1], (3, 3))
    self.dec_mid = Res(widths[-1], self.groups)
    self.dec_res = [[Res(w, self.groups) for _ in range(self.num_res_blocks + 1)]
                    for w in widths]
    self.dec_up = [UpsampleConv(w) for w in widths[1:]]
    self.dec_norm = GroupNorm(_groups(widths[0], self.groups))
    self.dec_out = nn.Conv(self.out_channels, (3, 3))
    self.levels = levels

  def encode(self, x):
    p = self.pad
    if p:
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    h = self.enc_in(x)
    for level in range(self.levels):
      for block in self.enc_res[level]:
        h = block(h)
      if level < self.levels - 1:
        h = self.enc_down[level](h)
    h = self.enc_out(nn.silu(self.enc_norm(self.enc_mid(h))))
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z):
    h = self.dec_mid(self.dec_in(z))
    for level in reversed(range(self.levels)):
      for block in self.dec_res[level]:
        h = block(h)
      if level > 0:
        h = self.dec_up[level - 1](h)
    x = self.dec_out(nn.silu(self.dec_norm(h)))
    p = self.pad
    return x[:, p:x.shape[1] - p, p:x.shape[2] - p] if p else x

  def __call__(self, x, rng=None):
    """(x_hat, mean, logvar): decodes a posterior sample (`rng`), or the mean without one."""
    mean, logvar = self.encode(x)
    z = mean if rng is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    return self.decode(z), mean, logvar


class PatchDiscriminator(nn.Module):
  """PatchGAN: stride-2 4x4 convs with LeakyReLU (GroupNorm after the first), then a 3x3
  conv to one logit per patch."""

  channels: int = 32
  layers: int = 2

  @nn.compact
  def __call__(self, x):
    h = nn.leaky_relu(nn.Conv(self.channels, (4, 4), strides=(2, 2))(x), 0.2)
    for i in range(1, self.layers):
      w = self.channels * 2 ** i
      h = nn.Conv(w, (4, 4), strides=(2, 2))(h)
      h = nn.leaky_relu(GroupNorm(_groups(w, 8))(h), 0.2)
    return nn.Conv(1, (3, 3))(h)


@dataclasses.dataclass(frozen=True)
class AutoencoderSettings:
  """The config values an autoencoder's steps read."""

  shape: tuple[int, ...]  # (H, W, C) of the images.
  latent_shape: tuple[int, ...]
  loss: str
  kl_weight: float
  disc_weight: float  # 0: no discriminator.
  disc_start: int
  ema_decay: float

  @classmethod
  def of(cls, config, spec: DataSpec) -> AutoencoderSettings:
    a = config.model.autoencoder
    return cls(tuple(spec.shape), latent_shape(a, spec.shape), a.loss, a.kl_weight,
               a.disc_weight, a.disc_start, config.optim.ema_decay)


def latent_shape(a, shape) -> tuple[int, int, int]:
  """The latent shape of `model.autoencoder` settings `a` for images of `shape`."""
  f = 2 ** (len(a.channel_mult) - 1)
  h, w = (s + 2 * a.pad for s in shape[:2])
  return (h // f, w // f, a.latent_channels)


def check(config, spec: DataSpec) -> None:
  a = config.model.autoencoder
  if spec.preprocess not in ("scale", "dequantize"):
    raise ConfigError("the autoencoder models data in [-1, 1]: data.preprocess must be 'scale' "
                      f"or 'dequantize', got '{spec.preprocess}'")
  if a.loss not in LOSSES:
    raise ConfigError(f"model.autoencoder.loss must be one of {', '.join(LOSSES)}, got '{a.loss}'")
  if not a.channel_mult or a.channels < 1 or a.latent_channels < 1 or a.num_res_blocks < 1:
    raise ConfigError("model.autoencoder.channel_mult must be nonempty and channels, "
                      "latent_channels and num_res_blocks >= 1")
  if a.pad < 0 or a.kl_weight < 0 or a.disc_weight < 0 or a.disc_start < 0:
    raise ConfigError("model.autoencoder.pad, kl_weight, disc_weight and disc_start must be "
                      ">= 0")
  f = 2 ** (len(a.channel_mult) - 1)
  h, w = (s + 2 * a.pad for s in spec.shape[:2])
  if h % f or w % f:
    raise ConfigError(f"the padded image size {h}x{w} (model.autoencoder.pad = {a.pad}) must be "
                      f"divisible by {f}: the encoder halves it {len(a.channel_mult) - 1} times "
                      "(len(model.autoencoder.channel_mult) - 1)")


def parts(config, spec: DataSpec) -> tuple[Autoencoder, PatchDiscriminator]:
  a = config.model.autoencoder
  ae = Autoencoder(spec.shape[-1], a.latent_channels, a.channels, tuple(a.channel_mult),
                   a.num_res_blocks, a.groups, a.pad)
  return ae, PatchDiscriminator(a.disc_channels, a.disc_layers)


def init(ae: Autoencoder, disc: PatchDiscriminator, tx, cfg: AutoencoderSettings, rng, batch):
  x = batch["image"][:1]
  k_ae, k_disc = jax.random.split(rng)
  params = {"ae": ae.init(k_ae, x)["params"]}
  if cfg.disc_weight > 0:
    params["disc"] = disc.init(k_disc, x)["params"]
  return TrainState.create(params, tx, cfg.ema_decay)


def _per_example(v):
  return jnp.mean(v, axis=tuple(range(1, v.ndim)))


def reconstruction_error(cfg: AutoencoderSettings, x, x_hat):
  d = x_hat - x
  return _per_example(jnp.abs(d) if cfg.loss == "l1" else d * d)


def kl_per_pixel(mean, logvar, num_pixels: int):
  """KL(q(z | x) || N(0, I)) summed over the latent, divided by `num_pixels`: [B]."""
  kl = gaussian_kl_standard(mean, logvar)
  return jnp.sum(kl, axis=tuple(range(1, kl.ndim))) / num_pixels


def train_step(ae: Autoencoder, disc: PatchDiscriminator, cfg: AutoencoderSettings, state, batch, rng):
  x = batch["image"]
  pixels = math.prod(cfg.shape)
  use_disc = cfg.disc_weight > 0
  on = (state.step >= cfg.disc_start).astype(jnp.float32) if use_disc else 0.0

  def loss_fn(params):
    x_hat, mean, logvar = ae.apply({"params": params["ae"]}, x, rng)
    rec = jnp.mean(reconstruction_error(cfg, x, x_hat))
    kl = jnp.mean(kl_per_pixel(mean, logvar, pixels))
    loss = rec + cfg.kl_weight * kl
    metrics = {"rec_loss": rec, "kl": kl * pixels}
    if use_disc:
      fake = disc.apply({"params": params["disc"]}, x_hat)
      g_loss = -jnp.mean(fake)
      loss = loss + on * cfg.disc_weight * g_loss
      metrics["g_loss"] = g_loss
    return loss, (metrics, x_hat)

  (loss, (metrics, x_hat)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if use_disc:
    def d_loss_fn(d_params):
      real = disc.apply({"params": d_params}, x)
      fake = disc.apply({"params": d_params}, jax.lax.stop_gradient(x_hat))
      return 0.5 * (jnp.mean(nn.relu(1.0 - real)) + jnp.mean(nn.relu(1.0 + fake)))

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.params["disc"])
    grads = {**grads, "disc": jax.tree.map(lambda g: on * g, d_grads)}
    metrics["d_loss"] = d_loss
  metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
  return state.apply_gradients(grads), metrics


def eval_step(ae: Autoencoder, cfg: AutoencoderSettings, state, batch, rng):
  x = batch["image"]
  x_hat, mean, logvar = ae.apply({"params": state.sample_params["ae"]}, x)
  mse = _per_example(jnp.square(x_hat - x))
  out = {"mse": mse, "psnr": 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10)),
         "l1": _per_example(jnp.abs(x_hat - x)),
         "kl": kl_per_pixel(mean, logvar, 1),
         "loss": reconstruction_error(cfg, x, x_hat)
         + cfg.kl_weight * kl_per_pixel(mean, logvar, math.prod(cfg.shape))}
  rms = jnp.sqrt(jnp.mean(jnp.square(mean), axis=(1, 2)))  # [B, c]
  for i in range(rms.shape[-1]):
    out[f"latent_rms_c{i}"] = rms[:, i]
  return out


def visualize(ae: Autoencoder, state, batch, rng, num: int = 32, cols: int = 8):
  """Test images over their reconstructions: [2 rows per row of `cols`, cols, H, W, C]."""
  x = batch["image"][:num]
  x_hat = jnp.clip(ae.apply({"params": state.sample_params["ae"]}, x)[0], -1.0, 1.0)
  n = (x.shape[0] // cols) * cols
  rows = lambda v: v[:n].reshape((-1, cols) + v.shape[1:])  # noqa: E731
  pairs = jnp.stack([rows(x), rows(x_hat)], axis=1)  # [R, 2, cols, H, W, C]
  return {"reconstructions": pairs.reshape((-1, cols) + x.shape[1:])}


def reconstruct(ae: Autoencoder, params, x):
  """Images `x` through the latents and back: the decoded posterior mean (data space)."""
  return ae.apply({"params": params["ae"]}, x)[0]


def make(config, spec: DataSpec) -> Pipeline:
  """The autoencoder pipeline of `config` (model.kind='autoencoder'): no samples of its own;
  `visualize` writes reconstructions at every `train.sample_every`; `reconstruct` is the round
  trip (`gen eval --metric=captions --real=... --autoencoder=RUN` judges real scenes after it)."""
  check(config, spec)
  ae, disc = parts(config, spec)
  cfg = AutoencoderSettings.of(config, spec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  return Pipeline(init=functools.partial(init, ae, disc, tx, cfg),
                  train_step=functools.partial(train_step, ae, disc, cfg),
                  eval_step=functools.partial(eval_step, ae, cfg),
                  visualize=functools.partial(visualize, ae),
                  reconstruct=functools.partial(reconstruct, ae),
                  compiler_options=dict(xla.CONVNET_CPU))
