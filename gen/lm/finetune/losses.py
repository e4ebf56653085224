"""The fine-tuning objectives as pure functions of log-probabilities.

Notation: a sequence y = (y_1..y_T) is sampled from the policy pi_theta after a prompt
x; `mask` marks the sampled positions (not the prompt, not after the end); r(y) is the
reward; pi_ref is the frozen model fine-tuning started from.

RL objective (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences"): maximize  J = E_y[r(y)] - beta * KL(pi_theta || pi_ref)  over sequences.
Because the sequence distribution factorizes, the KL is
    KL = E_y[ sum_t k_t ],   k_t = KL(pi_theta(.|y_<t) || pi_ref(.|y_<t)),
each k_t exact over the vocabulary (`token_kl`): an unbiased, low-variance estimate.
The gradient of J has a score-function part and a direct part:
    grad J = E[ (r - beta * sum_t k_t) * sum_t grad log pi(y_t|y_<t) ] - beta E[ sum_t grad k_t ]
(past k_t are constant given y_<t, so multiplying every token's score by the whole
sequence's KL adds no bias). So the loss is a policy-gradient term with the
KL-shaped reward plus `beta * sum_t k_t` itself.

- REINFORCE (Williams 1992) with a baseline: advantage A = r' - b, where b is the mean
  r' of the *other* samples of the batch (leave-one-out, so b is independent of the
  sample and E[A grad log pi] is unchanged). Loss  -mean_i A_i sum_t log pi(y_it).
- PPO (Schulman et al. 2017) with that sequence advantage on every token: several
  gradient steps on one batch of samples, each maximizing the clipped surrogate
  sum_t min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A),  rho_t = pi_theta / pi_old.
  At theta = theta_old its gradient is REINFORCE's.
- DPO (Rafailov et al. 2023): from pairs (x, y_w preferred to y_l), without sampling
  or a reward model:  -log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w))
                                          - (log pi(y_l) - log pi_ref(y_l))]).
  log 2 when pi_theta = pi_ref.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log pi(target) per position: logits [B, T, V], targets int [B, T] -> [B, T]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def token_kl(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
  """KL(softmax(logits) || softmax(ref_logits)) per position, exact over the vocabulary."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  logq = jax.nn.log_softmax(ref_logits, axis=-1)
  return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def token_entropy(logits: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def leave_one_out_baseline(rewards: jax.Array) -> jax.Array:
  """For each sample, the mean reward of the other samples of the batch. [B] -> [B]."""
  n = rewards.shape[0]
  if n < 2:
    raise ValueError("a leave-one-out baseline needs at least 2 samples per batch")
  return (jnp.sum(rewards) - rewards) / (n - 1)


def reinforce_loss(logp: jax.Array, mask: jax.Array, advantages: jax.Array) -> jax.Array:
  """-mean_i A_i sum_t log pi(y_it): logp, mask [B, T], advantages [B] (held constant)."""
  adv = jax.lax.stop_gradient(advantages)
  return -jnp.mean(adv * jnp.sum(logp * mask, axis=-1))


def ppo_loss(logp: jax.Array, old_logp: jax.Array, mask: jax.Array, advantages: jax.Array,
             clip: float) -> tuple[jax.Array, jax.Array]:
  """The clipped surrogate (negated), summed over tokens and averaged over sequences, and
  the fraction of sampled tokens whose ratio was clipped."""
  adv = jax.lax.stop_gradient(advantages)[:, None]
  ratio = jnp.exp(logp - jax.lax.stop_gradient(old_logp))
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)
  clipped = (jnp.abs(ratio - 1.0) > clip) & (mask > 0)
  frac = jnp.sum(clipped) / jnp.maximum(jnp.sum(mask), 1)
  return -jnp.mean(jnp.sum(surrogate * mask, axis=-1)), frac


def dpo_loss(chosen: jax.Array, rejected: jax.Array, ref_chosen: jax.Array,
             ref_rejected: jax.Array, beta: float) -> tuple[jax.Array, jax.Array]:
  """Mean DPO loss over pairs and the per-pair margins beta * (log-ratio difference).

  Each argument is a sequence log-probability [B] (summed over the continuation).
  """
  margin = beta * ((chosen - jax.lax.stop_gradient(ref_chosen))
                   - (rejected - jax.lax.stop_gradient(ref_rejected)))
  return -jnp.mean(jax.nn.log_sigmoid(margin)), margin
