"""PPO fine-tuning of the chorale model against voice-leading rules, with a KL penalty.

Starts from a `configs/lm/jsb_chorales.py` run (same model; this file loads that one and
adds a `finetune` section). Each step samples 16 chorale openings from BOS inside the
compiled step (127 tokens: 31 quarter notes), scores them with the `chorale_rules` reward
(gen.lm.finetune.rewards: the mean of five fractions: steps in S-A-T-B format, and among
those, voices in range, no crossing, no consecutive fifths/octaves, in key) and takes two
PPO steps on them, maximizing reward - 0.02 * KL(policy || starting model).

Run:       gen train --config=configs/lm/jsb_chorales_ppo.py --workdir=runs/chorales-ppo \\
             --config.init_from=runs/chorales
           python -m gen.lm.finetune.score --workdir=runs/chorales-ppo --num=512 --out=ppo.txt
           python -m gen.lm.finetune.score --workdir=runs/chorales --reward=chorale_rules \\
             --num=512   (the starting model)
Hardware:  2-core CPU (no accelerator).
Wall time: 11 min 38 s for 200 steps (about 3 s per step: 16 samples, two PPO epochs),
           compilation and two evaluations included; shared CPU (load 5-8), an upper bound.
Result:    512 fresh samples each (temperature 1, the policy), mean +- standard error:
           reward 0.856 +- 0.005 before -> 0.914 +- 0.004 after, at KL 4.14 nats per
           sample to the starting model (0.036 nats per sampled token). Parts before ->
           after: S-A-T-B format 0.646 -> 0.842 (the starting model often drops or
           repeats a voice token, which shifts the grid, or ends before 31 quarter notes:
           mean 23.7 -> 28.5 of them); among well-formed steps: in key 0.800 -> 0.851, no
           consecutive fifths/octaves 0.897 -> 0.911, voices in range 0.965 -> 0.984, no
           crossing 0.971 -> 0.984. Real chorales' openings score 0.954 (train split).
           Valid NLL per token 1.385 -> 1.402. Samples still look like four-part chorales
           in the piano roll (voices in their registers, stepwise soprano, leaping bass;
           held chords on 13% of steps, 12.5% before, 10% in real chorales); they were
           not listened to. A trial at lr 1e-4 with a reward that judged only the steps
           before the end (at least half the window) learned to stop after about 12
           quarter notes, where the rules are easier to keep (format 0.57, in key 0.94 at
           step 130): hence steps after the end count as failures.
           From a 600-step base instead (reward 0.814 +- 0.006): 0.870 +- 0.004 at KL 4.23,
           3 min 3 s on a quieter CPU; LoRA PPO from the same base: see
           jsb_chorales_ppo_lora.py.
"""

import os

from gen.core.config import ConfigDict, load_file


def get_config():
  c = load_file(os.path.join(os.path.dirname(__file__), "jsb_chorales.py"))
  c.model.dropout = 0.0  # Fine-tuning samples and scores the model deterministically.

  c.family = "lm.finetune"  # Fine-tuning from feedback (gen.lm.finetune).
  c.finetune = ConfigDict()
  c.finetune.method = "ppo"  # reinforce | ppo | dpo
  c.finetune.reward = "chorale_rules"  # A name registered in gen.lm.finetune.rewards.
  c.finetune.target = 0.0  # The reward's target, where it has one (line_length: characters).
  c.finetune.prompt_len = 0  # 0: prompts are the start token (BOS); k: a data window's first k.
  c.finetune.max_new_tokens = 0  # Sampled tokens per prompt; 0: fill the context.
  c.finetune.kl_coef = 0.02  # beta: weight of KL(policy || reference), nats per sequence.
  c.finetune.ppo_epochs = 2  # Optimizer steps per sampled batch (PPO).
  c.finetune.clip = 0.2  # PPO's ratio clip epsilon.
  c.finetune.beta = 0.1  # DPO's inverse temperature.

  c.data.batch_size = 16  # Samples per step.
  c.data.eval_batch_size = 64
  c.optim.update(lr=5e-5, warmup_steps=10, schedule="constant", weight_decay=0.0, ema_decay=0.0)

  c.train.update(num_steps=200, log_every=10, eval_every=100, eval_batches=0, sample_every=100,
                 num_samples=4, checkpoint_every=100)
  return c
