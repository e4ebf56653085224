"""Reward functions for fine-tuning, registered by name.

A reward is built by `make(name, tokenizer, target)` and is a pure jnp function

    reward(tokens int32[B, L], generated bool[B, L]) -> {"reward": float[B], ...}

`tokens` holds each prompt and its continuation, -1 after the end; `generated` marks the
sampled positions. Extra keys are per-example diagnostics (the rules' parts), logged as
metrics. A new reward is a factory `(tokenizer, target) -> reward` under `@register(NAME)`.

- `chorale_rules`: the S-A-T-B format and four voice-leading rules, checked exactly on the
  chorale token grid of `gen.lm.data.music` (`BOS, (S A T B) per quarter note, EOS`).
- `line_length`: how close each completed line of text is to `target` characters.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen.lm.data import music

Reward = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
REWARDS: dict[str, Callable[..., Reward]] = {}


def register(name: str):
  def add(factory):
    REWARDS[name] = factory
    return factory
  return add


def make(name: str, tokenizer, target: float = 0.0) -> Reward:
  """The reward called `name` for data encoded by `tokenizer`."""
  if name not in REWARDS:
    raise ValueError(f"unknown reward '{name}'; registered rewards: {', '.join(sorted(REWARDS))}")
  return REWARDS[name](tokenizer, target)


# ------------------------------------------------------------------------------ music

# Textbook four-part ranges (MIDI): soprano C4-G5, alto G3-D5, tenor C3-G4, bass E2-C4.
VOICE_RANGES = np.array([[60, 79], [55, 74], [48, 67], [40, 60]])
MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


def _key_masks() -> np.ndarray:
  """bool[24, 12]: the pitch classes of the 12 major and 12 harmonic-minor scales."""
  masks = np.zeros((24, 12), bool)
  for tonic in range(12):
    masks[tonic, [(tonic + d) % 12 for d in MAJOR]] = True
    masks[12 + tonic, [(tonic + d) % 12 for d in HARMONIC_MINOR]] = True
  return masks


def chorale_grid(tokens: jax.Array):
  """Pitches int32[B, K, 4] (-1: rest or not a note), well-formed steps bool[B, K] and
  steps before the end bool[B, K].

  Step k is tokens 1 + 4k .. 4 + 4k (after BOS): well-formed when they are a soprano,
  alto, tenor and bass token in that order; present unless it starts at or after the end
  (EOS, or -1 padding). K = (L - 1) // 4.
  """
  per = music.ChoraleTokenizer.PER_VOICE
  b, length = tokens.shape
  k = (length - 1) // 4
  grid = tokens[:, 1:1 + 4 * k].reshape(b, k, 4)
  rel = grid - 2 - per * jnp.arange(4)  # 0: rest, 1 + p - LOW: pitch p.
  voiced = (rel >= 0) & (rel < per)
  pitch = jnp.where(voiced & (rel > 0), music.LOW + rel - 1, -1)
  ended = jnp.cumsum((grid[..., 0] < 0) | (grid[..., 0] == music.ChoraleTokenizer.EOS), axis=1)
  return pitch, jnp.all(voiced, axis=-1), ended == 0


def chorale_rule_parts(tokens: jax.Array) -> dict[str, jax.Array]:
  """Per piece [B]: how well-formed it is and how often each rule holds.

  - `well_formed`: the fraction of the K steps that are well-formed (S, A, T, B in
    order). A skipped or repeated voice token shifts the grid, so every later step
    fails; steps after the end (EOS) fail too: the window asks for the opening of a
    chorale, and 228 of the 229 training chorales are longer than 31 quarter notes
    (the 128-token context). Judged over the steps before the end instead, a policy
    learns to stop early, where the other rules are easier to keep.
  - Over the well-formed steps (0 when there are none), the fraction that obey:
    `range`: every sounding voice is in its textbook range (`VOICE_RANGES`);
    `no_crossing`: soprano >= alto >= tenor >= bass among sounding voices;
    `no_parallels`: no two voices that both move form a perfect fifth (or an octave or
    unison) at this step and the one before (consecutive fifths and octaves);
    `in_key`: every pitch class is in the piece's key: the major or harmonic-minor scale
    that holds the most of its notes (minor keys keep their raised leading tone).
  """
  pitch, ok, present = chorale_grid(tokens)
  ok = ok & present
  sounding = (pitch >= 0) & ok[..., None]
  lo, hi = VOICE_RANGES[:, 0], VOICE_RANGES[:, 1]
  in_range = jnp.all(~sounding | ((pitch >= lo) & (pitch <= hi)), axis=-1)

  upper, lower = pitch[..., :-1], pitch[..., 1:]
  both = sounding[..., :-1] & sounding[..., 1:]
  no_cross = jnp.all(~both | (upper >= lower), axis=-1)

  i, j = np.triu_indices(4, 1)  # The six voice pairs.
  interval = jnp.abs(pitch[..., i] - pitch[..., j]) % 12  # [B, K, 6]
  pair_sounds = sounding[..., i] & sounding[..., j]
  perfect = pair_sounds & ((interval == 7) | (interval == 0))
  moved = (pitch[:, 1:] != pitch[:, :-1]) & sounding[:, 1:] & sounding[:, :-1]  # [B, K-1, 4]
  consecutive = (perfect[:, 1:] & perfect[:, :-1] & (interval[:, 1:] == interval[:, :-1])
                 & moved[..., i] & moved[..., j])
  no_par = jnp.concatenate([jnp.ones_like(ok[:, :1]), ~jnp.any(consecutive, axis=-1)], axis=1)

  pc = jnp.where(sounding, pitch % 12, 12)
  hist = jax.nn.one_hot(pc, 13)[..., :12].sum(axis=(1, 2))  # [B, 12]
  masks = jnp.asarray(_key_masks())
  key = jnp.argmax(hist @ masks.T.astype(hist.dtype), axis=-1)  # [B]
  key_mask = masks[key]  # [B, 12]
  note_in_key = jnp.take_along_axis(key_mask, jnp.maximum(pc, 0).reshape(pc.shape[0], -1),
                                    axis=1).reshape(pc.shape)
  in_key = jnp.all(~sounding | note_in_key, axis=-1)

  n_ok = jnp.sum(ok, axis=-1)
  frac = lambda rule: jnp.sum(rule & ok, axis=-1) / jnp.maximum(n_ok, 1)
  return {"well_formed": n_ok / ok.shape[1], "range": frac(in_range), "no_crossing": frac(no_cross),
          "no_parallels": frac(no_par), "in_key": frac(in_key),
          "steps": jnp.sum(present, axis=-1).astype(jnp.float32)}


@register("chorale_rules")
def chorale_rules(tokenizer, target: float = 0.0) -> Reward:
  """The mean of the five fractions of `chorale_rule_parts` (format and four rules), in
  [0, 1]. The first 31 quarter notes of real chorales score 0.95 on average."""
  del target
  if getattr(tokenizer, "name", "") != "chorale":
    raise ValueError("reward 'chorale_rules' needs chorale tokens (data.name='jsb_chorales')")

  def reward(tokens, generated):
    del generated  # The rules read the whole grid; prompts are short or shared.
    parts = chorale_rule_parts(tokens)
    total = (parts["well_formed"] + parts["range"] + parts["no_crossing"]
             + parts["no_parallels"] + parts["in_key"]) / 5
    return {"reward": total, **parts}

  return reward


# ------------------------------------------------------------------------------- text


def _token_text_tables(tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """Per token id: its length in characters and whether it is a newline."""
  pieces = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
  return (np.array([len(p) for p in pieces], np.int32),
          np.array([p == "\n" for p in pieces], bool))


@register("line_length")
def line_length(tokenizer, target: float) -> Reward:
  """Mean over the completed, non-empty lines of max(0, 1 - |length - target| / target).

  A line counts when its closing newline was generated and its opening newline is in
  the sequence (so a line cut by the prompt's start does not). No such line: 0.
  """
  if getattr(tokenizer, "name", "") == "chorale":
    raise ValueError("reward 'line_length' is for text; chorales have no lines")
  if target <= 0:
    raise ValueError(f"reward 'line_length' needs finetune.target > 0 (characters per line), "
                     f"got {target}")
  lengths, newline = (jnp.asarray(t) for t in _token_text_tables(tokenizer))

  def reward(tokens, generated):
    valid = tokens >= 0
    ids = jnp.maximum(tokens, 0)
    chars = jnp.where(valid, lengths[ids], 0)
    is_nl = valid & newline[ids]
    upto = jnp.cumsum(chars, axis=-1)  # Characters up to and including each token.
    # Characters up to the previous newline (exclusive of this token); -1: none yet.
    at_nl = jnp.where(is_nl, upto, -1)
    prev = jnp.concatenate([jnp.full_like(at_nl[:, :1], -1),
                            jax.lax.cummax(at_nl, axis=1)[:, :-1]], axis=1)
    length = upto - chars - prev
    counted = is_nl & generated & (prev >= 0) & (length > 0)
    score = jnp.maximum(0.0, 1.0 - jnp.abs(length - target) / target)
    n = counted.sum(-1)
    mean = lambda x: jnp.where(n > 0, jnp.sum(jnp.where(counted, x, 0), -1) / jnp.maximum(n, 1),
                               0.0)
    return {"reward": mean(score), "line_length": mean(length.astype(jnp.float32)),
            "lines": n.astype(jnp.float32)}

  return reward
