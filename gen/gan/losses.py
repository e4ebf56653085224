"""Adversarial losses and the R1 gradient penalty, on discriminator logits.

- `nonsaturating` (Goodfellow et al. 2014): D minimizes softplus(-D(x)) + softplus(D(G(z))),
  G minimizes softplus(-D(G(z))).
- `hinge` (Lim & Ye 2017; Miyato et al. 2018): D minimizes relu(1 - D(x)) + relu(1 + D(G(z))),
  G minimizes -D(G(z)).

All return per-example values; the pipeline averages them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("nonsaturating", "hinge")


def d_loss_real(logits, kind: str):
  if kind == "nonsaturating":
    return jax.nn.softplus(-logits)
  if kind == "hinge":
    return jax.nn.relu(1.0 - logits)
  raise ValueError(f"gan.loss must be one of {LOSSES}, got '{kind}'")


def d_loss_fake(logits, kind: str):
  if kind == "nonsaturating":
    return jax.nn.softplus(logits)
  if kind == "hinge":
    return jax.nn.relu(1.0 + logits)
  raise ValueError(f"gan.loss must be one of {LOSSES}, got '{kind}'")


def g_loss(fake_logits, kind: str):
  if kind == "nonsaturating":
    return jax.nn.softplus(-fake_logits)
  if kind == "hinge":
    return -fake_logits
  raise ValueError(f"gan.loss must be one of {LOSSES}, got '{kind}'")


def grad_sq_norm(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """||grad_x D(x)||^2 per example: [B]. `d_fn` maps images [B, ...] to logits [B].

  Examples do not interact in D, so the gradient of the summed logits is, row by row,
  each example's own input gradient.
  """
  g = jax.grad(lambda v: jnp.sum(d_fn(v)))(x)
  return jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=-1)


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], x_real: jax.Array, gamma: float):
  """R1 (Mescheder et al. 2018): gamma / 2 * E ||grad_x D(x)||^2 over real images.

  For a linear D(x) = w . x this is gamma / 2 * ||w||^2 whatever x is.
  """
  return 0.5 * gamma * jnp.mean(grad_sq_norm(d_fn, x_real))
