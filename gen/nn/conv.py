"""Nearest-neighbour 2x upsampling followed by a 3x3 convolution, as four 2x2 convolutions.

Upsampling by repetition then convolving with a 3x3 kernel computes, for each of the four
output phases (even/odd row x even/odd column), a 2x2 convolution of the *low-resolution*
input whose taps are sums of the 3x3 kernel's taps: along one axis, the even phase sees
input offsets (-1, 0) with weights (k0, k1 + k2), the odd phase offsets (0, +1) with
weights (k0 + k1, k2). Convolving at low resolution and interleaving the phases does 4/9
of the multiply-adds and never materializes the upsampled input: 1.8-3.5x faster forward
and 1.3-3.6x faster backward on the UNets' shapes here. `UpsampleConv` has the same
parameters as the `flax.linen.Conv(features, (3, 3))` it replaces and computes the same
function (up to float rounding). `phase_conv2x` is the shared machinery (the GAN's
transposed convolution uses it too).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")
# Phase 0 of an axis reads input offsets (-1, 0), phase 1 offsets (0, +1).
PHASE_PADS = ((1, 0), (0, 1))


def phase_conv2x(x: jax.Array, kernels) -> jax.Array:
  """A 2x-upsampled output computed at the input's resolution, one 2x2 conv per phase.

  x: [B, H, W, C]; kernels[a][b]: [2, 2, C, O], the taps of output phase (row a, column
  b), applied to x padded by PHASE_PADS[a] (rows) and PHASE_PADS[b] (columns). Returns
  [B, 2H, 2W, O] with y[:, 2i + a, 2j + b] = conv(x, kernels[a][b])[:, i, j].
  """
  rows = []
  for a in range(2):
    rows.append(jnp.stack([
        jax.lax.conv_general_dilated(x, kernels[a][b], (1, 1), (PHASE_PADS[a], PHASE_PADS[b]),
                                     dimension_numbers=_DIMS)
        for b in range(2)], axis=3))  # [B, H, W, 2 (b), O]
  y = jnp.stack(rows, axis=2)  # [B, H, 2 (a), W, 2 (b), O]
  n, h, _, w, _, o = y.shape
  return y.reshape(n, 2 * h, 2 * w, o)


def _fold(kernel: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """The two phases' 2-tap kernels along `axis` of a 3-tap kernel after 2x repetition."""
  k0, k1, k2 = jnp.split(kernel, 3, axis)
  return (jnp.concatenate([k0, k1 + k2], axis), jnp.concatenate([k0 + k1, k2], axis))


def upsample_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """`conv3x3_same(resize_nearest(x, 2x), kernel) + bias`; x [B, H, W, C], kernel [3, 3, C, O]."""
  if kernel.shape[:2] != (3, 3) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"upsample_conv: kernel {kernel.shape} must be [3, 3, {x.shape[-1]}, O].")
  y = phase_conv2x(x, [_fold(rows, 1) for rows in _fold(kernel, 0)])
  return y if bias is None else y + bias


class UpsampleConv(nn.Module):
  """2x nearest upsampling, then `Conv(features, (3, 3))`: computed at low resolution."""

  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return upsample_conv(x, kernel.astype(x.dtype), bias.astype(x.dtype))
