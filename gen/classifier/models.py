"""A small convolutional classifier: strided conv stages, a pool (or flatten), two dense layers."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
  """Per stage a 3x3 conv and a strided 3x3 conv (ReLU); `features` is the penultimate width.

  `pool`: `mean` averages the last feature map over space (what is there); `flatten` keeps
  every position (what is where); `regions` cuts the last feature map into `regions` (boxes
  (top, left, bottom, right) as fractions of the image, all the same size: the slots of a
  captioned scene) and reads each with the same two dense layers, as a classifier of one
  object: the logits are the regions' in turn, `num_classes` in all.
  """

  channels: Sequence[int]
  features: int
  num_classes: int
  pool: str = "mean"
  regions: Sequence[tuple[float, float, float, float]] = ()

  def setup(self):
    self.convs = [(nn.Conv(c, (3, 3), padding="SAME"),
                   nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")) for c in self.channels]
    self.hidden = nn.Dense(self.features)
    self.head = nn.Dense(self.num_classes // max(len(self.regions), 1))

  def _hidden(self, x):
    """Hidden activations: [B, features], or [B, regions, features]."""
    for conv, down in self.convs:
      x = nn.relu(down(nn.relu(conv(x))))
    if self.pool == "mean":
      x = jnp.mean(x, axis=(1, 2))
    elif self.pool == "regions":
      h, w = x.shape[1:3]
      cuts = [x[:, round(t * h):round(b * h), round(l * w):round(r * w)]
              for t, l, b, r in self.regions]
      x = jnp.stack([c.reshape(c.shape[0], -1) for c in cuts], 1)
    else:
      x = x.reshape(x.shape[0], -1)
    return nn.relu(self.hidden(x))

  def embed(self, x):
    """Penultimate activations [B, D] (after the ReLU; D = features, times the regions): the
    Fréchet-distance features."""
    h = self._hidden(x)
    return h.reshape(h.shape[0], -1)

  def __call__(self, x):
    out = self.head(self._hidden(x))
    return out.reshape(out.shape[0], -1)
