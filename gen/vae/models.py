"""VAE networks: a convolutional encoder/decoder pair, or Burda et al.'s MLPs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Numbers the decoder emits per pixel and channel, by likelihood.
PARAMS_PER_PIXEL = {"bernoulli": 1, "discretized_logistic": 2, "gaussian": 2}


class Block(nn.Module):
  """Conv (optionally strided) -> GELU -> Conv -> GELU, with a residual on the second conv."""

  features: int
  stride: int = 1
  transpose: bool = False

  @nn.compact
  def __call__(self, x):
    if self.transpose:
      x = nn.ConvTranspose(self.features, (3, 3), strides=(self.stride,) * 2, padding="SAME")(x)
    else:
      x = nn.Conv(self.features, (3, 3), strides=(self.stride,) * 2, padding="SAME")(x)
    x = nn.gelu(x)
    return nn.gelu(x + nn.Conv(self.features, (3, 3), padding="SAME")(x))


class Encoder(nn.Module):
  channels: Sequence[int]
  hidden: int
  latent_dim: int

  @nn.compact
  def __call__(self, x):
    for c in self.channels:
      x = Block(c, stride=2)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.gelu(nn.Dense(self.hidden)(x))
    mean = nn.Dense(self.latent_dim, name="mean")(x)
    logvar = nn.Dense(self.latent_dim, name="logvar")(x)
    return mean, logvar


class Decoder(nn.Module):
  shape: tuple[int, int, int]
  channels: Sequence[int]
  hidden: int
  params_per_pixel: int

  @nn.compact
  def __call__(self, z):
    h, w, c = self.shape
    down = 2 ** len(self.channels)
    h0, w0 = h // down, w // down
    x = nn.gelu(nn.Dense(self.hidden)(z))
    x = nn.gelu(nn.Dense(h0 * w0 * self.channels[-1])(x))
    x = x.reshape(z.shape[0], h0, w0, self.channels[-1])
    for ch in reversed(self.channels):
      x = Block(ch, stride=2, transpose=True)(x)
    x = nn.Conv(c * self.params_per_pixel, (3, 3), padding="SAME")(x)
    return x.reshape(z.shape[0], h, w, c, self.params_per_pixel)


class MLPEncoder(nn.Module):
  """Burda et al. (2016)'s encoder: tanh hidden layers of equal width."""

  hidden: int
  depth: int
  latent_dim: int

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for _ in range(self.depth):
      x = nn.tanh(nn.Dense(self.hidden)(x))
    return nn.Dense(self.latent_dim, name="mean")(x), nn.Dense(self.latent_dim, name="logvar")(x)


class MLPDecoder(nn.Module):
  shape: tuple[int, int, int]
  hidden: int
  depth: int
  params_per_pixel: int

  @nn.compact
  def __call__(self, z):
    x = z
    for _ in range(self.depth):
      x = nn.tanh(nn.Dense(self.hidden)(x))
    x = nn.Dense(math.prod(self.shape) * self.params_per_pixel)(x)
    return x.reshape((z.shape[0],) + tuple(self.shape) + (self.params_per_pixel,))


class VAE(nn.Module):
  """`arch="conv"`: strided-conv encoder, mirrored decoder; `arch="mlp"`: `mlp_depth` tanh
  layers."""

  shape: tuple[int, int, int]
  channels: Sequence[int]
  hidden: int
  latent_dim: int
  likelihood: str
  arch: str = "conv"
  mlp_depth: int = 2

  def setup(self):
    k = PARAMS_PER_PIXEL[self.likelihood]
    if self.arch == "mlp":
      self.encoder = MLPEncoder(self.hidden, self.mlp_depth, self.latent_dim)
      self.decoder = MLPDecoder(self.shape, self.hidden, self.mlp_depth, k)
      return
    if self.arch != "conv":
      raise ValueError(f"model.arch must be 'conv' or 'mlp', got '{self.arch}'")
    h, w, _ = self.shape
    down = 2 ** len(self.channels)
    if h % down or w % down:
      raise ValueError(f"image size {h}x{w} must be divisible by 2**len(model.channels) = {down}")
    self.encoder = Encoder(self.channels, self.hidden, self.latent_dim)
    self.decoder = Decoder(self.shape, self.channels, self.hidden, k)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x, rng):
    mean, logvar = self.encode(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    return self.decode(z), mean, logvar
