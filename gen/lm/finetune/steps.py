"""Fine-tuning from feedback: REINFORCE / PPO against a reward, DPO from preference pairs.

Start from a trained run with `--config.init_from=WORKDIR`: its params become both the
policy and the frozen reference (`FinetuneState.ref_params`), its tokenizer is kept. With LoRA
(`optim.lora.rank > 0`, `gen.core.lora`) the frozen base is the reference and `ref_params`
stays None (`reference`): no second copy of the weights.
Without `init_from` both start from the same random init (a smoke test).

One compiled `train_step` does everything (see `gen.lm.finetune.losses` for the math):

- `reinforce` / `ppo`: sample a continuation of every prompt with the cached decoder
  (`gen.lm.sampling.decode`, a `lax.while_loop`, temperature 1, no filtering: the
  policy itself), score it with the reward, compute the policy's and the reference's
  logits on the sampled sequences (one full-context forward each), then update. PPO
  runs `finetune.ppo_epochs` optimizer steps on the batch in a `lax.scan`. Prompts are
  the tokenizer's start tokens (`finetune.prompt_len = 0`, e.g. BOS for chorales) or the
  first `prompt_len` tokens of each window of the data batch (the data is used for
  nothing else). Prompt plus continuation must fit the model's context.
- `dpo`: batches of `{"chosen", "rejected": int32[B, seq_len + 1], "prompt_len": int32[B]}`
  from `data.pairs` (a JSONL file, `gen.lm.data.pairs`; `PairData` reads it).

The reward is built in `make` from the tokenizer in the run's data spec (`init_from`'s,
else one built from `data`). The model runs without dropout throughout.

Metrics: `loss`, `reward` (and its parts as `reward_<part>`), `kl` (nats per sample, under
the policy that sampled the batch), `entropy` (nats per sampled token), `length`
(sampled tokens); PPO adds `clip_frac`; DPO logs `accuracy` (chosen ranked above
rejected), `margin` and the implicit rewards. `eval_step` is the next-token NLL on the
eval split: how far the model drifts from the data.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.core.lora import LoraState
from gen.lm import steps as lm
from gen.lm.data import TokenData, pairs, tokenizer_of
from gen.lm.finetune import losses, rewards
from gen.lm.models import GPT

METHODS = ("reinforce", "ppo", "dpo")


class FinetuneState(TrainState):
  """A `TrainState` that also holds the frozen reference params."""

  ref_params: Any = None
  # A copy of the params it started from: with LoRA (gen.core.lora) the frozen base is it.
  frozen_copies = ("ref_params",)


class PairData(TokenData):
  """Token windows, except that DPO trains on the preference pairs of `data.pairs`."""

  def load(self, split: str, train: bool):
    if train and self.cfg.get("pairs", ""):
      return pairs.PairSource(self.cfg.pairs, self.seq_len, self.tokenizer)
    return super().load(split, train)


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  """What the fine-tuning steps read from `config.finetune`, and the prompt they sample from."""

  method: str
  epochs: int
  kl_coef: float
  clip: float
  beta: float
  prompt_len: int  # > 0: the first tokens of each data window; else `start`.
  start: tuple[int, ...]
  max_new_tokens: int
  end_id: int


def init(model: GPT, tx, ema_decay: float, rng, batch):
  del batch  # Token windows or preference pairs: the params do not depend on it.
  params = model.init(rng, jnp.zeros((1, model.max_len), jnp.int32))["params"]
  state = FinetuneState.create(params, tx, ema_decay)
  return state.replace(ref_params=jax.tree.map(jnp.copy, params))


def reference(state):
  """The frozen reference: with LoRA the frozen base itself (no second copy is stored)."""
  return state.base_params if isinstance(state, LoraState) else state.ref_params


def load_pretrained(state, params):
  """The pre-trained params become the policy, its EMA and the frozen reference."""
  copy = lambda: jax.tree.map(jnp.copy, params)  # noqa: E731
  return state.replace(params=copy(), ref_params=copy(),
                       ema_params=None if state.ema_params is None else copy())


def sequence_logits(model: GPT, params, tokens):
  """Logits [B, L-1, V] predicting tokens[:, 1:] (no dropout: the policy is deterministic)."""
  return lm.logits(model, params, jnp.maximum(tokens, 0)[:, :-1])


def rollout(model: GPT, end_id: int, params, rng, prompt, prompt_lens, max_new_tokens: int):
  """Samples from the policy: tokens int32[B, P + N] (-1 after the end) and the mask
  of sampled positions."""
  tokens = lm.decode(model, jax.lax.stop_gradient(params), rng, prompt, prompt_lens,
                     max_new_tokens, end_id=end_id)
  idx = jnp.arange(tokens.shape[1])
  return tokens, (idx[None, :] >= prompt_lens[:, None]) & (tokens >= 0)


def rl_train_step(model: GPT, reward_fn: Callable, s: FinetuneSettings, state, batch, rng):
  """One REINFORCE or PPO step on continuations sampled from the policy (see the module)."""
  b = batch["tokens"].shape[0]
  plen = s.prompt_len or len(s.start)
  if s.prompt_len > 0:
    prompt = batch["tokens"][:, :plen]
  else:
    prompt = jnp.broadcast_to(jnp.asarray(s.start, jnp.int32), (b, plen))
  tokens, generated = rollout(model, s.end_id, state.params, rng, prompt,
                              jnp.full((b,), plen, jnp.int32), s.max_new_tokens)
  scores = reward_fn(tokens, generated)
  targets, mask = jnp.maximum(tokens[:, 1:], 0), generated[:, 1:].astype(jnp.float32)
  ref_logits = jax.lax.stop_gradient(sequence_logits(model, reference(state), tokens))
  old_logits = jax.lax.stop_gradient(sequence_logits(model, state.params, tokens))
  old_logp = losses.token_logprobs(old_logits, targets)
  kl = jnp.sum(losses.token_kl(old_logits, ref_logits) * mask, axis=-1)
  shaped = scores["reward"] - s.kl_coef * kl
  advantages = shaped - losses.leave_one_out_baseline(shaped)

  def loss_fn(params):
    logits = sequence_logits(model, params, tokens)
    logp = losses.token_logprobs(logits, targets)
    if s.method == "ppo":
      pg, clip_frac = losses.ppo_loss(logp, old_logp, mask, advantages, s.clip)
    else:
      pg, clip_frac = losses.reinforce_loss(logp, mask, advantages), 0.0
    kl_term = jnp.mean(jnp.sum(losses.token_kl(logits, ref_logits) * mask, axis=-1))
    return pg + s.kl_coef * kl_term, {"pg_loss": pg, "clip_frac": clip_frac}

  def update(state, _):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # Every PPO epoch is an optimizer update; the state's step counts batches.
    new_state = state.apply_gradients(grads).replace(step=state.step)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}

  state, per_epoch = jax.lax.scan(update, state, None, length=s.epochs)
  n_tok = jnp.maximum(jnp.sum(mask), 1.0)
  metrics = {
      "loss": per_epoch["loss"][0], "pg_loss": per_epoch["pg_loss"][0],
      "grad_norm": per_epoch["grad_norm"][0],
      "kl": jnp.mean(kl),
      "entropy": jnp.sum(losses.token_entropy(old_logits) * mask) / n_tok,
      "length": jnp.mean(jnp.sum(mask, axis=-1)),
      **{("reward" if k == "reward" else f"reward_{k}"): jnp.mean(v)
         for k, v in scores.items()},
  }
  if s.method == "ppo":
    metrics["clip_frac"] = jnp.mean(per_epoch["clip_frac"])
  return state.replace(step=state.step + 1), metrics


def continuation_logprob(logits, tokens, prompt_len):
  """Sum of log pi over each row's continuation: positions >= prompt_len, not padding."""
  lp = losses.token_logprobs(logits, jnp.maximum(tokens[:, 1:], 0))
  pos = jnp.arange(1, tokens.shape[1])
  mask = (pos[None, :] >= prompt_len[:, None]) & (tokens[:, 1:] >= 0)
  return jnp.sum(lp * mask, axis=-1)


def dpo_train_step(model: GPT, beta: float, state, batch, rng):
  """One DPO step on a batch of preference pairs."""
  del rng
  both = jnp.concatenate([batch["chosen"], batch["rejected"]])
  plen = jnp.concatenate([batch["prompt_len"], batch["prompt_len"]])
  b = batch["chosen"].shape[0]
  ref = continuation_logprob(
      jax.lax.stop_gradient(sequence_logits(model, reference(state), both)), both, plen)

  def loss_fn(params):
    pol = continuation_logprob(sequence_logits(model, params, both), both, plen)
    loss, margin = losses.dpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], beta)
    return loss, (margin, pol)

  (loss, (margin, pol)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  implicit = beta * (pol - ref)
  return state.apply_gradients(grads), {
      "loss": loss, "grad_norm": optax.global_norm(grads),
      "accuracy": jnp.mean((margin > 0).astype(jnp.float32)), "margin": jnp.mean(margin),
      "reward_chosen": jnp.mean(implicit[:b]), "reward_rejected": jnp.mean(implicit[b:])}


def settings(ft, spec: DataSpec) -> FinetuneSettings:
  """Checks `config.finetune` against the model's context and the tokenizer."""
  max_len = spec.shape[0]
  epochs = ft.ppo_epochs if ft.method == "ppo" else 1
  if epochs < 1:
    raise ConfigError(f"finetune.ppo_epochs must be >= 1, got {epochs}")
  start = tuple(spec.extra.get("start_ids", ()))
  tok = tokenizer_of(spec)
  if tok is not None:
    start = tuple(tok.start_ids)
  plen, new = ft.prompt_len, 0
  if ft.method != "dpo":
    if ft.prompt_len <= 0 and not start:
      raise ConfigError("finetune.prompt_len=0 starts from the tokenizer's start token, and "
                        "this tokenizer has none: set finetune.prompt_len > 0")
    plen = ft.prompt_len if ft.prompt_len > 0 else len(start)
    new = ft.max_new_tokens or max_len - plen
    if plen + new > max_len:
      raise ConfigError(f"a prompt of {plen} tokens plus finetune.max_new_tokens={new} does "
                        f"not fit the model's context of {max_len} tokens")
  return FinetuneSettings(ft.method, epochs, ft.kl_coef, ft.clip, ft.beta, max(ft.prompt_len, 0), start,
                  new, spec.extra["end_id"])


def make(config, spec: DataSpec) -> Pipeline:
  ft = config.get("finetune", None)
  if ft is None or ft.method not in METHODS:
    got = ft.method if ft is not None else "(no finetune section)"
    raise ConfigError(f"finetune.method must be one of {', '.join(METHODS)} (or use family "
                      f"'lm' for next-token training), got '{got}'")
  if ft.method == "dpo" and not config.data.get("pairs", ""):
    raise ConfigError("finetune.method='dpo' trains on preference pairs: set data.pairs to a "
                      "JSONL file of {prompt, chosen, rejected} (gen.lm.finetune.make_pairs "
                      "writes one)")
  if ft.method != "dpo" and ft.reward not in rewards.REWARDS:
    raise ConfigError(f"unknown reward '{ft.reward}' (finetune.reward); registered rewards: "
                      f"{', '.join(sorted(rewards.REWARDS))}")
  model = lm.parts(config, spec)
  s = settings(ft, spec)
  tx = make_optimizer(config.optim, config.train.num_steps * s.epochs)  # Counts updates.
  if ft.method == "dpo":
    step = functools.partial(dpo_train_step, model, s.beta)
  else:
    tok = tokenizer_of(spec)
    if tok is None:
      raise ConfigError("fine-tuning against a reward needs the run's tokenizer in its data "
                        "spec (gen.lm.data.token_spec(seq_len, tokenizer))")
    try:
      reward_fn = rewards.make(ft.reward, tok, ft.target)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    step = functools.partial(rl_train_step, model, reward_fn, s)
  # The next-token pipeline's eval, sampler and outputs, with these steps.
  return dataclasses.replace(lm.wire(config, spec, model, tx),
                             init=functools.partial(init, model, tx, config.optim.ema_decay),
                             train_step=step, load_pretrained=load_pretrained)
