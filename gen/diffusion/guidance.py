"""Guidance: classifier-free (Ho & Salimans 2022) and classifier guidance (Dhariwal & Nichol 2021).

Both act on the denoiser `(x, t, labels) -> x0_hat` (or `(x0_hat, eps_hat)`, the form the
discrete samplers take), so every sampler gets them. For
x = alpha x0 + sigma eps, Tweedie's formula ties the denoiser to the score of p_t:

  grad_x log p_t(x) = (alpha E[x0 | x] - x) / sigma^2.

Classifier guidance adds w grad_x log p_t(y | x) to the score; in denoiser terms

  x0_hat_w = x0_hat + w (sigma^2 / alpha) grad_x log p_t(y | x),

(in eps terms eps_hat - w sigma grad_x log p_t(y | x), Dhariwal & Nichol's Algorithm 2).
By Bayes' rule grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x), so w = 1 turns
the unconditional denoiser into the class-conditional one exactly; w > 1 sharpens the class.
The ancestral sampler (`ddpm`), stepping from time s to the less noisy t, thus moves its mean
by w (alpha_t / alpha_s) Var(x_s | x_t) grad log p_s(y | x_s), where Algorithm 1 moves it by
w Var(x_t | x_s, x0) grad log p_s(y | x_s); the two agree as the steps shrink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


def guided(denoise: Callable, null, guidance) -> Callable:
  """(x, t, labels) -> D_u + w (D_c - D_u), both halves in one batch; w may be traced.

  `null` is what the unconditional half is conditioned on, broadcast to the labels' shape: a
  class model's null label (its number of classes), or a text model's null caption ids [L]
  (or negative prompts' ids [B, L]). A denoiser that returns (x0_hat, eps_hat) is guided in
  both (the combination is linear).
  """
  def fn(x, t, labels):
    null_labels = jnp.broadcast_to(jnp.asarray(null, labels.dtype), labels.shape)
    t = jnp.asarray(t)
    t2 = jnp.concatenate([t, t]) if t.ndim else t
    both = denoise(jnp.concatenate([x, x]), t2, jnp.concatenate([labels, null_labels]))

    def combine(v):
      cond, uncond = jnp.split(v, 2)
      return uncond + guidance * (cond - uncond)

    return jax.tree.map(combine, both)
  return fn


class NoisyClassifier(struct.PyTreeNode):
  """A noise-conditional classifier p_t(y | x) with its params, and what it was trained for.

  apply: (params, x, t) -> logits [B, num_classes], with x in the coordinates of the process
  called `process` and t its natural time (a scalar or [B]). A pytree: the params are its
  leaves, so it can be a traced argument of a compiled sampler.
  """

  params: Any
  apply: Callable = struct.field(pytree_node=False)
  process: str = struct.field(pytree_node=False)
  shape: tuple[int, ...] = struct.field(pytree_node=False)
  num_classes: int = struct.field(pytree_node=False)

  def log_prob(self, x, t, labels):
    """log p_t(labels | x): [B]."""
    logp = jax.nn.log_softmax(self.apply(self.params, x, t))
    return jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]


def classifier_guided(denoise: Callable, alpha_sigma: Callable, log_prob: Callable,
                      scale) -> Callable:
  """(x, t, labels) -> x0_hat + scale (sigma^2 / alpha) grad_x log_prob(x, t, labels).

  `alpha_sigma` is the process's t -> (alpha, sigma); `scale` may be traced. Where alpha = 0
  (the flow process at t = 1) x says nothing about y and the term is left out, although for
  an exact classifier it tends to scale (E[x0 | y] - E[x0]) there: the flow samplers' guidance
  starts one step late, an O(1 / steps) difference.
  """
  def fn(x, t, labels):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    a, s = (jnp.reshape(v, v.shape + (1,) * (x.ndim - 1)) for v in alpha_sigma(t))
    grad = jax.grad(lambda x: jnp.sum(log_prob(x, t, labels)))(x)
    gain = jnp.where(a > 0, s * s / jnp.where(a > 0, a, 1.0), 0.0)
    out = denoise(x, t, labels)
    if isinstance(out, tuple):  # (x0_hat, eps_hat): eps_hat - scale sigma grad.
      return out[0] + scale * gain * grad, out[1] - scale * s * grad
    return out + scale * gain * grad
  return fn
