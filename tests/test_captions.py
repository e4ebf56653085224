"""Captioned compositional scenes (`captions:NAME`), their judge and `gen eval --metric=captions`.

Most tests use made-up glyphs (`glyphs`: numerals, `garment_glyphs`: garments), registered as
sources for the test, so they need no files; those on MNIST skip when the data is absent.

For a text-to-image run, `check_eval(run, judge)` is the helper to reuse: it scores the run with
`gen.eval.captions.evaluate` and checks the table's shape. Here it scores two stand-in runs: one
that draws the real scene of each caption (`renderer`: faithful must be 1 under the oracle judge)
and one that draws noise (faithful ~0).
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_CLASSIFIER, assert_one_line_error

from gen import cli
from gen.core import config as config_lib
from gen.core import runs
from gen.core import train as train_lib
from gen.core.data import DataError, ImageData, captions, load, sources
from gen.core.family import DataSpec, Pipeline
from gen.eval import captions as captions_eval
from gen.eval import fd

DIGIT_NAMES = tuple("0123456789")
GARMENT_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                 "bag", "ankle boot")


def _glyphs(names, split, seed):
  """Made-up 28x28 greyscale glyphs: class k is a fixed 4x4 pattern of 7-pixel blocks in a frame,
  each image at its own brightness. 60 train and 40 test images."""
  n = 60 if split == "train" else 40
  rng = np.random.default_rng([seed, n])
  patterns = []
  for k in range(len(names)):
    bits = np.random.default_rng([seed, k]).random((4, 4)) < 0.5
    bits[0, 0] = bits[3, 3] = True  # The bounding box is the whole image.
    patterns.append(np.kron(bits, np.ones((7, 7))))
  labels = np.arange(n) % len(names)
  brightness = rng.integers(128, 256, n)
  images = np.stack([patterns[k] * b for k, b in zip(labels, brightness)]).astype(np.uint8)
  return sources.ArraySource(images[..., None], labels, len(names), f"glyphs/{split}",
                             tuple(names))


def _register(monkeypatch):
  monkeypatch.setitem(sources.SOURCES, "glyphs", lambda n, split, d: _glyphs(DIGIT_NAMES, split, 0))
  monkeypatch.setitem(sources.SOURCES, "garment_glyphs",
                      lambda n, split, d: _glyphs(GARMENT_NAMES, split, 1))


@pytest.fixture
def glyph_sources(monkeypatch):
  """Registers `glyphs` (numerals) and `garment_glyphs` (garments) for this test."""
  _register(monkeypatch)


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
  """The workdir of a judge of `captions:glyphs` trained 4 steps, shared by this module's tests
  (which register the glyphs again to read it)."""
  with pytest.MonkeyPatch.context() as monkeypatch:
    _register(monkeypatch)
    return _train_judge(tmp_path_factory.mktemp("judge"))


# --------------------------------------------------------------------------- the source


def test_captions_read_back_to_their_objects(glyph_sources):
  """Every caption parses to its record's objects and targets, in words of WORDS."""
  seen = set()
  for split in captions.SPLITS:
    src = load("captions:glyphs+garment_glyphs", split)
    assert src.num_classes == 20 and src.names == DIGIT_NAMES + GARMENT_NAMES
    assert src.shape == (32, 32, 3) and len(src) == (80 if split.startswith("test") else 120)
    for seed in range(8):  # Other seeds: more captions from the same images.
      s = captions.CaptionSource([_glyphs(DIGIT_NAMES, split, 0),
                                  _glyphs(GARMENT_NAMES, split, 1)], split, "x", seed=seed)
      for i in range(len(s)):
        rec, text, objects = s[i], s.caption(i), s.objects(i)
        said = captions.words(text)
        assert set(said) <= set(captions.WORDS) and len(said) <= captions.MAX_WORDS, text
        assert captions.parse(text, s.names) == objects, text
        np.testing.assert_array_equal(captions.targets_of(s.parse(text)), rec["targets"])
        assert rec["label"] == objects[0].identity and rec["label"].dtype == np.int32
        assert rec["image"].dtype == np.uint8 and rec["image"].shape == (32, 32, 3)
        seen.update(said)
  # The captions use the whole grammar: almost every word appears in 2,560 captions.
  assert len(seen) > 0.9 * len(captions.WORDS), sorted(set(captions.WORDS) - seen)


def test_words_and_targets():
  assert captions.words("A red 7, on the LEFT:") == ["a", "red", "7", ",", "on", "the", "left",
                                                     ":"]
  assert captions.words("  a  tiny t-shirt ") == ["a", "tiny", "t-shirt"]
  assert list(captions.WORDS) == sorted(set(captions.WORDS))
  heads = captions.heads(10)
  assert len(heads) == captions.NUM_TARGETS == 12
  assert heads[:3] == [("left/identity", 11), ("left/colour", 7), ("left/size", 3)]
  assert heads[-1] == ("bottom/size", 3)
  t = captions.targets_of([captions.Object(slot=1, identity=7, colour=0, size=1),
                           captions.Object(slot=0, identity=2, colour=2, size=0)])
  np.testing.assert_array_equal(t, [3, 3, 1, 8, 1, 2, 0, 0, 0, 0, 0, 0])
  assert t.dtype == np.int32


def test_parse_examples_and_errors():
  parse = lambda text: captions.parse(text, DIGIT_NAMES)
  O = captions.Object
  assert parse("a small red 7 on the left") == [O(slot=0, identity=7, colour=0, size=0)]
  # A relation names the objects in either order; the result is in slot order.
  below = parse("a big digit two in blue below a tiny red seven")
  assert below == [O(slot=2, identity=7, colour=0, size=0), O(slot=3, identity=2, colour=2, size=1)]
  assert parse("a tiny red seven above a big digit two in blue") == below
  assert parse("from right to left : a large cyan 4 and a little number zero coloured green") == [
      O(slot=0, identity=0, colour=1, size=0), O(slot=1, identity=4, colour=5, size=1)]
  assert parse("Two numbers: a small red 7 on the right and a big blue 2 on the left") == [
      O(slot=0, identity=2, colour=2, size=1), O(slot=1, identity=7, colour=0, size=0)]
  bad = {"a small red 7 on the moon": "'moon'",
         "a small purple 7 on the left": "'purple'",
         "a small red 7.": "'.'",
         "on the left a small red 7": "cannot read 'on the left a small red 7'",
         "a red 7 on the left": "cannot read",  # No size.
         "a small red 7 on the left and a big blue 2 at the top": "cannot place",
         "two garments : a small red 7 above a big blue 2": "'two garments' does not describe",
         "a small red coat on the left": "'coat' in 'a small red coat' is not one of"}
  for text, needle in bad.items():
    with pytest.raises(ValueError) as e:
      parse(text)
    assert needle in str(e.value) and "\n" not in str(e.value), (text, str(e.value))


def test_held_out_compositions_never_reach_train(glyph_sources):
  """No held-out colour-identity pair in train or test; one or more in every test_held_out
  record; any in train_all (a judge's). The rule holds out one colour per identity (1/6 of the
  pairs)."""
  assert sum(captions.held_out(i, c) for i in range(20) for c in range(6)) == 20
  for split in captions.SPLITS:
    counts = np.zeros((20, 6), int)
    for seed in range(25):
      s = captions.CaptionSource([_glyphs(DIGIT_NAMES, split, 0),
                                  _glyphs(GARMENT_NAMES, split, 1)], split, "x", seed=seed)
      for i in range(len(s)):
        held = [captions.held_out(o.identity, o.colour) for o in s.objects(i)]
        if split in ("train", "test"):
          assert not any(held), (split, i)
        elif split == "test_held_out":
          assert any(held), i
        for o in s.objects(i):
          counts[o.identity, o.colour] += 1
    held = np.array([[captions.held_out(i, c) for c in range(6)] for i in range(20)])
    if split in ("train", "test"):
      assert counts[held].sum() == 0 and (counts[~held] > 0).all()
    else:
      assert (counts[held] > 0).all()


def test_held_out_pairs_never_in_mnist_train(shared_data):
  """The same on the real MNIST train split: 20,000 records."""
  src = load("captions:mnist", "train", shared_data)
  assert len(src) == 60000
  for i in range(0, 60000, 3):
    assert not any(captions.held_out(o.identity, o.colour) for o in src.objects(i)), i
  held_out = load("captions:mnist", "test_held_out", shared_data)
  assert len(held_out) == 10000
  assert all(any(captions.held_out(o.identity, o.colour) for o in held_out.objects(i))
             for i in range(0, 10000, 7))


def test_records_are_deterministic_per_seed_split_and_index(glyph_sources):
  a, b = load("captions:glyphs", "test"), load("captions:glyphs", "test")
  for i in (0, 7, 39):
    np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    assert a.caption(i) == b.caption(i) and a.objects(i) == b.objects(i)
  other_seed = captions.CaptionSource([_glyphs(DIGIT_NAMES, "test", 0)], "test", "x", seed=1)
  assert [a.caption(i) for i in range(10)] != [other_seed.caption(i) for i in range(10)]
  held = load("captions:glyphs", "test_held_out")  # Same images, its own draws.
  assert [a.caption(i) for i in range(10)] != [held.caption(i) for i in range(10)]
  assert a.objects(3)[0].identity == held.objects(3)[0].identity == 3  # Record i shows image i.


def test_scenes_are_drawn_in_their_boxes(glyph_sources):
  src = load("captions:glyphs", "train")
  O = captions.Object
  for slot in range(4):
    for size in range(2):
      image = src.render([O(slot=slot, identity=3, colour=4, size=size)])
      s = captions.SIZE_PIXELS[size]
      r, c = captions.CENTRES[slot]
      box = np.zeros((32, 32), bool)
      box[r - s // 2:r - s // 2 + s, c - s // 2:c - s // 2 + s] = True
      lit = image.max(-1) > 0
      assert lit[box].any() and not lit[~box].any()
      assert (image[..., 1] == 0).all() and (image[..., 0] == image[..., 2]).all()  # Magenta.
  both = src.render([O(slot=2, identity=1, colour=0, size=1), O(slot=3, identity=2, colour=2,
                                                               size=1)])
  assert both[:16, :, 0].any() and not both[:16, :, 2].any()
  assert both[16:, :, 2].any() and not both[16:, :, 0].any()


def test_bad_names_and_splits_are_one_line_errors(glyph_sources):
  cases = {("captions:nothing", "train"): "unknown data source 'nothing'",
           ("captions:", "train"): "name the image sources after 'captions:'",
           ("captions:glyphs+", "train"): "name the image sources",
           ("captions:glyphs", "validation"): "not 'validation'",
           ("captions:glyphs+glyphs", "train"): "share class names",
           ("captions:captions:glyphs", "train"): "does not name its classes"}
  for (name, split), needle in cases.items():
    with pytest.raises(DataError) as e:
      load(name, split)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
  with pytest.raises(IndexError):
    load("captions:glyphs", "test").caption(40)


def test_mnist_scenes(shared_data):
  src = load("captions:mnist+fashion_mnist", "test", shared_data)
  assert len(src) == 20000 and src.num_classes == 20
  for i in range(0, 20000, 97):
    assert src.parse(src.caption(i)) == src.objects(i)
  assert src.names[10:] == GARMENT_NAMES


# ------------------------------------------------------------------------------ batches


def _config(**overrides):
  c = config_lib.load("gen.classifier.configs.captions_mnist")
  config_lib.apply_overrides(c, {"data.name": "captions:glyphs", **TINY_CLASSIFIER,
                                 "model.channels": (8, 8), **overrides})
  return c


def test_image_data_passes_targets_through(glyph_sources):
  data = ImageData(_config(), process_index=0, process_count=1)
  spec = data.spec
  assert spec.fields["targets"] == ((12,), "int32") and spec.num_classes == 10
  assert spec.extra["targets"][0] == ["left/identity", 11]
  assert DataSpec.from_json(spec.to_json()) == spec  # A resumed run finds the same spec.
  batch = data.example_batch()
  assert set(batch) == {"image", "label", "targets"} and batch["targets"].shape == (8, 12)
  assert batch["image"].dtype == np.float32 and batch["image"].min() >= -1
  evals = next(data.eval_batches())
  assert evals["targets"].shape == (16, 12) and evals["targets"].dtype == np.int32
  with pytest.raises(ValueError, match="random_flip"):
    ImageData(_config(**{"data.random_flip": True}), process_index=0, process_count=1)
  # Other sources are as they were.
  digits = ImageData(_config(**{"data.name": "digits", "data.train_split": "train"}),
                     process_index=0, process_count=1)
  assert digits.spec == DataSpec.images((8, 8, 1), 10, "scale")
  assert set(digits.example_batch()) == {"image", "label"}


# -------------------------------------------------------------------------------- judge


def _train_judge(workdir, **overrides):
  config = _config(**overrides)
  config_lib.validate(config)
  train_lib.train(config, str(workdir), handle_signals=False)
  return str(workdir)


def test_judge_trains_and_predicts_every_target(glyph_sources, tiny_judge, tmp_path, capsys):
  workdir = tiny_judge
  config, spec, pipeline, state, step = runs.load_workdir(workdir)
  assert step == 4 and pipeline.predict is not None
  images = jnp.zeros((3, 32, 32, 3))
  pred = pipeline.predict(pipeline.sample_params(state), images)
  assert pred.shape == (3, 12) and pred.dtype == jnp.int32
  assert (pred >= 0).all() and (pred[:, 0] <= 10).all() and (pred[:, 1] <= 6).all()
  assert pipeline.features(pipeline.sample_params(state), images).shape == (3, 4 * 8)  # Slots.
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert "faithful" in records[0] and np.isfinite(records[0]["loss"])
  # `gen eval` on the held-out split: the per-attribute scores.
  out = tmp_path / "eval.json"
  assert cli.main(["eval", f"--workdir={workdir}", "--config.data.eval_split=test_held_out",
                   f"--out={out}"]) == 0
  result = json.loads(out.read_text())
  assert result["split"] == "test_held_out" and result["num_examples"] == 40
  for k in captions_eval.COLUMNS:
    assert 0 <= result[k] <= 1
  assert result["faithful"] <= min(result[k] for k in ("identity", "colour", "size"))
  capsys.readouterr()
  # One head reads every slot (11 identities + 7 colours + 3 sizes, with 'empty'); a dataset
  # without slots has none to read.
  assert state.params["head"]["kernel"].shape == (8, 11 + 7 + 3)
  with pytest.raises(config_lib.ConfigError, match="slots of captioned scenes"):
    runs.build(_config(**{"data.name": "digits"}), DataSpec.images((8, 8, 1), 10, "scale"))


def test_scores_of_predictions():
  t = np.array([[1, 2, 1, 3, 4, 2, 0, 0, 0, 0, 0, 0]] * 4)
  p = t.copy()
  p[1, 1] = 3  # A colour wrong.
  p[2, 6] = 5  # Something drawn at the top too: identity and position wrong.
  p[3, 5] = 1  # A size wrong.
  s = captions.scores(p, t)
  np.testing.assert_array_equal(s["faithful"], [1, 0, 0, 0])
  np.testing.assert_array_equal(s["colour"], [1, 0, 1, 1])
  np.testing.assert_array_equal(s["identity"], [1, 1, 0, 1])
  np.testing.assert_array_equal(s["position"], [1, 1, 0, 1])
  np.testing.assert_array_equal(s["size"], [1, 1, 1, 0])
  js = captions.scores(jnp.asarray(p), jnp.asarray(t))  # The judge computes them traced.
  np.testing.assert_array_equal(np.asarray(js["faithful"]), s["faithful"])
  # Per object: identity 0 on the left, 2 on the right, in all 4; one right one read as 8,
  # one left one read as empty; the extra glyph at the top is no caption's object.
  p[0, 3], p[1, 0] = 9, 0
  confusion = captions.identity_confusion(p, t, 10)
  assert confusion.shape == (10, 11) and confusion.sum() == 8
  assert confusion[0, 1] == 3 and confusion[0, 0] == 1
  assert confusion[2, 3] == 3 and confusion[2, 9] == 1


# --------------------------------------------------------------------------------- eval


def renderer(src, traces=None):
  """A stand-in text-to-image pipeline: draws the real scene of each caption (the first image
  of each identity), whatever the guidance. `traces` counts its compilations."""

  def sample_options(num, flags):
    kwargs = dict(flags)
    scenes = np.stack([src.render(src.parse(p)) for p in kwargs.pop("prompt")])
    return num, {"scenes": scenes.astype(np.float32) / 127.5 - 1.0,
                 "guidance": np.float32(kwargs.pop("guidance", 1.0)), **kwargs}

  def sample(params, rng, num, scenes, guidance):
    if traces is not None:
      traces.append(guidance)
    return scenes + 0.0 * guidance

  return Pipeline(init=None, train_step=None, eval_step=None, sample=sample,
                  sample_options=sample_options)


def noise():
  """A stand-in that reads the captions and draws uniform noise."""

  def sample_options(num, flags):
    kwargs = dict(flags)
    kwargs.pop("prompt")
    kwargs.pop("guidance", None)
    return num, kwargs

  def sample(params, rng, num):
    return jax.random.uniform(rng, (num, 32, 32, 3), minval=-1.0, maxval=1.0)

  return Pipeline(init=None, train_step=None, eval_step=None, sample=sample,
                  sample_options=sample_options)


def stand_in(pipeline, dataset="captions:glyphs", shape=(32, 32, 3), workdir="stand-in"):
  return captions_eval.Run(workdir, "stand_in", 0, dataset, shape, "scale", pipeline, None)


def oracle(src, folder, batch=16):
  """A judge that reads the scenes `src.render` draws exactly: each slot's box is looked up among
  every single object it can hold (anything else reads as empty). Features: 4x4-pooled pixels."""
  table = {}
  for slot in range(4):
    for identity in range(src.num_classes):
      for colour in range(6):
        for size in range(2):
          o = captions.Object(slot=slot, identity=identity, colour=colour, size=size)
          table[_box(src.render([o]), slot).tobytes()] = (identity + 1, colour + 1, size + 1)

  def predict(images):
    out = np.zeros((len(images), 4, 3), np.int32)
    for n, image in enumerate(np.asarray(images)):
      for slot in range(4):
        out[n, slot] = table.get(_box(image, slot).tobytes(), (0, 0, 0))
    return out.reshape(len(images), 12)

  pooled = lambda x: np.asarray(x, np.float32).reshape(len(x), 8, 4, 8, 4, 3).mean((2, 4))
  features = fd.Features("FD (pixels)", str(folder), lambda x: pooled(x).reshape(len(x), -1),
                         {}, batch)
  return captions_eval.Judge(str(folder), "captions:glyphs", "", (32, 32, 3), predict, features,
                             batch, {"judge": "oracle", "judge_step": 0})


def _box(image, slot):
  """The large box of `slot` in an image (where any object of that slot lies)."""
  top, left, bottom, right = captions.slot_boxes()[slot]
  return np.ascontiguousarray(image[top:bottom, left:right])


def check_eval(run, judge, guidance=(None,), num=24, batch=16, **kw):
  """Scores `run` with `judge` on `num` captions per split; checks the result's shape and
  returns it ({(split, guidance): row} under "rows")."""
  result = captions_eval.evaluate(judge, run, guidance=guidance, num_samples=num, batch=batch,
                                  **kw)
  rows = {(r["split"], r["guidance"]): r for r in result["results"]}
  assert set(rows) == {(s, g) for s in captions_eval.SPLITS for g in guidance}
  for r in rows.values():
    assert r["num"] == num and all(0 <= r[k] <= 1 for k in captions_eval.COLUMNS)
    assert r["faithful"] <= min(r[k] for k in ("identity", "colour", "size", "position"))
    assert np.isfinite(r["fd"])
  table = captions_eval.table(result)
  assert len(table.splitlines()) == 2 + len(rows)
  json.dumps(result)  # Written as JSON.
  return {**result, "rows": rows}


def test_eval_of_stand_in_runs(glyph_sources, tmp_path):
  """The renderer is faithful on every caption, seen or held out; noise on none. One compiled
  sampler serves every batch and guidance scale."""
  src = load("captions:glyphs", "test")
  judge = oracle(src, tmp_path)
  traces = []
  good = check_eval(stand_in(renderer(src, traces)), judge, guidance=(0.0, 2.0))
  assert len(traces) == 1  # 2 splits x 2 scales x 2 batches, one program.
  bad = check_eval(stand_in(noise()), judge)
  for split in captions_eval.SPLITS:
    for g in (0.0, 2.0):
      assert good["rows"][split, g]["faithful"] == 1.0
      assert good["rows"][split, g]["object_identity"] == 1.0
      confusion = np.asarray(good["rows"][split, g]["identity_confusion"])
      assert confusion.sum() >= 24 and confusion[:, 1:].trace() == confusion.sum()
    assert bad["rows"][split, None]["faithful"] == 0.0
    assert bad["rows"][split, None]["fd"] > good["rows"][split, 2.0]["fd"]
  assert good["scored"] == "samples" and good["batch_size"] == 16
  assert os.path.isfile(tmp_path / "stats_test_held_out_scale.npz")  # The cached reference.
  # The real scenes: what the judge reads in the records' own images (other glyphs than the
  # renderer's first ones, so this oracle reads only some).
  real = captions_eval.evaluate(judge, None, num_samples=24, real_splits=("test",))
  assert [r["split"] for r in real["results"]] == ["test"] and real["scored"] == "real images"


def test_real_scenes_through_an_autoencoder(glyph_sources, tmp_path):
  """`through=`: the judge reads the real scenes after the round trip, nothing else; a round
  trip of another image size, or one without `real_splits`, is a one-line error."""
  src = load("captions:glyphs", "test")
  judge = oracle(src, tmp_path)
  seen = []
  read = judge.predict_fn
  judge.predict_fn = lambda images: seen.append(np.asarray(images)) or read(images)
  flip = captions_eval.RoundTrip("ae", 7, (32, 32, 3), "scale", lambda x: -x[:, ::-1], batch=5)
  result = captions_eval.evaluate(judge, None, num_samples=12, batch=16, real_splits=("test",),
                                  through=flip)
  assert result["scored"] == "real images through an autoencoder"
  assert result["autoencoder_step"] == 7 and "through step 7" in captions_eval.table(result)
  idx = np.sort(np.random.default_rng([0, 0]).choice(len(src), 12, replace=False))
  real = np.stack([src[int(i)]["image"] for i in idx])
  expected = fd.to_uint8((1.0 - (real.astype(np.float32) / 127.5 - 1.0)[:, ::-1]) / 2.0)
  np.testing.assert_array_equal(seen[0][:12], expected)
  assert not np.array_equal(expected, real)
  for through, needle in [(flip, "goes with --real"),
                          (dataclasses.replace(flip, shape=(28, 28, 1)), "shape (28, 28, 1)")]:
    with pytest.raises(ValueError) as e:
      captions_eval.evaluate(judge, stand_in(noise()), num_samples=4, through=through,
                             real_splits=("test",) if through.shape != flip.shape else ())
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_eval_refuses_runs_it_cannot_score(glyph_sources, tmp_path):
  judge = oracle(load("captions:glyphs", "test"), tmp_path)
  no_prompts = Pipeline(init=None, train_step=None, eval_step=None,
                        sample=lambda params, rng, num: jnp.zeros((num, 32, 32, 3)))
  cases = [(stand_in(noise(), dataset="captions:garment_glyphs"), "trained on"),
           (stand_in(noise(), shape=(28, 28, 1)), "draws images of shape (28, 28, 1)"),
           (stand_in(no_prompts), "cannot take prompts"),
           (stand_in(Pipeline(None, None, None, sample=lambda params, rng, num: None,
                              sample_options=lambda num, flags: 1 / 0)),
            "cannot take prompts: ZeroDivisionError")]
  for run, needle in cases:
    with pytest.raises(ValueError) as e:
      captions_eval.evaluate(judge, run, num_samples=4)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_eval_from_the_cli(glyph_sources, tiny_judge, tmp_path, capsys, monkeypatch):
  """`gen eval --metric=captions` with a judge trained a few steps: the real scenes, a stand-in
  run (loaded through `load_run`, patched), and one-line errors."""
  judge = tiny_judge
  out = tmp_path / "real.json"
  assert cli.main(["eval", "--metric=captions", f"--judge={judge}", "--real=test,test_held_out",
                   "--num_samples=20", "--batch_size=8", f"--out={out}"]) == 0
  printed = capsys.readouterr()
  result = json.loads(out.read_text())
  assert [r["split"] for r in result["results"]] == ["test", "test_held_out"]
  assert result["judge_step"] == 4 and "test_held_out" in printed.out and "FD" in printed.out
  src = load("captions:glyphs", "test")
  load_run = captions_eval.load_run
  monkeypatch.setattr(captions_eval, "load_run",
                      lambda workdir, overrides, step: stand_in(renderer(src), workdir=workdir))
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  assert cli.main(["eval", f"--workdir={run_dir}", "--metric=captions", f"--judge={judge}",
                   "--guidance=0,1.5", "--num_samples=10", "--batch_size=8"]) == 0
  result = json.loads((run_dir / "captions.json").read_text())
  assert [(r["split"], r["guidance"]) for r in result["results"]] == [
      ("test", 0.0), ("test", 1.5), ("test_held_out", 0.0), ("test_held_out", 1.5)]
  capsys.readouterr()
  errors = {("--judge=" + str(tmp_path / "none"),): "holds no checkpoint",
            (f"--judge={judge}", "--guidance=high"): "--guidance takes a number",
            (f"--judge={judge}", "--real=train"): "--real takes splits among",
            (f"--judge={judge}", "--real=test", "--steps=3"): "takes no sampler flag",
            (f"--judge={judge}", "--sampler=fast"): "cannot take prompts",
            (f"--judge={judge}", f"--autoencoder={judge}"): "goes with --real",
            (f"--judge={judge}", f"--autoencoder={judge}", "--real=test"): "has no round trip",
            (f"--judge={judge}", f"--autoencoder={tmp_path / 'none'}", "--real=test"):
                "holds no checkpoint"}
  for args, needle in errors.items():
    rc = cli.main(["eval", f"--workdir={run_dir}", "--metric=captions", *args])
    assert_one_line_error(rc, capsys.readouterr().err, "eval", needle)
  # A run that is not a judge, as a judge; a judge as a run (it draws nothing).
  monkeypatch.setattr(captions_eval, "load_run", load_run)
  rc = cli.main(["eval", f"--workdir={judge}", "--metric=captions", f"--judge={judge}"])
  assert_one_line_error(rc, capsys.readouterr().err, "eval", "cannot take prompts")
  digits = _train_judge(tmp_path / "digits", **{"data.name": "digits", "data.train_split": "train",
                                                 "model.channels": (8,), "model.pool": "mean"})
  capsys.readouterr()
  rc = cli.main(["eval", "--metric=captions", f"--judge={digits}", "--real=test"])
  assert_one_line_error(rc, capsys.readouterr().err, "eval", "not a judge of captioned scenes")
  rc = cli.main(["eval", "--metric=fd", f"--judge={digits}", "--workdir=x"])
  assert_one_line_error(rc, capsys.readouterr().err, "eval", "--judge=DIR goes with")
  rc = cli.main(["eval", "--metric=fd", f"--autoencoder={digits}", "--workdir=x"])
  assert_one_line_error(rc, capsys.readouterr().err, "eval", "--autoencoder=DIR goes with")


@pytest.mark.slow
def test_eval_on_mnist_scenes(shared_data, tmp_path):
  """On real `captions:mnist` with the shipped judge config trained 300 steps: the renderer
  stand-in reads as far more faithful than noise, on seen and held-out compositions alike."""
  config = config_lib.load("gen.classifier.configs.captions_mnist")
  config_lib.apply_overrides(config, {"data.dir": shared_data, "train.num_steps": 300,
                                      "train.eval_every": 0, "train.checkpoint_every": 0,
                                      "train.progress": False, "train.sample_every": 0})
  train_lib.train(config, str(tmp_path / "judge"), handle_signals=False)
  judge = captions_eval.load_judge(str(tmp_path / "judge"))
  src = load("captions:mnist", "test", shared_data)
  run = stand_in(renderer(src), dataset="captions:mnist")
  good = check_eval(run, judge, num=200, batch=100)
  bad = check_eval(stand_in(noise(), dataset="captions:mnist"), judge, num=200, batch=100)
  for split in captions_eval.SPLITS:
    assert good["rows"][split, None]["faithful"] > 0.3 > bad["rows"][split, None]["faithful"]
    assert good["rows"][split, None]["fd"] < bad["rows"][split, None]["fd"]
