"""The LM family: next-token training on token windows and cached decoding in one program.

Batches are `{"tokens": int32[B, seq_len + 1]}`; the model reads the first `seq_len` and
predicts the last `seq_len` (teacher forcing). The loss is the mean next-token
cross-entropy in nats; `gen eval` averages it over every token of the eval split, and
the data source adds perplexity and the loss per character (text) or per time step
(music).

Every step is a module-level pure function of the model and its arguments; `make` binds
them with `functools.partial`. Fine-tuning from feedback (REINFORCE, PPO, DPO) is its own
family, `gen.lm.finetune` (`family = "lm.finetune"`); plain supervised fine-tuning is this
pipeline with `config.init_from`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.core.logging import log
from gen.lm import sampling
from gen.lm.data import KIND, tokenizer_of
from gen.lm.data import tokenizers as tok_lib
from gen.lm.models import GPT, make_model


def parts(config, spec: DataSpec) -> GPT:
  """The transformer of `config.model` for the vocabulary and context of `spec`."""
  if spec.kind != KIND:
    raise ConfigError("the lm family models token data: use a text:PATH, tfds text or "
                      "jsb_chorales source and set data.seq_len")
  return make_model(config, spec.extra["vocab_size"], spec.shape[0])


# ------------------------------------------------------------------------------- math


def logits(model: GPT, params, tokens, rng=None):
  """Full-context logits [B, S, V] (dropout on when `rng` is given)."""
  if rng is None:
    return model.apply({"params": params}, tokens)[0]
  return model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": rng})[0]


def token_nll(model: GPT, params, tokens, rng=None):
  """Next-token NLL in nats: [B, seq_len]."""
  out = logits(model, params, tokens[:, :-1], rng)
  return optax.softmax_cross_entropy_with_integer_labels(out, tokens[:, 1:])


def apply_cached(model: GPT, params, tokens, positions, cache):
  """One cached forward: (logits [B, S, V], cache); see `gen.lm.sampling.decode`."""
  return model.apply({"params": params}, tokens, positions, cache)


def decode(model: GPT, params, rng, prompt, prompt_lens, max_new_tokens: int, **kw):
  """`gen.lm.sampling.decode` with this model's cached forward and context."""
  return sampling.decode(functools.partial(apply_cached, model), model.init_cache, params, rng,
                         prompt, prompt_lens, max_new_tokens, model.max_len, **kw)


# ------------------------------------------------------------------------------ steps


def init(model: GPT, tx, ema_decay: float, rng, batch):
  params = model.init(rng, batch["tokens"][:1, :-1])["params"]
  return TrainState.create(params, tx, ema_decay)


def train_step(model: GPT, state, batch, rng):
  def loss_fn(params):
    return jnp.mean(token_nll(model, params, batch["tokens"], rng if model.dropout > 0 else None))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads), {"loss": loss, "grad_norm": optax.global_norm(grads)}


def eval_step(model: GPT, state, batch, rng):
  del rng
  return {"loss": jnp.mean(token_nll(model, state.sample_params, batch["tokens"]), axis=-1)}


def sample(model: GPT, sc, end_id, start_ids, params, rng, num, prompt=None,
           prompt_lens=None, max_new_tokens: int | None = None, temperature: float | None = None,
           top_k: int | None = None, top_p: float | None = None, stride: int | None = None):
  """`num` continuations of `prompt` (int32 [num, P]) as int32 [num, P + max_new_tokens].

  Without a prompt every sample starts from the run's start tokens. `sc` is the config's
  `sample` section, the defaults: temperature 0 is greedy; top_k 0 and top_p 1 turn those
  filters off; `stride` sets how the cache slides past the context (see gen.lm.sampling).
  """
  if prompt is None:
    prompt = jnp.broadcast_to(jnp.asarray(start_ids, jnp.int32), (num, len(start_ids)))
    prompt_lens = jnp.full((num,), len(start_ids), jnp.int32)
  if prompt.shape[0] != num:
    raise ValueError(f"{prompt.shape[0]} prompts for num={num} samples")
  pick = lambda v, default: default if v is None else v  # noqa: E731
  max_new_tokens, stride = pick(max_new_tokens, sc.max_new_tokens), pick(stride, sc.stride)
  temperature, top_k, top_p = (pick(temperature, sc.temperature), pick(top_k, sc.top_k),
                               pick(top_p, sc.top_p))
  check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                 top_p=top_p, stride=stride)
  log.info("%s", cache_line(model, num))  # Once, when the sampler is traced.
  return decode(model, params, rng, prompt, prompt_lens, max_new_tokens,
                temperature=temperature, top_k=top_k, top_p=top_p, end_id=end_id, stride=stride)


# Each sampling value: (must be an integer, its lowest value, its highest, what it means).
SAMPLING_RANGES = {
    "max_new_tokens": (True, 1, None, "tokens to add"),
    "stride": (True, 0, None, "0: the default"),
    "temperature": (False, 0.0, None, "0 is greedy"),
    "top_k": (True, 0, None, "0 keeps every token"),
    "top_p": (False, 0.0, 1.0, "1 keeps every token"),
}


def check_sampling(**values) -> None:
  """A ValueError for a sampling value of the wrong type or out of range (`--top_k=-1`,
  `--max_new_tokens=2.5`); traced values (arrays) are the caller's to check."""
  for name, value in values.items():
    integer, low, high, meaning = SAMPLING_RANGES[name]
    if hasattr(value, "shape"):  # An array (traced or not), or a numpy scalar.
      continue
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
      raise ValueError(f"--{name} must be {kind}, got {value!r}")
    if value < low or (high is not None and value > high) or (name == "top_p" and value == 0):
      where = (f"in (0, {high}]" if name == "top_p" else
               f">= {low}" if high is None else f"in [{low}, {high}]")
      raise ValueError(f"--{name} must be {where} ({meaning}), got {value}")


# -------------------------------------------------------------------- inputs, outputs


def token_rows(tokens) -> list[list[int]]:
  """A sampler's int32[B, L] output as lists of ids, dropping the -1 after an end token."""
  return [[int(t) for t in row if t >= 0] for row in np.asarray(jax.device_get(tokens))]


def cache_line(model: GPT, batch: int) -> str:
  """What the key/value cache of `batch` rows holds, and its size."""
  kv, heads = model.kv_heads, model.num_heads
  return (f"KV cache: {model.num_layers} layers x {kv} key/value heads"
          f"{f' (shared by {heads} query heads)' if kv != heads else ''} x {model.max_len} "
          f"positions x {model.head_width} ({model.dtype}) x {batch} rows = "
          f"{_size(model.cache_bytes(batch))}")


def _size(n: int) -> str:
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if n >= scale:
      return f"{n / scale:,.1f} {unit}"
  return f"{n} bytes"


def sample_options(tokenizer: tok_lib.Tokenizer | None, num: int, flags: dict):
  """`gen sample`'s `--prompt=TEXT` / `--prompt_file=FILE` (one prompt per line) as padded
  prompt ids; `num` samples per prompt (default 1, or 4 from the start tokens). With `--chat`
  each prompt is a user message rendered by the tokenizer's chat template (after a
  `--system=TEXT` message when given), ready for the assistant's reply."""
  flags = dict(flags)
  prompt, prompt_file = flags.pop("prompt", None), flags.pop("prompt_file", None)
  chat, system = flags.pop("chat", False), flags.pop("system", None)
  if system is not None and not chat:
    raise ValueError("--system is the system message of a --chat prompt: add --chat")
  if prompt is not None and prompt_file is not None:
    raise ValueError("give --prompt or --prompt_file, not both")
  if prompt_file is not None:
    with open(str(prompt_file)) as f:
      texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
      raise ValueError(f"--prompt_file={prompt_file} has no prompts")
  else:
    texts = [] if prompt is None else [str(prompt)]
  if chat and not texts:
    raise ValueError("--chat needs the user's message: --prompt=TEXT or --prompt_file=FILE")
  if not texts:
    return num or 4, flags
  if tokenizer is None:
    raise ValueError("this run's spec holds no tokenizer: prompts cannot be encoded")
  if chat and not hasattr(tokenizer, "encode_chat"):
    raise ValueError(f"--chat: the {tokenizer.name} tokenizer has no chat template")
  try:
    if chat:  # Each prompt is the user's turn of its own conversation.
      head = [] if system is None else [{"role": "system", "content": str(system)}]
      rows = [tokenizer.encode_chat([*head, {"role": "user", "content": t}]) for t in texts]
    else:
      rows = [tokenizer.encode(t) for t in texts]
  except tok_lib.TokenizerError as e:
    raise ValueError(f"cannot encode the prompt: {e}") from None
  if any(not r for r in rows):  # An empty prompt starts from the start token.
    if not tokenizer.start_ids:
      raise ValueError(f"empty prompt: the {tokenizer.name} tokenizer has no start token to "
                       "begin from; give at least one token of text")
    rows = [r or list(tokenizer.start_ids) for r in rows]
  num = num or 1
  ids, lens = tok_lib.pad_prompts([r for r in rows for _ in range(num)])
  return len(ids), {**flags, "prompt": ids, "prompt_lens": lens}


def write_samples(tokenizer: tok_lib.Tokenizer, samples, stem: str) -> list[str]:
  """Text files, or for music MIDI, WAV and a piano roll (the tokenizer's writer)."""
  return tokenizer.write_samples(token_rows(samples), stem)


def preview(tokenizer: tok_lib.Tokenizer, samples) -> str:
  return tokenizer.preview(token_rows(samples))


def make(config, spec: DataSpec) -> Pipeline:
  """Next-token training, eval and cached sampling for the model in `config.model`."""
  finetune = config.get("finetune", None)
  if finetune is not None and finetune.get("method", ""):
    raise ConfigError(f"finetune.method='{finetune.method}' is fine-tuning from feedback: set "
                      "family = 'lm.finetune'")
  model = parts(config, spec)
  return wire(config, spec, model, make_optimizer(config.optim, config.train.num_steps))


def end_of(spec: DataSpec) -> int | tuple[int, ...]:
  """The token that ends a sample (-1: none), or the tuple of them when there are several."""
  ends = spec.extra.get("end_ids")
  return tuple(int(i) for i in ends) if ends else spec.extra["end_id"]


def wire(config, spec: DataSpec, model: GPT, tx) -> Pipeline:
  """The pipeline of `model`: its steps, sampler and the tokenizer's inputs and outputs."""
  tok = tokenizer_of(spec)
  return Pipeline(
      init=functools.partial(init, model, tx, config.optim.ema_decay),
      train_step=functools.partial(train_step, model),
      eval_step=functools.partial(eval_step, model),
      sample=functools.partial(sample, model, config.sample, end_of(spec),
                               tuple(spec.extra["start_ids"])),
      sample_options=functools.partial(sample_options, tok),
      write_samples=functools.partial(write_samples, tok) if tok else None,
      preview=functools.partial(preview, tok) if tok else None,
      lora_in_axes=lora_in_axes)


def lora_in_axes(path: str, shape: tuple[int, ...]) -> int:
  """The input axes of a kernel, for LoRA: the attention's q, kv and fused qkv kernels
  ([width, (3 or 2,) heads, head_dim]) take the width alone; every other kernel every axis
  but the last (the output projection [heads, head_dim, width] contracts two)."""
  return 1 if path.rsplit("/", 2)[-2:-1] in (["qkv"], ["q"], ["kv"]) else len(shape) - 1
