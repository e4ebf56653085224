"""A small convolutional classifier: strided conv stages, global average pool, two dense layers."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
  """Per stage a 3x3 conv and a strided 3x3 conv (ReLU); `features` is the penultimate width."""

  channels: Sequence[int]
  features: int
  num_classes: int

  def setup(self):
    self.convs = [(nn.Conv(c, (3, 3), padding="SAME"),
                   nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")) for c in self.channels]
    self.hidden = nn.Dense(self.features)
    self.head = nn.Dense(self.num_classes)

  def embed(self, x):
    """Penultimate activations [B, features] (after the ReLU): the Fréchet-distance features."""
    for conv, down in self.convs:
      x = nn.relu(down(nn.relu(conv(x))))
    return nn.relu(self.hidden(jnp.mean(x, axis=(1, 2))))

  def __call__(self, x):
    return self.head(self.embed(x))
