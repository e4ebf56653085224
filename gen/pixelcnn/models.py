"""Gated PixelCNN (van den Oord et al. 2016) without a blind spot.

Two stacks, built from shifted convolutions instead of masks (as in PixelCNN++):
- the vertical stack `u` sees only rows strictly above the current pixel;
- the horizontal stack `h` sees the current row strictly to the left, plus `u`.
Each layer is a gated unit, tanh(a) * sigmoid(b), with a residual connection; the
vertical stack feeds the horizontal one through a 1x1 convolution at every layer.

The split matters for sampling: `vertical` runs once per image row, and `horizontal`
only ever looks at one row, so a row of pixels is sampled without re-running the network
over the whole image (see `gen.pixelcnn.steps`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def down_shift(x):
  """Moves rows down by one (row 0 becomes zeros): row r then holds row r - 1."""
  return jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


def right_shift(x):
  """Moves columns right by one: column c then holds column c - 1."""
  return jnp.pad(x[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))


class DownConv(nn.Module):
  """Output (r, c) sees rows r-kh+1..r and columns c-(kw-1)/2..c+(kw-1)/2."""

  features: int
  kh: int
  kw: int

  @nn.compact
  def __call__(self, x):
    p = (self.kw - 1) // 2
    x = jnp.pad(x, ((0, 0), (self.kh - 1, 0), (p, p), (0, 0)))
    return nn.Conv(self.features, (self.kh, self.kw), padding="VALID")(x)


class DownRightConv(nn.Module):
  """Output (r, c) sees rows r-kh+1..r and columns c-kw+1..c."""

  features: int
  kh: int
  kw: int

  @nn.compact
  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (self.kh - 1, 0), (self.kw - 1, 0), (0, 0)))
    return nn.Conv(self.features, (self.kh, self.kw), padding="VALID")(x)


def gate(x):
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedPixelCNN(nn.Module):
  features: int  # Channels of both stacks.
  num_layers: int  # Gated layers after the input layer.
  out_channels: int  # Head outputs per pixel.
  num_classes: int = 0  # > 0: class-conditional (a learned bias per class and layer).
  input_kernel: int = 7  # The first layer's receptive field (like a 7x7 mask-A conv).

  def setup(self):
    f, k, n = self.features, self.input_kernel, self.num_layers
    self.v_in = DownConv(f, k // 2, k)
    self.v_conv = [DownConv(2 * f, 2, 3) for _ in range(n)]
    self.v_out = [nn.Dense(f) for _ in range(n)]
    self.h_in = DownRightConv(f, 1, k // 2)
    self.v2h_in = nn.Dense(f)
    self.h_conv = [DownRightConv(2 * f, 1, 2) for _ in range(n)]
    self.v2h = [nn.Dense(2 * f) for _ in range(n)]
    self.h_out = [nn.Dense(f) for _ in range(n)]
    if self.num_classes:
      self.v_cond = nn.Embed(self.num_classes, n * 2 * f)
      self.h_cond = nn.Embed(self.num_classes, n * 2 * f)
    self.head_hidden = nn.Dense(f)
    self.head_out = nn.Dense(self.out_channels)

  def _cond(self, table, label, i):
    if not self.num_classes:
      return 0.0
    f2 = 2 * self.features
    return table(label)[:, None, None, i * f2:(i + 1) * f2]

  def vertical(self, x, label=None):
    """Per-layer vertical features ([B, H, W, *] each), every one strictly above its row."""
    u = down_shift(self.v_in(x))
    feats = [u]
    for i in range(self.num_layers):
      a = self.v_conv[i](u) + self._cond(getattr(self, "v_cond", None), label, i)
      u = u + self.v_out[i](gate(a))
      feats.append(a)  # The pre-gate activations feed the horizontal stack.
    return feats

  def horizontal(self, x, feats, label=None):
    """Head outputs from the rows of `x` and the matching rows of `vertical`'s features.

    Looks only along rows, so `x` may be a single row (with that row's features).
    """
    h = right_shift(self.h_in(x)) + self.v2h_in(feats[0])
    for i in range(self.num_layers):
      b = self.h_conv[i](h) + self.v2h[i](feats[i + 1])
      b = b + self._cond(getattr(self, "h_cond", None), label, i)
      h = h + self.h_out[i](gate(b))
    h = nn.elu(self.head_hidden(nn.elu(h)))
    return self.head_out(h)

  def __call__(self, x, label=None):
    return self.horizontal(x, self.vertical(x, label), label)
