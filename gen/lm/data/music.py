"""Bach chorales as note-by-note tokens, and back to MIDI, WAV and a piano-roll picture.

Data: `Jsb16thSeparated.json` from the JSB Chorales folder (four voices kept apart,
16th-note grid; 229/76/77 chorales in train/valid/test, the split of Boulanger-Lewandowski
et al. 2012). Taking every 4th step gives the quarter-note grid of the standard JSB
benchmark, with the voices separated (same step totals: 13,807 / 4,602 / 4,725).

Serialization: each chorale is `BOS, (S A T B) per quarter-note step, EOS`. A voice's
token names both the voice and its pitch (MIDI 36-81) or a rest, so the phase within a
step is never ambiguous: vocabulary = BOS, EOS, and 4 x (rest + 46 pitches) = 190.
The data does not mark held notes (a half note is two equal quarter steps), so the
MIDI writer joins repeated pitches of a voice into one note.

Prompts for `gen sample --prompt=...` use the same text form `decode` writes: steps
separated by spaces, voices by commas, soprano first, `-` for a rest:
`"72,67,64,48 74,67,62,47"`.
"""

from __future__ import annotations

import json
import os
import wave

import numpy as np

from gen.core.data.sources import DataError, resolve_base
from gen.core.images import save_png
from gen.lm.data import text
from gen.lm.data.tokenizers import Tokenizer, TokenizerError, register

LOW, HIGH = 36, 81  # MIDI pitch range of the data (all four voices).
VOICES = ("soprano", "alto", "tenor", "bass")
FOLDER, FILE = "jsb-chorales", "Jsb16thSeparated.json"
SPLITS = ("train", "valid", "test")


@register
class ChoraleTokenizer(Tokenizer):
  name = "chorale"
  BOS, EOS = 0, 1
  PER_VOICE = 1 + HIGH - LOW + 1  # A rest and every pitch.

  @property
  def vocab_size(self) -> int:
    return 2 + len(VOICES) * self.PER_VOICE

  @property
  def start_ids(self) -> list[int]:
    return [self.BOS]

  @property
  def end_id(self) -> int:
    return self.EOS

  def token(self, voice: int, pitch: int) -> int:
    """Token of `voice` (0 = soprano) sounding `pitch`, or resting when pitch < 0."""
    if pitch >= 0 and not LOW <= pitch <= HIGH:
      raise TokenizerError(f"pitch {pitch} is outside the chorale range {LOW}-{HIGH}")
    return 2 + voice * self.PER_VOICE + (0 if pitch < 0 else 1 + pitch - LOW)

  def voice_pitch(self, tok: int) -> tuple[int, int]:
    """(voice, pitch) of a voice token; pitch -1 is a rest. Raises on BOS/EOS."""
    if not 2 <= tok < self.vocab_size:
      raise ValueError(f"token {tok} is not a voice token")
    voice, r = divmod(tok - 2, self.PER_VOICE)
    return voice, (-1 if r == 0 else LOW + r - 1)

  def encode_steps(self, steps) -> list[int]:
    """`[[s, a, t, b], ...]` (-1 = rest) -> voice tokens, without BOS/EOS."""
    return [self.token(v, int(p)) for step in steps for v, p in enumerate(step)]

  def chorale(self, steps) -> list[int]:
    return [self.BOS] + self.encode_steps(steps) + [self.EOS]

  def to_steps(self, ids) -> list[list[int]]:
    """Tokens -> `[[s, a, t, b], ...]`: a soprano token opens a step, EOS ends the piece.

    Tolerant of what a sampler may produce: a voice token out of order fills its voice
    in the current step (missing voices rest), BOS is skipped, padding (-1) ignored.
    """
    steps: list[list[int]] = []
    for tok in ids:
      tok = int(tok)
      if tok == self.EOS:
        break
      if tok < 2 or tok >= self.vocab_size:
        continue
      voice, pitch = self.voice_pitch(tok)
      if voice == 0 or not steps or steps[-1][voice] != -2:
        steps.append([-2] * len(VOICES))  # -2: not yet given.
      steps[-1][voice] = pitch
    return [[max(p, -1) for p in s] for s in steps]

  def encode(self, text: str) -> list[int]:
    steps = []
    for chunk in text.replace("|", " ").split():
      parts = chunk.split(",")
      if len(parts) != len(VOICES):
        raise TokenizerError(f"chorale step '{chunk}' needs 4 comma-separated voices "
                             "(soprano,alto,tenor,bass; '-' for a rest)")
      try:
        steps.append([-1 if p.strip() in ("-", "r") else int(p) for p in parts])
      except ValueError:
        raise TokenizerError(f"chorale step '{chunk}': voices are MIDI numbers or '-'") from None
    return [self.BOS] + self.encode_steps(steps)

  def decode(self, ids) -> str:
    return " ".join(",".join("-" if p < 0 else str(p) for p in s) for s in self.to_steps(ids))

  def to_json(self) -> dict:
    return {"type": self.name, "low": LOW, "high": HIGH}

  @classmethod
  def from_json(cls, d: dict) -> ChoraleTokenizer:
    if (d.get("low"), d.get("high")) != (LOW, HIGH):
      raise ValueError(f"chorale tokenizer range {d.get('low')}-{d.get('high')} != {LOW}-{HIGH}")
    return cls()

  def write_samples(self, rows, path: str) -> list[str]:
    """Per sample a MIDI file and a WAV rendering; for all, a piano roll and the text."""
    base = os.path.splitext(path)[0]
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    pieces = [self.to_steps(r) for r in rows]
    paths = []
    for i, steps in enumerate(pieces):
      paths.append(write_midi(f"{base}_{i}.mid", steps))
      paths.append(write_wav(f"{base}_{i}.wav", steps))
    paths.append(save_png(base + ".png", piano_roll(pieces)))
    paths.append(base + ".txt")
    with open(base + ".txt", "w") as f:
      for i, steps in enumerate(pieces):
        f.write(f"---------- chorale {i}: {len(steps)} quarter notes ----------\n")
        f.write(self.decode(self.chorale(steps)) + "\n")
    return paths

  def preview(self, rows) -> str:
    """A line per chorale: its length and first bars (the full text is in the .txt file)."""
    lines = []
    for i, r in enumerate(rows):
      steps = self.to_steps(r)
      head = self.decode(self.encode_steps(steps[:8]))
      lines.append(f"chorale {i}: {len(steps)} quarter notes: {head}{' ...' if len(steps) > 8 else ''}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ data


def read_chorales(data_dir: str, split: str) -> list[np.ndarray]:
  """The chorales of `split` on the quarter-note grid: int arrays [T, 4], -1 = rest."""
  if split not in SPLITS:
    raise DataError(f"jsb_chorales has splits {', '.join(SPLITS)}, not '{split}'")
  base = resolve_base("jsb_chorales", data_dir, f"{FOLDER}/{FILE}")
  path = os.path.join(base, FOLDER, FILE)
  if not os.path.isfile(path):
    path = os.path.join(base, FILE)
  if not os.path.isfile(path):
    raise DataError(f"missing data file {path} (the JSB Chorales '{FILE}')")
  try:
    with open(path) as f:
      data = json.load(f)
    pieces = [np.asarray(c, np.int32)[::4] for c in data[split]]
  except (ValueError, KeyError, TypeError) as e:
    raise DataError(f"corrupt data file {path}: {type(e).__name__}: {e}") from e
  for i, c in enumerate(pieces):
    if c.ndim != 2 or c.shape[1] != 4:
      raise DataError(f"{path}: chorale {i} of {split} has shape {c.shape}, expected [T, 4]")
    sounding = c[c >= 0]
    if sounding.size and (sounding.min() < LOW or sounding.max() > HIGH):
      raise DataError(f"{path}: chorale {i} of {split} has pitches outside {LOW}-{HIGH}")
  return pieces


def chorale_stream(pieces: list[np.ndarray], tok: ChoraleTokenizer) -> np.ndarray:
  return np.concatenate([np.asarray(tok.chorale(c.tolist()), np.int32) for c in pieces])


# ----------------------------------------------------------------------------- output

TEMPO_BPM = 80  # Quarter notes per minute for MIDI and WAV.


def _notes(steps, voice: int):
  """(start_step, length, pitch) of each note of a voice, repeated pitches joined."""
  notes = []
  for t, step in enumerate(steps):
    p = step[voice]
    if p < 0:
      continue
    if notes and notes[-1][2] == p and notes[-1][0] + notes[-1][1] == t:
      notes[-1][1] += 1
    else:
      notes.append([t, 1, p])
  return notes


def write_midi(path: str, steps, tempo_bpm: int = TEMPO_BPM) -> str:
  """A type-1 MIDI file with one track (and channel) per voice."""
  import mido

  tpb = 480
  mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
  meta = mido.MidiTrack()
  meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
  meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
  mid.tracks.append(meta)
  for v, name in enumerate(VOICES):
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.Message("program_change", program=52, channel=v, time=0))  # Choir.
    now = 0
    for start, length, pitch in _notes(steps, v):
      track.append(mido.Message("note_on", note=pitch, velocity=80, channel=v,
                                time=start * tpb - now))
      track.append(mido.Message("note_off", note=pitch, velocity=0, channel=v,
                                time=length * tpb))
      now = (start + length) * tpb
    mid.tracks.append(track)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  mid.save(path)
  return path


def synthesize(steps, rate: int = 22050, tempo_bpm: int = TEMPO_BPM) -> np.ndarray:
  """A simple organ-like rendering: a few harmonics per note, soft attack and release."""
  beat = 60.0 / tempo_bpm
  total = int((len(steps) * beat + 0.5) * rate)
  out = np.zeros(total, np.float32)
  for v in range(len(VOICES)):
    for start, length, pitch in _notes(steps, v):
      n = int(length * beat * rate)
      t = np.arange(n, dtype=np.float32) / rate
      f = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
      tone = sum(a * np.sin(2 * np.pi * k * f * t) for k, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
      env = np.minimum(1.0, t / 0.02) * np.minimum(1.0, (n / rate - t) / 0.05)
      i = int(start * beat * rate)
      out[i:i + n] += 0.15 * tone * env
  return np.clip(out, -1.0, 1.0)


def write_wav(path: str, steps, rate: int = 22050) -> str:
  audio = (synthesize(steps, rate) * 32767).astype("<i2")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with wave.open(path, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(audio.tobytes())
  return path


COLORS = np.array([[0.85, 0.2, 0.2], [0.2, 0.65, 0.2], [0.2, 0.4, 0.9], [0.9, 0.6, 0.1]])


def piano_roll(pieces, cell: int = 6, row: int = 3) -> np.ndarray:
  """One band per piece: time to the right (`cell` pixels per quarter note), pitch up (`row`
  pixels per semitone), a colour per voice (S red, A green, T blue, B orange); grey lines
  mark the Cs."""
  rows = HIGH - LOW + 1
  band = rows * row + 6
  width = max([len(s) for s in pieces] + [1]) * cell
  out = np.ones((len(pieces) * band, width, 3), np.float32)
  for i, steps in enumerate(pieces):
    top = i * band
    for p in range(LOW, HIGH + 1):
      if p % 12 == 0:
        out[top + (HIGH - p) * row + row // 2, :] = 0.85
    for t, step in enumerate(steps):
      for v, p in enumerate(step):
        if p >= 0:
          y = top + (HIGH - p) * row
          out[y:y + row, t * cell:(t + 1) * cell - 1] = COLORS[v]
    out[top + rows * row + 2:top + rows * row + 4, :] = 0.5
  return (out * 255 + 0.5).astype(np.uint8)


def nll_per_step_factor(stream: np.ndarray, num_steps: int) -> float:
  """Predicted tokens per quarter-note step: NLL/token x this = NLL per time step."""
  return (len(stream) - 1) / max(num_steps, 1)


def _stream(name, split, data_dir, tokenizer):
  pieces = read_chorales(data_dir, split)
  stream = chorale_stream(pieces, tokenizer)
  return stream, {"nll_per_step": nll_per_step_factor(stream, sum(len(p) for p in pieces))}


text.register("jsb_chorales", text.TokenSource(_stream, lambda cfg: ChoraleTokenizer()))
