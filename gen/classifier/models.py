"""A small convolutional classifier: strided conv stages, a pool (or flatten), two dense layers."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
  """Per stage a 3x3 conv and a strided 3x3 conv (ReLU); `features` is the penultimate width.

  `pool`: `mean` averages the last feature map over space (what is there); `flatten` keeps
  every position (what is where, e.g. the objects of each slot of a captioned scene).
  """

  channels: Sequence[int]
  features: int
  num_classes: int
  pool: str = "mean"

  def setup(self):
    self.convs = [(nn.Conv(c, (3, 3), padding="SAME"),
                   nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")) for c in self.channels]
    self.hidden = nn.Dense(self.features)
    self.head = nn.Dense(self.num_classes)

  def embed(self, x):
    """Penultimate activations [B, features] (after the ReLU): the Fréchet-distance features."""
    for conv, down in self.convs:
      x = nn.relu(down(nn.relu(conv(x))))
    x = jnp.mean(x, axis=(1, 2)) if self.pool == "mean" else x.reshape(x.shape[0], -1)
    return nn.relu(self.hidden(x))

  def __call__(self, x):
    return self.head(self.embed(x))
