"""Fine-tuning from feedback: policy-gradient, KL and DPO losses against closed forms, the
rewards on hand-made examples, RL / DPO / SFT runs through the core trainer, and errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED_DATA, TINY_LM, config_path

from gen.core import config as config_lib
from gen.core import runs
from gen.core import train as train_lib
from gen.core.data import DataError
from gen.lm.data import music, pairs as pairs_lib, text as text_lib, token_spec, tokenizer_of
from gen.lm.data import tokenizers as tok_lib
from gen.lm.finetune import losses, rewards
from gen.lm.finetune import steps as ft

def _tokenizer(workdir):
  """The tokenizer in a run's data spec."""
  from gen.core.family import DataSpec

  return tokenizer_of(DataSpec.load(str(workdir)))


# ------------------------------------------------------------------------ losses

LOGITS = jnp.array([0.3, -1.0, 0.8, 0.1])  # A categorical policy over 4 actions.
REWARD = jnp.array([1.0, -0.5, 0.25, 2.0])


def _pg_grad(loss, action, advantage, **kw):
  """Gradient of a one-token policy-gradient loss with respect to the logits."""
  def f(theta):
    logp = jax.nn.log_softmax(theta)[action][None, None]
    return loss(logp, mask=jnp.ones((1, 1)), advantages=jnp.array([advantage]), **kw)
  return jax.grad(f)(LOGITS)


def test_reinforce_gradient_matches_its_closed_form():
  pi = jax.nn.softmax(LOGITS)
  # One sample: grad of -A log pi(y) is -A (onehot(y) - pi).
  g = _pg_grad(losses.reinforce_loss, 2, 0.7)
  np.testing.assert_allclose(g, -0.7 * (jax.nn.one_hot(2, 4) - pi), rtol=1e-6)
  # In expectation over y ~ pi, with any baseline b: -grad E[r] = -pi * (r - E[r]).
  for b in (0.0, 0.9):
    expected = sum(pi[y] * _pg_grad(losses.reinforce_loss, y, REWARD[y] - b) for y in range(4))
    np.testing.assert_allclose(expected, -pi * (REWARD - pi @ REWARD), rtol=1e-5, atol=1e-7)


def test_ppo_gradient_is_reinforce_at_the_old_policy_and_zero_when_clipped():
  pi = jax.nn.softmax(LOGITS)
  logp = jax.nn.log_softmax(LOGITS)
  ppo = lambda old_shift: (lambda logp_, mask, advantages: losses.ppo_loss(
      logp_, jnp.array([[logp[1] + old_shift]]), mask, advantages, clip=0.2)[0])
  g_ppo, g_pg = _pg_grad(ppo(0.0), 1, 0.5), _pg_grad(losses.reinforce_loss, 1, 0.5)
  np.testing.assert_allclose(g_ppo, g_pg, rtol=1e-6)
  # ratio = pi / pi_old = e^0.5 > 1.2 with A > 0: clipped, no gradient.
  np.testing.assert_allclose(_pg_grad(ppo(-0.5), 1, 0.5), np.zeros(4), atol=1e-7)
  # ratio = e^-0.5 < 0.8 with A > 0: the unclipped term is the minimum: -A ratio grad log pi.
  np.testing.assert_allclose(_pg_grad(ppo(0.5), 1, 0.5),
                             -0.5 * np.exp(-0.5) * (jax.nn.one_hot(1, 4) - pi), rtol=1e-5)
  _, frac = losses.ppo_loss(jnp.zeros((1, 3)), jnp.array([[0.0, 0.5, -0.1]]),
                            jnp.array([[1.0, 1.0, 0.0]]), jnp.ones(1), 0.2)
  assert float(frac) == pytest.approx(0.5)  # One of two sampled tokens is outside the clip.


def test_kl_is_exact_zero_at_the_reference_and_has_the_closed_form_gradient():
  ref = jnp.array([[0.0, 0.5, -0.2, 1.0]])
  assert float(losses.token_kl(ref, ref)[0]) == 0.0
  p, q = jax.nn.softmax(LOGITS), jax.nn.softmax(ref[0])
  kl = float(losses.token_kl(LOGITS[None], ref)[0])
  assert kl == pytest.approx(float(jnp.sum(p * jnp.log(p / q))), rel=1e-6)
  g = jax.grad(lambda t: losses.token_kl(t[None], ref)[0])(LOGITS)
  np.testing.assert_allclose(g, p * (jnp.log(p / q) - kl), rtol=1e-5, atol=1e-7)
  # Entropy of a uniform distribution.
  assert float(losses.token_entropy(jnp.zeros((1, 4)))[0]) == pytest.approx(np.log(4))


def test_leave_one_out_baseline():
  r = jnp.array([1.0, 2.0, 6.0])
  np.testing.assert_allclose(losses.leave_one_out_baseline(r), [4.0, 3.5, 1.5])
  with pytest.raises(ValueError, match="at least 2"):
    losses.leave_one_out_baseline(jnp.ones(1))


def test_dpo_loss_is_log2_at_the_reference_and_prefers_the_chosen():
  lp = jnp.array([-3.0, -7.0])
  loss, margin = losses.dpo_loss(lp, lp - 1.0, lp, lp - 1.0, beta=0.1)
  assert float(loss) == pytest.approx(np.log(2.0)) and np.all(np.asarray(margin) == 0)
  grad = jax.grad(lambda c, r: losses.dpo_loss(c, r, lp, lp, 0.1)[0], argnums=(0, 1))(lp, lp)
  # d/dchosen = -beta sigmoid(0) / B; d/drejected = +beta sigmoid(0) / B.
  np.testing.assert_allclose(grad[0], [-0.025, -0.025]), np.testing.assert_allclose(
      grad[1], [0.025, 0.025])


# ----------------------------------------------------------------------- rewards

TOK = music.ChoraleTokenizer()
C = [72, 67, 64, 48]  # C major: C5 G4 E4 C3.
G7 = [71, 65, 62, 43]  # B4 F4 D4 G2.


def _chorale(steps, end=False, pad_to=None):
  ids = [TOK.BOS] + TOK.encode_steps(steps) + ([TOK.EOS] if end else [])
  if pad_to:
    ids += [-1] * (pad_to - len(ids))
  return jnp.asarray([ids], jnp.int32)


def _parts(tokens):
  return {k: float(v[0]) for k, v in rewards.chorale_rule_parts(tokens).items()}


def test_chorale_rules_each_rule_on_hand_made_steps():
  good = _parts(_chorale([C, G7, C, G7]))
  assert good == {"range": 1.0, "no_crossing": 1.0, "no_parallels": 1.0, "in_key": 1.0,
                  "well_formed": 1.0, "steps": 4.0}
  # Soprano A5 (81) is above its range (60-79).
  assert _parts(_chorale([C, G7, [81, 65, 62, 43], G7]))["range"] == 0.75
  # Alto above soprano.
  assert _parts(_chorale([C, [65, 71, 62, 43], C, G7]))["no_crossing"] == 0.75
  # C major -> D minor in parallel: soprano/bass octaves and alto/bass fifths move together.
  par = _parts(_chorale([C, [74, 69, 65, 50], G7, C]))
  assert par["no_parallels"] == 0.75 and par["no_crossing"] == 1.0
  # A held chord (nothing moves) is not parallel motion.
  assert _parts(_chorale([C, C, C, C]))["no_parallels"] == 1.0
  # F# and C# are outside C major (the best-fitting key of the other steps).
  assert _parts(_chorale([C, G7, [73, 66, 62, 45], G7]))["in_key"] == 0.75
  # A minor with its raised leading tone G# is in key (harmonic minor).
  am = [[69, 64, 60, 45], [68, 64, 59, 52], [69, 64, 60, 45], [71, 62, 59, 50]]
  assert _parts(_chorale(am))["in_key"] == 1.0


def test_chorale_rules_format_and_length():
  steps = [C, G7, C, G7]
  ids = np.asarray(_chorale(steps))[0].tolist()
  swapped = ids[:5] + [ids[6], ids[5]] + ids[7:]  # Alto before soprano in step 1.
  bad = _parts(jnp.asarray([swapped]))
  assert bad["well_formed"] == 0.75 and bad["range"] == 1.0 and bad["in_key"] == 1.0
  # The rules are judged on well-formed steps only; none: 0.
  assert _parts(jnp.asarray([[TOK.BOS] + [ids[2]] * 16]))["range"] == 0.0
  # Ending after 2 of a window of 8 steps: the 6 missing steps are not well-formed.
  short = _parts(_chorale(steps[:2], end=True, pad_to=1 + 4 * 8))
  assert short["steps"] == 2.0 and short["well_formed"] == 0.25 and short["range"] == 1.0
  reward = rewards.make("chorale_rules", TOK)
  assert float(reward(_chorale(steps), None)["reward"][0]) == 1.0
  assert float(reward(jnp.asarray([swapped]), None)["reward"][0]) == pytest.approx(0.95)


def test_line_length_reward():
  tok = tok_lib.CharTokenizer.build("abcdefghij\n ")
  fn = rewards.make("line_length", tok, target=4.0)
  text = "ab\nabcd\n\nabcdef\nabc"  # Lines after the first newline: 4, blank, 6; 'abc' unfinished.
  ids = jnp.asarray([tok.encode(text)])
  out = {k: float(v[0]) for k, v in fn(ids, jnp.ones_like(ids, bool)).items()}
  assert out["lines"] == 2 and out["line_length"] == 5.0
  assert out["reward"] == pytest.approx((1.0 + 0.5) / 2)
  # Only lines closed by a generated newline count; none: reward 0.
  gen = jnp.arange(ids.shape[1])[None] >= 8  # The prompt is "ab\nabcd\n"
  assert float(fn(ids, gen)["lines"][0]) == 1.0
  assert float(fn(ids, jnp.zeros_like(gen))["reward"][0]) == 0.0


def test_reward_errors():
  with pytest.raises(ValueError, match=r"unknown reward 'nope'; registered rewards: "
                                       r"chorale_rules, line_length"):
    rewards.make("nope", TOK)
  with pytest.raises(ValueError, match="chorale tokens"):
    rewards.make("chorale_rules", tok_lib.ByteTokenizer())
  with pytest.raises(ValueError, match="is for text"):
    rewards.make("line_length", TOK, 10.0)
  with pytest.raises(ValueError, match="target > 0"):
    rewards.make("line_length", tok_lib.ByteTokenizer(), 0.0)


# ------------------------------------------------------------ pairs and splits


def test_pairs_from_text_and_ids(tmp_path):
  path = tmp_path / "p.jsonl"
  lines = [{"prompt": "", "chosen": "72,67,64,48 71,65,62,43", "rejected": "72,67,64,48"},
           {"prompt": "72,67,64,48 ", "chosen": "71,65,62,43", "rejected": "74,69,65,50"},
           {"prompt_ids": [0], "chosen_ids": [10, 60, 105, 150, 1], "rejected_ids": [10],
            "note": "ignored"}]
  path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
  src = pairs_lib.PairSource(str(path), 8, TOK)
  assert len(src) == 3 and src.shape == (8,)
  r = src[0]
  assert r["prompt_len"] == 1 and r["chosen"][0] == TOK.BOS
  np.testing.assert_array_equal(r["chosen"], [0] + TOK.encode_steps([C, G7]))  # 9 = seq_len + 1.
  np.testing.assert_array_equal(r["rejected"], [0] + TOK.encode_steps([C]) + [-1] * 4)
  assert src[1]["prompt_len"] == 5 and src[1]["chosen"][5:].tolist() == TOK.encode_steps([G7])
  assert src[2]["chosen"].tolist() == [0, 10, 60, 105, 150, 1, -1, -1, -1]


@pytest.mark.parametrize("line, message", [
    ("not json", r"p.jsonl:1: not JSON"),
    (json.dumps({"prompt": "", "chosen": "72,67,64,48"}), "'rejected' is missing"),
    (json.dumps({"prompt": "72,67,64,48", "chosen": "71,65,62,43", "rejected": "72,67,64,48"}),
     "prompt \\+ chosen does not encode"),
    (json.dumps({"prompt": "", "chosen": "", "rejected": "72,67,64,48"}), "must not be empty"),
    (json.dumps({"prompt_ids": [0], "chosen_ids": [999], "rejected_ids": [3]}),
     "outside the vocabulary"),
    (json.dumps({"prompt": "72,67,64,48 72,67,64,48", "chosen": " 72,67,64,48",
                 "rejected": " 72,67,64,48"}), "leaves no room"),
])
def test_bad_pairs_are_clear_errors(tmp_path, line, message):
  path = tmp_path / "p.jsonl"
  path.write_text(line + "\n")
  with pytest.raises(DataError, match=message):
    pairs_lib.PairSource(str(path), 8, TOK)
  with pytest.raises(DataError, match="missing preference pairs file"):
    pairs_lib.PairSource(str(tmp_path / "none.jsonl"), 8, TOK)


def test_text_split_by_percent(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("".join(chr(97 + i % 26) for i in range(1000)))
  name = f"text:{path}"
  val = text_lib.read_text(name, "val")
  assert text_lib.read_text(name, "val[:50%]") == val[:50]
  assert text_lib.read_text(name, "val[50%:70%]") == val[50:70]
  assert text_lib.read_text(name, "train[90%:]") == text_lib.read_text(name, "train")[810:]
  with pytest.raises(DataError, match="percentages"):
    text_lib.read_text(name, "val[70%:50%]")


# ------------------------------------------------------------ through the trainer


def _config(name, tmp_path=None, **overrides):
  c = config_lib.load_file(config_path("lm", name))
  config_lib.apply_overrides(c, {**TINY_LM, "train.num_steps": 1, "train.checkpoint_every": 0,
                                 "data.batch_size": 4, "train.num_samples": 2, **overrides})
  config_lib.validate(c)
  return c


def _metrics(workdir):
  rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def chorale_source(tmp_path_factory):
  """A tiny chorale model to fine-tune from (a checkpoint of its random init)."""
  data = SHARED_DATA
  if not os.path.isfile(os.path.join(data, music.FOLDER, music.FILE)):
    pytest.skip(f"JSB chorales not found at {data}")
  workdir = tmp_path_factory.mktemp("src") / "chorales"
  c = _config("jsb_chorales.py", **{"data.dir": data, "train.num_steps": 0,
                                    "data.seq_len": 16})
  train_lib.train(c, str(workdir), handle_signals=False)
  return workdir, data


def test_ppo_step_through_the_trainer_starts_at_zero_kl(chorale_source, tmp_path):
  source, data = chorale_source
  c = _config("jsb_chorales_ppo.py", **{"data.dir": data, "data.seq_len": 16,
                                        "init_from": str(source), "finetune.ppo_epochs": 2})
  state = train_lib.train(c, str(tmp_path), handle_signals=False)
  assert int(state.step) == 1  # Two PPO updates, one step.
  _, _, _, src_state, _ = runs.load_workdir(str(source))
  for x, y in zip(jax.tree.leaves(state.ref_params), jax.tree.leaves(src_state.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # The frozen reference.
  assert any(not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(src_state.params)))
  m = _metrics(tmp_path)[0]
  assert m["kl"] == pytest.approx(0.0, abs=1e-6)  # The first batch: sampled by the reference.
  assert 0.0 <= m["reward"] <= 1.0 and m["entropy"] > 0 and 0 < m["length"] <= 15.0
  assert {"reward_in_key", "reward_no_parallels", "clip_frac"} <= set(m)
  assert _tokenizer(tmp_path).to_json() == _tokenizer(source).to_json()
  # The measurement tool: reward, KL to the run's own reference, samples written.
  from gen.lm.finetune import score

  out = tmp_path / "scored" / "s.txt"
  assert score.main([f"--workdir={tmp_path}", "--num=4", f"--out={out}", "--write=2"]) == 0
  scored = json.loads((tmp_path / "scored" / "s.json").read_text())
  assert scored["reward_name"] == "chorale_rules" and scored["kl"] >= 0
  assert (tmp_path / "scored" / "s.png").exists()


def test_dpo_step_through_the_trainer_starts_at_log2(chorale_source, tmp_path):
  from gen.lm.finetune import make_pairs

  source, data = chorale_source
  pairs = tmp_path / "pairs.jsonl"
  # An untrained model writes malformed chorales (reward 0): keep ties here.
  assert make_pairs.main([f"--workdir={source}", "--reward=chorale_rules", "--num=4",
                          f"--out={pairs}", "--batch=8", "--min_margin=-1"]) == 0
  recs = [json.loads(x) for x in pairs.read_text().splitlines()]
  assert len(recs) == 4 and all(r["chosen_reward"] >= r["rejected_reward"] for r in recs)
  assert all(r["prompt_ids"] == [TOK.BOS] and len(r["chosen_ids"]) <= 15 for r in recs)
  c = _config("jsb_chorales_dpo.py", **{"data.dir": data, "data.seq_len": 16,
                                        "init_from": str(source), "data.pairs": str(pairs)})
  train_lib.train(c, str(tmp_path / "dpo"), handle_signals=False)
  m = _metrics(tmp_path / "dpo")[0]
  assert m["loss"] == pytest.approx(np.log(2.0), abs=1e-5)
  assert m["margin"] == pytest.approx(0.0, abs=1e-5) and "accuracy" in m


def test_reinforce_step_with_prompts_from_text_windows(tmp_path):
  from gen.lm import steps as lm
  from gen.lm.finetune import make

  path = tmp_path / "play.txt"
  path.write_text("ROMEO:\nBut soft, what light\nthrough yonder window breaks?\n\n" * 30)
  c = _config("shakespeare_char_rl.py", **{"data.name": f"text:{path}",
                                           "finetune.prompt_len": 3, "finetune.target": 5.0})
  tok = text_lib.build_tokenizer(c.data)
  spec = token_spec(8, tok)
  p = make(c, spec)
  state = p.init(jax.random.key(0), spec.example_batch(1))
  windows = jnp.asarray(np.stack([tok.encode("ROMEO:\nBu"), tok.encode("\nBut soft")]))
  rollout = jax.jit(lambda *a: ft.rollout(lm.parts(c, spec), -1, *a), static_argnums=4)
  tokens, gen = rollout(state.params, jax.random.key(1), windows[:, :3], jnp.array([3, 3]), 5)
  np.testing.assert_array_equal(tokens[:, :3], windows[:, :3])
  assert gen.tolist() == [[False] * 3 + [True] * 5] * 2
  new, m = jax.jit(p.train_step)(state, {"tokens": windows}, jax.random.key(2))
  assert int(new.step) == 1 and float(m["length"]) == 5.0
  assert float(m["kl"]) == pytest.approx(0.0, abs=1e-6)
  assert all(np.isfinite(float(v)) for v in m.values()) and "reward_lines" in m


def test_sft_keeps_the_source_tokenizer(tmp_path):
  path = tmp_path / "play.txt"
  path.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 40)
  src = _config("shakespeare_char_cpu.py", **{"data.name": f"text:{path}", "train.num_steps": 0})
  train_lib.train(src, str(tmp_path / "src"), handle_signals=False)
  # Fine-tune on a text with fewer characters: the source's vocabulary is kept.
  path2 = tmp_path / "other.txt"
  path2.write_text("But soft\n" * 200)
  sft = _config("shakespeare_char_sft.py", **{"data.name": f"text:{path2}",
                                              "init_from": str(tmp_path / "src")})
  train_lib.train(sft, str(tmp_path / "sft"), handle_signals=False)
  assert _tokenizer(tmp_path / "sft").vocab == _tokenizer(tmp_path / "src").vocab


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("overrides, message", [
    ({"finetune.method": "ppo2"}, "finetune.method must be one of reinforce, ppo, dpo"),
    ({"finetune.reward": "nope"},
     r"unknown reward 'nope' \(finetune.reward\); registered rewards: chorale_rules"),
    ({"finetune.ppo_epochs": 0}, "ppo_epochs must be >= 1"),
])
def test_bad_finetune_configs(overrides, message):
  from gen.lm.finetune import make

  c = _config("jsb_chorales_ppo.py", **overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    make(c, token_spec(8, TOK))


def test_errors_found_when_the_pipeline_is_built(tmp_path):
  from gen.lm import make as make_lm
  from gen.lm.finetune import make

  spec = token_spec(8, TOK)
  for overrides, message in [({"finetune.reward": "line_length", "finetune.target": 5.0},
                              "is for text"),
                             ({"finetune.max_new_tokens": 8}, "does not fit the model's context")]:
    with pytest.raises(config_lib.ConfigError, match=message):
      make(_config("jsb_chorales_ppo.py", **overrides), spec)
  with pytest.raises(config_lib.ConfigError, match="set data.pairs"):
    make(_config("jsb_chorales_dpo.py"), spec)
  with pytest.raises(config_lib.ConfigError, match="set family = 'lm.finetune'"):
    c = _config("jsb_chorales_ppo.py")
    with c.unlocked():
      c.family = "lm"
    make_lm(c, spec)
