"""GAN networks: a DCGAN-style generator with (conditional) batch norm, and a convolutional
discriminator with optional spectral normalization and a projection head for labels.

The generator's batch norm has no running averages. In training it normalizes with the
statistics of the batch it is given; for sampling, `use_stats=True` normalizes with
statistics stored in the `stats` collection, which the pipeline computes from a large
fixed batch of latents run through the (EMA) generator ("standing statistics", Brock et
al. 2019). So a sample never depends on the other samples drawn with it, and EMA weights
get statistics that match them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen.nn.conv import phase_conv2x


def conv_init(key, shape, dtype=jnp.float32):
  """LeCun-normal conv kernel, drawn as a 2-D (fan_in, out) matrix and reshaped.

  The same distribution as flax's default; drawing random numbers directly in a 4-D shape
  makes XLA:CPU compile for seconds per layer, a matrix takes a fraction of that.
  """
  flat = nn.initializers.lecun_normal()(key, (math.prod(shape[:-1]), shape[-1]), dtype)
  return flat.reshape(shape)


# Output phase a of a 4x4, stride-2, SAME transposed convolution reads kernel rows
# _PHASE_TAPS[a] from a 2-row window of the input padded by gen.nn.conv.PHASE_PADS[a]
# (same for columns).
_PHASE_TAPS = (np.array([0, 2]), np.array([1, 3]))


class ConvTranspose2x(nn.Module):
  """`nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")`, computed fast.

  The same function of the same (4, 4, in, out) kernel, evaluated as four 2x2 convolutions
  at the input resolution, one per output phase, whose outputs are interleaved. XLA:CPU
  runs the zero-dilated convolution that a transposed convolution lowers to (4x the
  multiply-adds), and especially its weight gradient, several times slower.
  """

  features: int
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features))
    y = phase_conv2x(x, [[kernel[_PHASE_TAPS[a]][:, _PHASE_TAPS[b]] for b in range(2)]
                         for a in range(2)])
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class CondBatchNorm(nn.Module):
  """Batch norm whose scale and offset are per-class embeddings when `num_classes > 0`."""

  num_classes: int = 0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x, y=None, use_stats: bool = False):
    axes = tuple(range(x.ndim - 1))
    if use_stats:
      if not self.has_variable("stats", "mean"):
        raise ValueError("generator batch-norm statistics are missing: pass the 'stats' "
                         "collection (see gen.gan.steps standing_stats)")
      mean, var = self.get_variable("stats", "mean"), self.get_variable("stats", "var")
    else:
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)
      if self.is_mutable_collection("stats"):
        self.put_variable("stats", "mean", mean)
        self.put_variable("stats", "var", var)
    x = (x - mean) * jax.lax.rsqrt(var + self.eps)
    c = x.shape[-1]
    if self.num_classes:
      gamma = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.ones, name="gamma")(y)
      beta = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.zeros, name="beta")(y)
      bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
      return x * gamma.reshape(bshape) + beta.reshape(bshape)
    return x * self.param("scale", nn.initializers.ones, (c,)) + self.param(
        "bias", nn.initializers.zeros, (c,))


class Generator(nn.Module):
  """z -> Dense -> (h0, w0, channels[0]) -> [ConvTranspose 4x4/2 -> BN -> ReLU] for each
  further entry of `channels` -> the image's channels -> tanh.

  The last layer is either another ConvTranspose 4x4/2 (`out_conv=False`, DCGAN, Radford
  et al. 2016: `len(channels)` upsamplings, e.g. (128, 64) from 7x7 to 28x28), or a 3x3 conv
  at full resolution (`out_conv=True`, SNGAN's "standard CNN": `len(channels) - 1`
  upsamplings, e.g. (64, 32) from 4x4 to 8x8, (512, 256, 128, 64) from 4x4 to 32x32).
  """

  shape: tuple[int, int, int]
  channels: Sequence[int]
  num_classes: int = 0
  out_conv: bool = False

  @staticmethod
  def upsamplings(channels, out_conv: bool) -> int:
    return len(channels) - 1 if out_conv else len(channels)

  @nn.compact
  def __call__(self, z, y=None, use_stats: bool = False):
    h, w, c = self.shape
    up = 2 ** self.upsamplings(self.channels, self.out_conv)
    h0, w0 = h // up, w // up
    x = nn.Dense(h0 * w0 * self.channels[0], use_bias=False)(z)
    x = x.reshape(z.shape[0], h0, w0, self.channels[0])
    x = nn.relu(CondBatchNorm(self.num_classes)(x, y, use_stats))
    for ch in self.channels[1:]:
      x = ConvTranspose2x(ch)(x)
      x = nn.relu(CondBatchNorm(self.num_classes)(x, y, use_stats))
    if self.out_conv:
      return jnp.tanh(nn.Conv(c, (3, 3), padding="SAME", kernel_init=conv_init)(x))
    return jnp.tanh(ConvTranspose2x(c, use_bias=True)(x))


class Discriminator(nn.Module):
  """Strided convs with leaky ReLU, then a linear logit (+ a class projection).

  Each stage is `convs_per_stage - 1` 3x3 convs and one 4x4 stride-2 conv with `channels[i]`
  features. With `num_classes > 0` the logit gains the projection term <embed(y), phi(x)>
  (Miyato & Koyama 2018). `spectral_norm` wraps every layer (embedding included) in
  spectral normalization (Miyato et al. 2018); its power-iteration vectors live in the
  `batch_stats` collection and advance only when `update_stats=True`.
  """

  channels: Sequence[int]
  num_classes: int = 0
  spectral_norm: bool = False
  convs_per_stage: int = 1
  slope: float = 0.2

  @nn.compact
  def __call__(self, x, y=None, update_stats: bool = False):
    def layer(module, h):
      if self.spectral_norm:
        return nn.SpectralNorm(module)(h, update_stats=update_stats)
      return module(h)

    for ch in self.channels:
      for _ in range(self.convs_per_stage - 1):
        conv = nn.Conv(ch, (3, 3), padding="SAME", kernel_init=conv_init)
        x = nn.leaky_relu(layer(conv, x), self.slope)
      x = nn.leaky_relu(layer(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME",
                                         kernel_init=conv_init), x),
                        self.slope)
    phi = x.reshape(x.shape[0], -1)
    out = layer(nn.Dense(1), phi)[:, 0]
    if self.num_classes:
      emb = layer(nn.Embed(self.num_classes, phi.shape[-1], name="projection"), y)
      out = out + jnp.sum(emb * phi, axis=-1)
    return out
