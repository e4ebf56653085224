"""The transformer family: cached decoding equals full recomputation, tokenizers round-trip,
sampling filters, sliding past the context, music serialization, and clear errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LM, config_path

from gen.core import config as config_lib
from gen.core import runs
from gen.core.family import DataSpec
from gen.lm import make, sampling
from gen.lm import steps as lm
from gen.lm.data import TokenData as Data
from gen.lm.data import music, text as text_lib, token_spec
from gen.lm.data import tokenizers as tok_lib

VOCAB, CTX = 11, 8


def _pipeline(**model):
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, {**TINY_LM, **model})
  spec = token_spec(CTX, vocab_size=VOCAB, start_ids=[0])
  p = make(c, spec)
  state = p.init(jax.random.key(0), spec.example_batch(1))
  return p, state.params, lm.parts(c, spec)


def _reference_logits(model, params, tokens, stride):
  """Next-token logits by recomputing the whole window at every position (no cache), with
  the documented sliding rule past the context."""
  keep, offset, out = CTX - stride + 1, 0, []
  logits_fn = jax.jit(lambda params, x: lm.logits(model, params, x))
  for t in range(tokens.shape[1] - 1):
    if t - offset >= CTX:
      offset = t - keep + 1
    out.append(logits_fn(params, tokens[:, offset:t + 1])[:, -1])
  return np.stack(out, 1)


@pytest.mark.parametrize("model", [
    {}, {"model.positions": "rotary", "model.norm": "rmsnorm", "model.mlp": "swiglu",
         "model.tie_embeddings": False}], ids=["gpt2", "rotary-rms-swiglu"])
def test_cached_decoding_matches_full_recomputation(model):
  p, params, net = _pipeline(**model)
  prompt = jnp.array([[3, 1, 4, 1], [5, 9, 0, 0]], jnp.int32)  # Lengths 4 and 2.
  lens = jnp.array([4, 2], jnp.int32)
  decode = jax.jit(lambda params, rng: sampling.decode(
      lambda *a: lm.apply_cached(net, *a), net.init_cache, params, rng, prompt, lens,
      max_new_tokens=12, max_len=CTX, temperature=1.0, stride=3, return_logits=True))
  tokens, logits = decode(params, jax.random.key(1))
  tokens, logits = np.asarray(tokens), np.asarray(logits)
  assert tokens.shape == (2, 16)
  np.testing.assert_array_equal(tokens[0, :4], [3, 1, 4, 1])
  np.testing.assert_array_equal(tokens[1, :2], [5, 9])
  # Row 1's prompt is shorter: its row ends 2 tokens earlier (-1 after max_new_tokens).
  assert (tokens[0] >= 0).all() and (tokens[1, :14] >= 0).all() and (tokens[1, 14:] == -1).all()
  # 16 tokens > context 8: the cache slid twice. Every step's logits equal recomputation.
  for row, n in ((0, 15), (1, 13)):
    ref = _reference_logits(net, params, jnp.asarray(tokens[row:row + 1, :n + 1]), stride=3)
    # The loop starts at the shortest prompt's last token (t = 1); step 0 is the prefill.
    np.testing.assert_allclose(logits[row, 1:n], ref[0, 1:n], rtol=1e-4, atol=1e-4)


def test_norm_eps_reaches_every_norm_and_old_runs_keep_flax_default():
  """`model.norm_eps` sets the LayerNorm epsilon; a config without the key (a run saved before
  it existed) builds flax's 1e-6, the epsilon it was trained with."""
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, TINY_LM)
  spec = token_spec(CTX, vocab_size=VOCAB, start_ids=[0])
  tokens = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6]], jnp.int32)

  def logits_with(config):
    net = lm.parts(config, spec)
    params = net.init(jax.random.key(0), tokens)["params"]
    return net.norm_eps, np.asarray(lm.logits(net, params, tokens))

  saved = json.loads(config_lib.to_json(c))
  del saved["model"]["norm_eps"]  # A config.json from before the key, loaded as runs load it.
  old = config_lib.from_dict(runs.complete(saved))
  eps_cfg, ref = logits_with(c)
  eps_old, out_old = logits_with(old)
  assert eps_cfg == eps_old == 1e-6  # The measured config keeps the old value explicitly.
  np.testing.assert_array_equal(out_old, ref)
  # Embeddings are N(0, 0.02): variances ~4e-4, so 1e-5 against 1e-6 moves the logits.
  config_lib.apply_overrides(c, {"model.norm_eps": 1e-5})
  eps_new, out_new = logits_with(c)
  assert eps_new == 1e-5 and np.abs(out_new - ref).max() > 1e-4
  gpt2 = config_lib.load_file(config_path("lm", "gpt2_124m.py"))
  assert gpt2.model.norm_eps == 1e-5


def test_rows_decode_as_if_alone():
  p, params, _ = _pipeline()
  run = jax.jit(lambda x, n: p.sample(params, jax.random.key(2), x.shape[0], x, n,
                                      max_new_tokens=6, temperature=0.0))
  both = np.asarray(run(jnp.array([[1, 2, 3], [4, 0, 0]]), jnp.array([3, 1])))
  alone0 = np.asarray(run(jnp.array([[1, 2, 3]]), jnp.array([3])))
  alone1 = np.asarray(run(jnp.array([[4]]), jnp.array([1])))
  np.testing.assert_array_equal(both[0], alone0[0])
  np.testing.assert_array_equal(both[1, :7], alone1[0])
  assert (both[1, 7:] == -1).all()


def test_stops_at_end_token():
  p, params, _ = _pipeline()
  prompt, lens = jnp.array([[1, 2]]), jnp.array([2])
  greedy = np.asarray(jax.jit(lambda: p.sample(params, jax.random.key(0), 1, prompt, lens,
                                               max_new_tokens=6, temperature=0.0))())
  end = int(greedy[0, 3])  # Make the second generated token the end token.
  spec = token_spec(CTX, vocab_size=VOCAB, end_id=end, start_ids=[0])
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, TINY_LM)
  out = np.asarray(jax.jit(lambda: make(c, spec).sample(params, jax.random.key(0), 1, prompt,
                                                        lens, max_new_tokens=6,
                                                        temperature=0.0))())
  first = int(np.argmax(greedy[0, 2:] == end)) + 2
  np.testing.assert_array_equal(out[0, :first + 1], greedy[0, :first + 1])
  assert (out[0, first + 1:] == -1).all()


def test_top_k_by_bisection_matches_a_sort():
  """kth_largest_mask (top-k without a sort) keeps exactly the tokens at least the k-th largest
  logit, ties included, on rows with repeated values, -0.0 beside 0.0 and -inf, for k from 1
  to the vocabulary; filter_logits' top-k path agrees."""
  rng = np.random.default_rng(0)
  for trial in range(12):
    v = int(rng.integers(2, 300))
    x = rng.standard_normal((3, v)).astype(np.float32)
    if trial % 3 == 0:
      x = np.round(x * 2) / 2  # Ties, and -0.0 beside 0.0.
    if trial % 4 == 0:
      x[0, : v // 2] = -np.inf
    for k in sorted({1, 2, v // 2, v - 1, v} - {0}):
      want = x >= -np.sort(-x, axis=1)[:, k - 1:k]
      np.testing.assert_array_equal(np.asarray(sampling.kth_largest_mask(jnp.asarray(x), k)),
                                    want)
      kept = np.isfinite(np.asarray(sampling.filter_logits(jnp.asarray(x), 1.0, k, 1.0)))
      np.testing.assert_array_equal(kept, want & np.isfinite(x))


def test_filter_logits_top_k_top_p_temperature():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  keep = lambda **kw: np.isfinite(np.asarray(sampling.filter_logits(logits, **kw)))[0].tolist()
  assert keep(temperature=1.0, top_k=2, top_p=1.0) == [True, True, False, False, False]
  assert keep(temperature=1.0, top_k=0, top_p=1.0) == [True] * 5
  # 0.5 < 0.8; 0.5 + 0.2 < 0.8; 0.85 >= 0.8: the third token completes the set.
  assert keep(temperature=1.0, top_k=0, top_p=0.8) == [True, True, True, False, False]
  assert keep(temperature=1.0, top_k=0, top_p=0.3) == [True, False, False, False, False]
  # Both: top-p measures the top-k set renormalized ([5/7, 2/7]: 5/7 >= 0.6), not the full
  # row (0.5 + 0.2 < 0.6 would keep the second token).
  assert keep(temperature=1.0, top_k=2, top_p=0.6) == [True, False, False, False, False]
  assert keep(temperature=1.0, top_k=3, top_p=0.75) == [True, True, False, False, False]
  x = np.asarray(sampling.filter_logits(logits, temperature=0.5, top_k=0, top_p=1.0))
  np.testing.assert_allclose(x, np.asarray(logits) / 0.5, rtol=1e-6)
  # Sampled frequencies follow the filtered, renormalized distribution.
  keys = jax.random.split(jax.random.key(0), 20000)
  draws = jax.vmap(lambda k: sampling.choose(logits, k, 1.0, 2, 1.0))(keys)[:, 0]
  freq = np.bincount(np.asarray(draws), minlength=5) / len(draws)
  np.testing.assert_allclose(freq, [5 / 7, 2 / 7, 0, 0, 0], atol=0.015)
  assert int(sampling.choose(logits, keys[0], 0.0, 0, 1.0)[0]) == 0  # Greedy.


def test_sampler_settings_do_not_recompile():
  p, params, _ = _pipeline()
  traces = []

  @jax.jit
  def run(temperature, top_k, top_p):
    traces.append(1)
    return p.sample(params, jax.random.key(0), 1, jnp.array([[1]]), jnp.array([1]),
                    max_new_tokens=4, temperature=temperature, top_k=top_k, top_p=top_p)

  run(1.0, 0, 1.0)
  run(0.5, 3, 0.9)
  run(0.0, 1, 0.5)
  assert len(traces) == 1


def test_prompt_longer_than_context_is_an_error():
  p, params, _ = _pipeline()
  with pytest.raises(ValueError, match="longer than the model's context"):
    p.sample(params, jax.random.key(0), 1, jnp.zeros((1, CTX + 1), jnp.int32),
             jnp.array([CTX + 1]), max_new_tokens=2)


# --------------------------------------------------------------------------- tokenizers


def test_char_tokenizer_round_trip_and_unknown_characters(tmp_path):
  text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
  tok = tok_lib.CharTokenizer.build(text)
  assert tok.vocab == sorted(set(text)) and tok.vocab[0] == "\n"
  assert tok.decode(tok.encode(text)) == text
  np.testing.assert_array_equal(tok.encode_array(text), tok.encode(text))
  with pytest.raises(tok_lib.TokenizerError, match="'Z', 'q'"):
    tok.encode("qZ")
  with pytest.raises(tok_lib.TokenizerError, match="'Z'"):
    tok.encode_array("FirstZ")
  again = tok_lib.from_json(json.loads(json.dumps(tok.to_json())))
  assert again.vocab == tok.vocab and again.start_ids == [0]


def test_byte_tokenizer_round_trip():
  tok = tok_lib.ByteTokenizer()
  s = "Grüße, 世界!\n"
  assert tok.decode(tok.encode(s)) == s and max(tok.encode(s)) < 256
  np.testing.assert_array_equal(tok.encode_array(s), tok.encode(s))


def test_sentencepiece_trains_locally_and_round_trips(tmp_path):
  text = "".join(f"ROMEO {i}:\nO, she doth teach the torches to burn bright!\n\n"
                 for i in range(200))
  tok = tok_lib.build("sentencepiece", text, vocab_size=320)  # 256 byte pieces + merges.
  assert tok.vocab_size == 320
  sample = "  JULIET:\nWhat's in a name? é  \n\n"
  assert tok.decode(tok.encode(sample)) == sample  # Whitespace, newlines, unseen 'é' kept.
  assert len(tok.encode(text[:200])) < 200  # It merges.
  again = tok_lib.from_json(json.loads(json.dumps(tok.to_json())))
  assert again.encode(sample) == tok.encode(sample)


def test_chorale_tokens_round_trip_and_midi(tmp_path):
  tok = music.ChoraleTokenizer()
  steps = [[72, 67, 64, 48], [72, 67, 64, 48], [74, -1, 62, 47], [76, 67, 60, 36]]
  ids = tok.chorale(steps)
  assert ids[0] == tok.BOS and ids[-1] == tok.EOS and len(ids) == 2 + 4 * len(steps)
  assert tok.to_steps(ids) == steps
  assert tok.encode(tok.decode(ids)) == ids[:-1]  # Text form; a prompt has no EOS.
  assert tok.vocab_size == 190
  with pytest.raises(tok_lib.TokenizerError, match="outside"):
    tok.encode("90,67,64,48")
  mid, wav = music.write_midi(str(tmp_path / "c.mid"), steps), music.write_wav(
      str(tmp_path / "c.wav"), steps)
  import mido
  notes = {}
  for i, track in enumerate(mido.MidiFile(mid).tracks[1:]):
    notes[i] = [m.note for m in track if m.type == "note_on"]
  # Repeated pitches join into one held note: soprano 72 (half), 74, 76.
  assert notes == {0: [72, 74, 76], 1: [67, 67], 2: [64, 62, 60], 3: [48, 47, 36]}
  import wave
  with wave.open(wav) as w:
    assert w.getframerate() == 22050 and w.getnframes() > 4 * 0.7 * 22050


# ------------------------------------------------------------------------------- data


def test_text_source_split_windows_and_metrics(tmp_path):
  path = tmp_path / "t.txt"
  body = "".join(chr(97 + (i * 7) % 26) for i in range(1000))
  path.write_text(body)
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, {**TINY_LM, "data.name": f"text:{path}"})
  data = Data(c)
  train, val = data.train_source, data.eval_source
  assert len(train.stream) == 900 and len(val.stream) == 100  # nanoGPT's 90/10 split.
  assert data.tokenizer.decode(val.stream) == body[900:]
  assert len(train) == 900 - CTX and len(val) == (100 - 1) // CTX
  np.testing.assert_array_equal(val[1]["tokens"], val.stream[CTX:2 * CTX + 1])
  batch = next(iter(data.train_iterator()))
  assert batch["tokens"].shape == (TINY_LM["data.batch_size"], CTX + 1)
  assert data.derived_metrics({"loss": 1.0})["perplexity"] == pytest.approx(np.e)


def test_missing_text_file_and_bad_split(tmp_path):
  from gen.core.data import DataError

  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, {**TINY_LM, "data.name": f"text:{tmp_path}/none.txt"})
  with pytest.raises(DataError, match="missing text file"):
    Data(c)
  with pytest.raises(DataError, match="'train' .* and 'val'"):
    text_lib.read_text(f"text:{config_path('lm', 'shakespeare_char_cpu.py')}", "test")


def test_jsb_chorales_source(shared_data):
  tok = music.ChoraleTokenizer()
  pieces = {s: music.read_chorales(shared_data, s) for s in music.SPLITS}
  assert [len(pieces[s]) for s in music.SPLITS] == [229, 76, 77]
  assert [sum(len(c) for c in pieces[s]) for s in music.SPLITS] == [13807, 4602, 4725]
  stream = music.chorale_stream(pieces["valid"], tok)
  assert len(stream) == 4 * 4602 + 2 * 76
  assert tok.to_steps(stream[:4 * len(pieces["valid"][0]) + 2]) == pieces["valid"][0].tolist()


def test_lm_family_rejects_image_data():
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  with pytest.raises(config_lib.ConfigError, match="token data"):
    make(c, DataSpec((8, 8, 1), 10, "scale"))


# -------------------------------------------------------------------------------- CLI


def _train_tiny_text(tmp_path, body, **overrides):
  from gen.core import train

  path = tmp_path / "play.txt"
  path.write_text(body)
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, {**TINY_LM, "data.name": f"text:{path}", "train.num_steps": 2,
                                 **overrides})
  workdir = tmp_path / "run"
  train.train(c, str(workdir), handle_signals=False)
  return workdir


PLAY = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n" * 20


def test_cli_sample_prompts_eval_and_errors(tmp_path, capsys):
  from gen import cli

  workdir = _train_tiny_text(tmp_path, PLAY)
  assert (workdir / "samples.txt").exists()
  assert tok_lib.from_json(json.loads((workdir / "data_spec.json").read_text())["extra"][
      "tokenizer"]).decode([0]) == "\n"
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("ROMEO:\nJ\n")
  out = tmp_path / "s.txt"
  assert cli.main(["sample", f"--workdir={workdir}", f"--prompt_file={prompts}", "--num=2",
                   "--max_new_tokens=5", "--temperature=0.5", "--top_k=3", f"--out={out}"]) == 0
  printed = capsys.readouterr().out
  samples = out.read_text().split("---------- sample ")[1:]
  assert len(samples) == 4  # Two prompts of different lengths, two samples each.
  assert samples[0].split("\n", 1)[1].startswith("ROMEO:") and "\nJ" in samples[2]
  assert printed.count("---------- sample") == 4
  # Bad input: an unknown character, both prompt flags, a prompt longer than the context.
  assert cli.main(["sample", f"--workdir={workdir}", "--prompt=ROMEO@"]) == 2
  assert "'@'" in capsys.readouterr().err
  assert cli.main(["sample", f"--workdir={workdir}", "--prompt=R",
                   f"--prompt_file={prompts}"]) == 2
  assert cli.main(["sample", f"--workdir={workdir}", "--prompt=" + "ROMEO " * 3]) == 2
  assert "context" in capsys.readouterr().err
  assert cli.main(["sample", f"--workdir={workdir}", "--steps=3"]) == 2
  assert "--max_new_tokens" in capsys.readouterr().err
  assert cli.main(["eval", f"--workdir={workdir}", f"--out={tmp_path / 'e.json'}"]) == 0
  metrics = json.loads((tmp_path / "e.json").read_text())
  assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]), rel=1e-6)
  assert metrics["nll_per_char"] == pytest.approx(metrics["loss"], rel=0.01)  # Char tokens.


def test_empty_prompt_without_a_start_token_is_an_error(tmp_path, capsys):
  from gen import cli

  workdir = _train_tiny_text(tmp_path, "abcabd " * 200)  # No newline: no start token.
  assert cli.main(["sample", f"--workdir={workdir}", "--prompt="]) == 2
  assert "no start token" in capsys.readouterr().err
  assert cli.main(["sample", f"--workdir={workdir}", "--prompt=ab", "--max_new_tokens=3"]) == 0


def test_bf16_compute_keeps_fp32_params_and_remat_keeps_gradients():
  spec = token_spec(CTX, vocab_size=VOCAB, start_ids=[0])
  tokens = jax.random.randint(jax.random.key(3), (2, CTX + 1), 0, VOCAB)
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, TINY_LM)
  grads = {}
  for name, over in {"fp32": {}, "remat": {"model.remat": True},
                     "bf16": {"model.dtype": "bfloat16"}}.items():
    cc = c.copy_and_resolve_references()
    config_lib.apply_overrides(cc, over)
    p = make(cc, spec)
    params = p.init(jax.random.key(0), spec.example_batch(1)).params
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    net = lm.parts(cc, spec)
    loss = lambda q: lm.token_nll(net, q, tokens).mean()
    grads[name] = jax.jit(jax.grad(loss))(params)
    assert lm.logits(net, params, tokens[:, :-1]).dtype == jnp.float32
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
  np.testing.assert_allclose(flat(grads["remat"]), flat(grads["fp32"]), rtol=1e-5, atol=1e-7)
  # bf16 compute: the same gradients to bf16 precision, not bitwise.
  cos = np.dot(flat(grads["bf16"]), flat(grads["fp32"])) / (
      np.linalg.norm(flat(grads["bf16"])) * np.linalg.norm(flat(grads["fp32"])))
  assert 0.99 < cos < 1.0 - 1e-9


def test_resumed_lm_training_is_bitwise_identical(tmp_path):
  from gen.core import train

  path = tmp_path / "play.txt"
  path.write_text(PLAY)
  c = config_lib.load_file(config_path("lm", "shakespeare_char_cpu.py"))
  config_lib.apply_overrides(c, {**TINY_LM, "data.name": f"text:{path}", "train.num_steps": 4,
                                 "data.tokenizer": "sentencepiece", "data.vocab_size": 300,
                                 "model.dropout": 0.1, "train.checkpoint_every": 0})
  straight = train.train(c, str(tmp_path / "a"), handle_signals=False)
  train.train(c, str(tmp_path / "b"), stop_at_step=2, handle_signals=False)
  resumed = train.train(c, str(tmp_path / "b"), handle_signals=False)
  for x, y in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
