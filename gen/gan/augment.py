"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for images in [-1, 1].

The same policy is applied, with independent random draws per example, to real and to
generated images, in the discriminator's and in the generator's update; every op is
differentiable in the image, so the generator learns through it. Policies are
comma-separated names from `POLICIES`: "color,translation,cutout" is the paper's choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def color(x, rng):
  """Random brightness (+[-0.5, 0.5]), saturation (x[0, 2]) and contrast (x[0.5, 1.5])."""
  b = x.shape[0]
  k1, k2, k3 = jax.random.split(rng, 3)
  x = x + (jax.random.uniform(k1, (b, 1, 1, 1)) - 0.5)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  x = (x - mean) * (jax.random.uniform(k2, (b, 1, 1, 1)) * 2.0) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (jax.random.uniform(k3, (b, 1, 1, 1)) + 0.5) + mean


def translation(x, rng, ratio: float = 0.125):
  """Shifts each image by up to `ratio` of its size in each direction, zero-filled.

  The shift is a product with one-hot shift matrices, which is cheap at these sizes and
  compiles (and differentiates, twice for R1) much faster than per-example slicing.
  """
  b, h, w, _ = x.shape
  sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  k1, k2 = jax.random.split(rng)
  dy = jax.random.randint(k1, (b, 1, 1), -sh, sh + 1)
  dx = jax.random.randint(k2, (b, 1, 1), -sw, sw + 1)
  # rows[b, i, k] = 1 where output row i reads input row k = i - dy (zero outside).
  rows = (jnp.arange(h)[None, :, None] - dy == jnp.arange(h)[None, None, :]).astype(x.dtype)
  cols = (jnp.arange(w)[None, :, None] - dx == jnp.arange(w)[None, None, :]).astype(x.dtype)
  return jnp.einsum("bik,bjl,bklc->bijc", rows, cols, x)


def cutout(x, rng, ratio: float = 0.5):
  """Zeroes one square of `ratio` times the image size at a random place in each image."""
  b, h, w, _ = x.shape
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  k1, k2 = jax.random.split(rng)
  # Centres as in the reference code: the square may be clipped by the border.
  cy = jax.random.randint(k1, (b, 1, 1), 0, h + (1 - ch % 2))
  cx = jax.random.randint(k2, (b, 1, 1), 0, w + (1 - cw % 2))
  rows = jnp.arange(h)[None, :, None] - (cy - ch // 2)
  cols = jnp.arange(w)[None, None, :] - (cx - cw // 2)
  inside = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)
  return x * (1.0 - inside[..., None].astype(x.dtype))


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> tuple[str, ...]:
  """"color,translation" -> ("color", "translation"); raises ValueError on unknown names."""
  names = tuple(p.strip() for p in policy.split(",") if p.strip())
  bad = [n for n in names if n not in POLICIES]
  if bad:
    raise ValueError(f"unknown augmentation(s) {bad}; choose from {sorted(POLICIES)}")
  return names


def diff_augment(x, rng, policy: tuple[str, ...]):
  """Applies the named augmentations in order. An empty policy returns `x` unchanged."""
  for i, name in enumerate(policy):
    x = POLICIES[name](x, jax.random.fold_in(rng, i))
  return x
