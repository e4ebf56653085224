"""The LM family: next-token training on token windows and cached decoding in one program.

Batches are `{"tokens": int32[B, seq_len + 1]}`; the model reads the first `seq_len` and
predicts the last `seq_len` (teacher forcing). The loss is the mean next-token
cross-entropy in nats; `gen eval` averages it over every token of the eval split, and
the data source adds perplexity and the loss per character (text) or per time step
(music).

A `finetune` config section with a `method` switches to fine-tuning from feedback
(`gen.lm.finetune`): REINFORCE or PPO against a reward, or DPO from preference pairs.
Plain supervised fine-tuning is this pipeline with `config.init_from`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gen.core.config import ConfigError
from gen.core.pipeline import DataSpec, Pipeline, TrainState, make_optimizer
from gen.lm import sampling
from gen.lm.models import make_model


def make(config, spec: DataSpec) -> Pipeline:
  """The next-token pipeline, or the fine-tuning one when `finetune.method` is set."""
  finetune = config.get("finetune", None)
  if finetune is not None and finetune.get("method", ""):
    from gen.lm.finetune import make as make_finetune

    return make_finetune(config, spec)
  return make_lm(config, spec)


def make_lm(config, spec: DataSpec) -> Pipeline:
  """Next-token training, eval and cached sampling for the model in `config.model`."""
  if spec.kind != "tokens":
    raise ConfigError("the lm family models token data: use a text:PATH, tfds text or "
                      "jsb_chorales source and set data.seq_len")
  max_len = spec.shape[0]
  model = make_model(config, spec.vocab_size, max_len)
  tx = make_optimizer(config.optim, config.train.num_steps)
  sc = config.sample

  def logits_fn(params, tokens, rng=None):
    """Full-context logits [B, S, V] (dropout on when `rng` is given)."""
    if rng is None:
      return model.apply({"params": params}, tokens)[0]
    return model.apply({"params": params}, tokens, deterministic=False,
                       rngs={"dropout": rng})[0]

  def token_nll(params, tokens, rng=None):
    """Next-token NLL in nats: [B, seq_len]."""
    logits = logits_fn(params, tokens[:, :-1], rng)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])

  def init(rng, batch):
    params = model.init(rng, batch["tokens"][:1, :-1])["params"]
    return TrainState.create(params, tx, config.optim.ema_decay)

  def train_step(state, batch, rng):
    def loss_fn(params):
      return jnp.mean(token_nll(params, batch["tokens"], rng if model.dropout > 0 else None))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads), {"loss": loss, "grad_norm": optax.global_norm(grads)}

  def eval_step(state, batch, rng):
    del rng
    nll = token_nll(state.sample_params, batch["tokens"])
    return {"loss": jnp.mean(nll, axis=-1)}

  def apply_cached(params, tokens, positions, cache):
    return model.apply({"params": params}, tokens, positions, cache)

  def sample(params, rng, num, prompt, prompt_lens, max_new_tokens: int = sc.max_new_tokens,
             temperature: float = sc.temperature, top_k: int = sc.top_k,
             top_p: float = sc.top_p, stride: int = sc.stride):
    """`num` continuations of `prompt` (int32 [num, P]) as int32 [num, P + max_new_tokens].

    temperature 0 is greedy; top_k 0 and top_p 1 turn those filters off; `stride` sets
    how the cache slides past the context (see gen.lm.sampling).
    """
    if prompt.shape[0] != num:
      raise ValueError(f"{prompt.shape[0]} prompts for num={num} samples")
    return sampling.decode(apply_cached, model.init_cache, params, rng, prompt, prompt_lens,
                           int(max_new_tokens), max_len, temperature=temperature,
                           top_k=top_k, top_p=top_p, end_id=spec.end_id, stride=int(stride))

  return Pipeline(init=init, train_step=train_step, eval_step=eval_step, sample=sample,
                  functions={"logits": logits_fn, "token_nll": token_nll,
                             "apply_cached": apply_cached, "init_cache": model.init_cache,
                             "model": model})
