"""Captioned compositional images: one or two coloured glyphs on a black canvas, and a sentence.

`captions:NAME[+NAME...]` (`captions:mnist`, `captions:fashion_mnist`,
`captions:mnist+fashion_mnist`) composes the greyscale images of registered sources that name
their classes (`class_names`, see `gen.core.data.sources`) into scenes that a caption describes,
for any family: `--config.data.name=captions:mnist` (files from `data.dir` or `$GEN_DATA_DIR`, as
the sources read them). The identities are the sources' classes, numbered in order (mnist then
fashion_mnist: 20 identities).

Scene. A `CANVAS`x`CANVAS` RGB uint8 image, black, with 1 or 2 objects. An object is an identity,
a colour (`COLOURS`, pure `RGB` corners of the cube), a size (`SIZES`: the glyph's square bounding
box resized to `SIZE_PIXELS`, antialiased; the box rather than the whole 28x28 image, so that
"small" and "large" mean the same extent for a thin digit and a wide coat) and a position slot
(`SLOTS`, boxes centred on `CENTRES`). One object takes any slot; two take left and right or top
and bottom (`TWO_OBJECT_SLOTS`), so their boxes never overlap. The grey glyph (0..1) times the
colour is pasted with a maximum.

Captions. Lowercase words separated by spaces, with ':' and ',' as words of their own
(`words(caption)` is the split every reader should use; `WORDS` is every word any caption can
hold, `MAX_WORDS` the longest caption). Templates (`ONE_OBJECT`, `TWO_OBJECTS`) place noun phrases
(`NOUN_PHRASES`: "a small red 7", "a big coat in blue", "a tiny digit seven coloured cyan")
by location ("on the left", "in the top half"), by relation ("a red 7 above a blue 2", "a blue 2
below a red 7", "to the left of") or by order ("from right to left : ... and ..."), with
synonyms for sizes, identities ("7" / "seven" / "digit 7", "trousers" / "pants", "sneaker" /
"trainer") and the kind of two objects ("two numbers : ...", "two garments : ...", "two things
: ..."). Which object a caption names first is drawn too, so the words must be read, not their
order. `parse(caption, names)` reads any caption back to its objects; text outside the grammar is
a ValueError naming the word or the phrase it could not read.

Held-out compositions. `held_out(identity, colour)`: (identity + colour) % 6 == 0, one colour per
identity (1/6 of the colour-identity pairs). Splits: `train` (the sources' train images; never a
held-out pair), `test` (their test images; never a held-out pair), `test_held_out` (their test
images; every record has at least one held-out pair: a model that only memorised the training
compositions fails there) and `train_all` (the train images, any pair: for a judge, which must
read the held-out compositions too; one trained on `train` reads a red 0, never seen, badly).

Records. `{"image": uint8[32, 32, 3], "label": int32, "targets": int32[12]}`: `label` is the
identity of the first object (objects are listed in slot order: left or top first); `targets`
(`targets_of`) holds per slot (left, right, top, bottom) identity + 1, colour + 1 and size + 1,
0 for an empty slot; `heads(num_identities)` names them with their class counts and `scores`
compares predicted targets with true ones. A split has as many records as the sources' images:
record i shows image i as its first object; the second object's image, every attribute and the
caption come from `np.random.default_rng([seed, split id, i])`: the same on every machine.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Sequence

import numpy as np
from PIL import Image

from gen.core.data import sources
from gen.core.data.sources import DataError

PREFIX = "captions:"

# ----------------------------------------------------------------------------- geometry

CANVAS = 32
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                [0, 255, 255]], np.float32)
SIZES = ("small", "large")
SIZE_PIXELS = (10, 16)  # Side of the square the glyph's bounding box is resized to.
SLOTS = ("left", "right", "top", "bottom")
CENTRES = ((16, 8), (16, 24), (8, 16), (24, 16))  # (row, column) of each slot's box centre.
TWO_OBJECT_SLOTS = ((0, 1), (2, 3))  # Left and right, or top and bottom.
ATTRIBUTES = ("identity", "colour", "size")  # Per slot, in this order in `targets`.
NUM_TARGETS = len(SLOTS) * len(ATTRIBUTES)

SPLITS = {"train": 0, "test": 1, "test_held_out": 2, "train_all": 3}  # -> its random stream.
IMAGE_SPLIT = {"train": "train", "test": "test", "test_held_out": "test",  # Whose images.
               "train_all": "train"}


def slot_boxes() -> list[tuple[int, int, int, int]]:
  """(top, left, bottom, right) in pixels of each slot's large box, where its object lies."""
  s = SIZE_PIXELS[-1]
  return [(r - s // 2, c - s // 2, r - s // 2 + s, c - s // 2 + s) for r, c in CENTRES]


def held_out(identity: int, colour: int) -> bool:
  """Whether the colour-identity pair never appears in `train` (nor in `test`)."""
  return (identity + colour) % len(COLOURS) == 0


@dataclasses.dataclass(frozen=True, order=True)
class Object:
  """One object of a scene (indices into the identities, `COLOURS`, `SIZES` and `SLOTS`).
  Ordered by slot first, the order in which a scene lists its objects."""

  slot: int
  identity: int
  colour: int
  size: int


# -------------------------------------------------------------------------------- words

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Class name -> the phrases that name it (the first is the name itself).
IDENTITY_WORDS = {
    **{str(d): (str(d), w, f"digit {d}", f"digit {w}", f"number {d}", f"number {w}")
       for d, w in enumerate(NUMBER_WORDS)},
    "t-shirt": ("t-shirt", "tee"), "trouser": ("trouser", "trousers", "pants"),
    "pullover": ("pullover", "sweater", "jumper"), "dress": ("dress",),
    "coat": ("coat", "jacket"), "sandal": ("sandal",), "shirt": ("shirt",),
    "sneaker": ("sneaker", "trainer"), "bag": ("bag", "handbag"),
    "ankle boot": ("ankle boot", "boot"),
}
# What two objects are, by kind ("number" for a numeral class name, else "garment"); "any" fits
# every scene.
KIND_WORDS = {"number": ("numbers", "numerals"), "garment": ("garments", "clothes"),
              "any": ("objects", "things", "items")}
SIZE_WORDS = (("small", "little", "tiny"), ("large", "big"))
LOCATIONS = (("on the left", "at the left", "on the left side", "in the left half"),
             ("on the right", "at the right", "on the right side", "in the right half"),
             ("at the top", "on top", "in the top half", "near the top"),
             ("at the bottom", "on the bottom", "in the bottom half", "near the bottom"))
# (slot of a, slot of b) -> "a RELATION b".
RELATIONS = {(0, 1): ("to the left of", "left of"), (1, 0): ("to the right of", "right of"),
             (2, 3): ("above", "over"), (3, 2): ("below", "under", "beneath")}
# (slot of a, slot of b) -> "ORDER : a and b".
ORDERS = {(0, 1): ("from left to right",), (1, 0): ("from right to left",),
          (2, 3): ("from top to bottom",), (3, 2): ("from bottom to top",)}

NOUN_PHRASES = ("a {size} {colour} {identity}", "a {size} {identity} in {colour}",
                "a {size} {identity} coloured {colour}")
ONE_OBJECT = ("{a} {where_a}", "there is {a} {where_a}", "{where_a} there is {a}",
              "an image of {a} {where_a}")
TWO_OBJECTS = ("{a} {where_a} and {b} {where_b}", "{a} {relation} {b}",
               "two {kind} : {a} {where_a} and {b} {where_b}", "two {kind} : {a} {relation} {b}",
               "{where_a} there is {a} and {where_b} there is {b}", "{order} : {a} and {b}",
               "{a} and {b} , {order}")


def words(caption: str) -> list[str]:
  """The words of a caption, lowercase: runs of letters, digits, '-' and "'", and every other
  visible character on its own (':' and ',')."""
  return re.findall(r"[a-z0-9'-]+|[^\sa-z0-9'-]", caption.lower())


def _fields(template: str) -> list[str]:
  return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _literal_words(template: str) -> list[str]:
  return words(re.sub(r"\{\w+\}", " ", template))


def _phrases() -> dict[str, list[str]]:
  """Every phrase each template field can take."""
  return {"size": [w for ws in SIZE_WORDS for w in ws], "colour": list(COLOURS),
          "identity": [p for ps in IDENTITY_WORDS.values() for p in ps],
          "where_a": [p for ps in LOCATIONS for p in ps],
          "where_b": [p for ps in LOCATIONS for p in ps],
          "relation": [p for ps in RELATIONS.values() for p in ps],
          "order": [p for ps in ORDERS.values() for p in ps],
          "kind": [p for ps in KIND_WORDS.values() for p in ps]}


def _every_word() -> tuple[tuple[str, ...], int]:
  phrases = _phrases()
  found = {w for ps in phrases.values() for p in ps for w in words(p)}
  longest = {k: max(len(words(p)) for p in ps) for k, ps in phrases.items()}
  for t in NOUN_PHRASES:
    found |= set(_literal_words(t))
  longest["a"] = longest["b"] = max(
      len(_literal_words(t)) + sum(longest[f] for f in _fields(t)) for t in NOUN_PHRASES)
  for t in ONE_OBJECT + TWO_OBJECTS:
    found |= set(_literal_words(t))
  most = max(len(_literal_words(t)) + sum(longest[f] for f in _fields(t))
             for t in ONE_OBJECT + TWO_OBJECTS)
  return tuple(sorted(found)), most


WORDS, MAX_WORDS = _every_word()  # Every word a caption can hold (sorted); most words in one.


# ------------------------------------------------------------------------------ targets


def heads(num_identities: int) -> list[tuple[str, int]]:
  """The targets' names ("left/identity", ...) and class counts (0 is an empty slot)."""
  counts = (num_identities + 1, len(COLOURS) + 1, len(SIZES) + 1)
  return [(f"{s}/{a}", c) for s in SLOTS for a, c in zip(ATTRIBUTES, counts)]


def targets_of(objects: Sequence[Object]) -> np.ndarray:
  """int32[12]: per slot (left, right, top, bottom) identity + 1, colour + 1, size + 1."""
  t = np.zeros((len(SLOTS), len(ATTRIBUTES)), np.int32)
  for o in objects:
    t[o.slot] = (o.identity + 1, o.colour + 1, o.size + 1)
  return t.reshape(NUM_TARGETS)


def scores(predicted, targets) -> dict:
  """Per example, 1.0 where right: `faithful` (all 12 targets), each attribute over all slots
  (`identity`, `colour`, `size`) and `position` (which slots hold an object, read from the
  identities). Works on numpy and jax arrays [B, 12]."""
  p = predicted.reshape(-1, len(SLOTS), len(ATTRIBUTES))
  t = targets.reshape(-1, len(SLOTS), len(ATTRIBUTES))
  right = p == t
  out = {a: right[:, :, k].all(axis=1) for k, a in enumerate(ATTRIBUTES)}
  out["position"] = ((p[:, :, 0] == 0) == (t[:, :, 0] == 0)).all(axis=1)
  out["faithful"] = right.all(axis=(1, 2))
  return {k: v.astype(np.float32) for k, v in out.items()}


def identity_confusion(predicted, targets, num_identities: int) -> np.ndarray:
  """int64[I, I + 1]: over every object the targets hold, row = its identity, column = what
  was read in its slot (0: the slot looks empty, 1 + i: identity i). Its trace over the
  objects is the share of objects drawn as their caption's identity."""
  p = np.asarray(predicted).reshape(-1, len(SLOTS), len(ATTRIBUTES))[:, :, 0]
  t = np.asarray(targets).reshape(-1, len(SLOTS), len(ATTRIBUTES))[:, :, 0]
  held = t > 0
  out = np.zeros((num_identities, num_identities + 1), np.int64)
  np.add.at(out, (t[held] - 1, p[held]), 1)
  return out


# -------------------------------------------------------------------------------- parse


def _alternatives(options) -> str:
  return "(?:" + "|".join(re.escape(o) for o in sorted(set(options), key=len, reverse=True)) + ")"


def _pattern(template: str, fields: dict[str, str], named: bool = True) -> re.Pattern:
  out = []
  for literal, field, _, _ in string.Formatter().parse(template):
    out.append(re.escape(literal))
    if field:
      out.append(f"(?P<{field}>{fields[field]})" if named else fields[field])
  return re.compile("".join(out))


def _grammar():
  phrases = {k: _alternatives(v) for k, v in _phrases().items()}
  nouns = [_pattern(t, phrases) for t in NOUN_PHRASES]
  noun = "(?:" + "|".join(_pattern(t, phrases, named=False).pattern for t in NOUN_PHRASES) + ")"
  fields = {**phrases, "a": noun, "b": noun}
  return nouns, [_pattern(t, fields) for t in ONE_OBJECT + TWO_OBJECTS]


_NOUN_PATTERNS, _SENTENCE_PATTERNS = _grammar()
_IDENTITY_OF = {p: name for name, ps in IDENTITY_WORDS.items() for p in ps}
_SIZE_OF = {w: s for s, ws in enumerate(SIZE_WORDS) for w in ws}
_SLOT_OF = {p: s for s, ps in enumerate(LOCATIONS) for p in ps}
_RELATION_OF = {p: k for k, ps in RELATIONS.items() for p in ps}
_ORDER_OF = {p: k for k, ps in ORDERS.items() for p in ps}


def kind_of(name: str) -> str:
  """The kind of a class (a key of `KIND_WORDS`): `number` for a numeral, else `garment`."""
  return "number" if name.isdigit() else "garment"


def _noun(text: str, slot: int, names: Sequence[str]) -> Object:
  m = next(filter(None, (p.fullmatch(text) for p in _NOUN_PATTERNS)))
  name = _IDENTITY_OF[m["identity"]]
  if name not in names:
    raise ValueError(f"'{m['identity']}' in '{text}' is not one of this dataset's identities "
                     f"({', '.join(names)})")
  return Object(slot=slot, identity=names.index(name), colour=COLOURS.index(m["colour"]),
                size=_SIZE_OF[m["size"]])


def parse(caption: str, names: Sequence[str]) -> list[Object]:
  """The objects a caption describes, in slot order; `names` are the dataset's identities (a
  source's `names`). Raises ValueError naming the word or phrase it cannot read."""
  said = words(caption)
  unknown = [w for w in said if w not in WORDS]
  if unknown:
    raise ValueError(f"cannot read the word '{unknown[0]}' in '{caption}': captions use only "
                     "the words of gen.core.data.captions.WORDS")
  text = " ".join(said)
  m = next(filter(None, (p.fullmatch(text) for p in _SENTENCE_PATTERNS)), None)
  if m is None:
    raise ValueError(f"cannot read '{caption}' as a caption of one or two objects (e.g. 'a "
                     "small red 7 on the left', 'a big blue 2 above a tiny green 5')")
  found = m.groupdict()
  if found.get("b") is None:
    return [_noun(found["a"], _SLOT_OF[found["where_a"]], list(names))]
  if found.get("relation"):
    slots = _RELATION_OF[found["relation"]]
  elif found.get("order"):
    slots = _ORDER_OF[found["order"]]
  else:
    slots = (_SLOT_OF[found["where_a"]], _SLOT_OF[found["where_b"]])
    if tuple(sorted(slots)) not in TWO_OBJECT_SLOTS:
      raise ValueError(f"cannot place '{found['where_a']}' and '{found['where_b']}' together in "
                       f"'{caption}': two objects are left and right, or top and bottom")
  objects = [_noun(found[k], s, list(names)) for k, s in zip("ab", slots)]
  kind = found.get("kind")
  fits = {kind_of(names[o.identity]) for o in objects}
  if kind and kind not in KIND_WORDS["any"] and fits != {k for k, ws in KIND_WORDS.items()
                                                         if kind in ws}:
    raise ValueError(f"'two {kind}' does not describe '{found['a']}' and '{found['b']}' in "
                     f"'{caption}'")
  return sorted(objects)


# ------------------------------------------------------------------------------- render


def glyph(image: np.ndarray, size: int) -> np.ndarray:
  """float32[size, size] in [0, 1]: a greyscale image's square bounding box (centred),
  resized with antialiasing (Lanczos)."""
  g = image.reshape(image.shape[0], image.shape[1])
  rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
  if len(rows):
    g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  side = max(g.shape)
  square = np.zeros((side, side), np.uint8)
  r, c = (side - g.shape[0]) // 2, (side - g.shape[1]) // 2
  square[r:r + g.shape[0], c:c + g.shape[1]] = g
  small = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
  return np.asarray(small, np.float32) / 255.0


def render(objects: Sequence[Object], images: Sequence[np.ndarray]) -> np.ndarray:
  """uint8[CANVAS, CANVAS, 3]: each object drawn from its greyscale source image."""
  canvas = np.zeros((CANVAS, CANVAS, 3), np.float32)
  for o, image in zip(objects, images):
    s = SIZE_PIXELS[o.size]
    top, left = CENTRES[o.slot][0] - s // 2, CENTRES[o.slot][1] - s // 2
    box = canvas[top:top + s, left:left + s]
    np.maximum(box, glyph(image, s)[..., None] * RGB[o.colour], out=box)
  return np.round(canvas).astype(np.uint8)


# ------------------------------------------------------------------------------- source


class CaptionSource:
  """The captioned scenes of one split, over greyscale sources that name their classes."""

  shape = (CANVAS, CANVAS, 3)

  def __init__(self, bases: Sequence, split: str, name: str, seed: int = 0):
    if split not in SPLITS:
      raise DataError(f"{name} has splits {', '.join(repr(s) for s in SPLITS)}, not '{split}'")
    names = []
    for b in bases:
      if not getattr(b, "class_names", ()):
        raise DataError(f"{name}: the source {b!r} does not name its classes")
      if b.images.ndim != 4 or b.images.shape[-1] != 1:
        raise DataError(f"{name}: {b!r} is not greyscale (images {b.images.shape[1:]})")
      unknown = [c for c in b.class_names if c not in IDENTITY_WORDS]
      if unknown:
        raise DataError(f"{name}: no words for the class '{unknown[0]}' of {b!r}")
      names += b.class_names
    if len(set(names)) < len(names):
      raise DataError(f"{name}: two sources share class names; name each source once")
    self.name, self.split, self.seed = f"{name}/{split}", split, seed
    self.names = tuple(names)
    self._images = [b.images for b in bases]
    self._starts = np.cumsum([0] + [len(b) for b in bases])
    offsets = np.cumsum([0] + [b.num_classes for b in bases])
    self._labels = np.concatenate([b.labels + o for b, o in zip(bases, offsets)])
    self._by_class = None

  @property
  def num_classes(self) -> int:
    return len(self.names)

  @property
  def targets(self) -> list[tuple[str, int]]:
    return heads(len(self.names))

  def __len__(self) -> int:
    return len(self._labels)

  def __repr__(self):
    return f"CaptionSource({self.name}, n={len(self)}, identities={len(self.names)})"

  def _image(self, i: int) -> np.ndarray:
    b = int(np.searchsorted(self._starts, i, side="right")) - 1
    return self._images[b][i - self._starts[b]]

  def _draw(self, i: int) -> tuple[list[Object], list[int], np.random.Generator]:
    """Record i's objects (slot order), their images and the generator that goes on to draw
    its caption."""
    if not 0 <= i < len(self):
      raise IndexError(f"{self.name} has {len(self)} records, not {i + 1}")
    rng = np.random.default_rng([self.seed, SPLITS[self.split], i])
    n = 1 + int(rng.integers(2))
    slots = (int(rng.integers(len(SLOTS))),) if n == 1 else TWO_OBJECT_SLOTS[rng.integers(2)]
    images = [i] + [int(rng.integers(len(self))) for _ in range(n - 1)]
    forced = int(rng.integers(n)) if self.split == "test_held_out" else -1
    any_colour = self.split in ("test_held_out", "train_all")
    objects = []
    for k, (slot, image) in enumerate(zip(slots, images)):
      identity = int(self._labels[image])
      if k == forced:  # This identity's held-out colour(s).
        allowed = [c for c in range(len(COLOURS)) if held_out(identity, c)]
      else:
        allowed = [c for c in range(len(COLOURS)) if any_colour or not held_out(identity, c)]
      colour = allowed[rng.integers(len(allowed))]
      objects.append(Object(slot=slot, identity=identity, colour=colour,
                            size=int(rng.integers(len(SIZES)))))
    return objects, images, rng

  def objects(self, i: int) -> list[Object]:
    """Record i's objects, in slot order (the first shows image i)."""
    return self._draw(i)[0]

  def __getitem__(self, i):
    objects, images, _ = self._draw(int(i))
    return {"image": render(objects, [self._image(k) for k in images]),
            "label": np.int32(objects[0].identity), "targets": targets_of(objects)}

  def caption(self, i: int) -> str:
    """Record i's caption (its template and words drawn after its objects)."""
    objects, _, rng = self._draw(int(i))
    return describe(objects, self.names, rng)

  @property
  def caption_words(self) -> tuple[str, ...]:
    """Every word a caption of this source can hold: `WORDS` less the identity and kind words
    of classes it does not have (a tokenizer trained on its captions adds these, so that it
    knows every word of the test captions)."""
    def words_of(names):
      kinds = {kind_of(n) for n in names}
      return ({w for n in names for p in IDENTITY_WORDS[n] for w in words(p)}
              | {w for k in kinds for p in KIND_WORDS[k] for w in words(p)})

    everyone = {w for k, ps in _phrases().items() if k not in ("identity", "kind") for p in ps
                for w in words(p)}
    everyone |= {w for t in NOUN_PHRASES + ONE_OBJECT + TWO_OBJECTS for w in _literal_words(t)}
    absent = (words_of([n for n in IDENTITY_WORDS if n not in self.names]) - words_of(self.names)
              - everyone)
    return tuple(w for w in WORDS if w not in absent)

  def parse(self, caption: str) -> list[Object]:
    """`parse(caption, self.names)`."""
    return parse(caption, self.names)

  def render(self, objects: Sequence[Object], rng: np.random.Generator | None = None
             ) -> np.ndarray:
    """A scene of `objects`, each drawn from an image of its identity in this split: a random
    one with `rng`, else the first."""
    if self._by_class is None:
      self._by_class = [np.flatnonzero(self._labels == k) for k in range(self.num_classes)]
    pool = [self._by_class[o.identity] for o in objects]
    picks = [p[rng.integers(len(p))] if rng is not None else p[0] for p in pool]
    return render(objects, [self._image(int(k)) for k in picks])


def _choose(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[rng.integers(len(options))]


def _noun_phrase(o: Object, names: Sequence[str], rng: np.random.Generator) -> str:
  return _choose(rng, NOUN_PHRASES).format(
      size=_choose(rng, SIZE_WORDS[o.size]), colour=COLOURS[o.colour],
      identity=_choose(rng, IDENTITY_WORDS[names[o.identity]]))


def describe(objects: Sequence[Object], names: Sequence[str], rng: np.random.Generator) -> str:
  """A caption of one or two objects (template, order of mention and synonyms from `rng`)."""
  if len(objects) == 1:
    a, = objects
    return _choose(rng, ONE_OBJECT).format(a=_noun_phrase(a, names, rng),
                                           where_a=_choose(rng, LOCATIONS[a.slot]))
  a, b = objects if rng.integers(2) else objects[::-1]
  kinds = {kind_of(names[o.identity]) for o in objects}
  kind_words = KIND_WORDS["any"] + (KIND_WORDS[kinds.pop()] if len(kinds) == 1 else ())
  return _choose(rng, TWO_OBJECTS).format(
      a=_noun_phrase(a, names, rng), b=_noun_phrase(b, names, rng),
      where_a=_choose(rng, LOCATIONS[a.slot]), where_b=_choose(rng, LOCATIONS[b.slot]),
      relation=_choose(rng, RELATIONS[a.slot, b.slot]),
      order=_choose(rng, ORDERS[a.slot, b.slot]), kind=_choose(rng, kind_words))


def load(name: str, split: str, data_dir: str = "") -> CaptionSource:
  """The source `captions:NAME[+NAME...]` of `split`, over those sources' images."""
  parts = name[len(PREFIX):].split("+")
  if not all(parts):
    raise DataError(f"'{name}': name the image sources after '{PREFIX}', joined by '+' "
                    f"(e.g. '{PREFIX}{'+'.join(sources.CLASS_NAMES)}')")
  if split not in SPLITS:
    raise DataError(f"{name} has splits {', '.join(repr(s) for s in SPLITS)}, not '{split}'")
  return CaptionSource([sources.load(p, IMAGE_SPLIT[split], data_dir) for p in parts], split,
                       name)


sources.register(PREFIX, load)
