"""REINFORCE fine-tuning of the Shakespeare character model towards short lines.

Starts from a `configs/lm/shakespeare_char_cpu.py` run (same model; this file loads that
one and adds a `finetune` section). Each step samples 32 continuations of a newline (63
characters, the context) inside the compiled step, scores them with the `line_length`
reward (for every completed non-empty line, 1 - |length - 20| / 20, floored at 0;
averaged), and takes a REINFORCE step (leave-one-out baseline) with a KL penalty to the
starting model.

Run:       gen train --config=configs/lm/shakespeare_char_rl.py --workdir=runs/shakespeare-rl \\
             --config.init_from=runs/shakespeare-cpu
           python -m gen.lm.finetune.score --workdir=runs/shakespeare-rl --num=512
           python -m gen.lm.finetune.score --workdir=runs/shakespeare-cpu \\
             --reward=line_length --target=20 --num=512   (the starting model)
Hardware:  2-core CPU (no accelerator).
Wall time: 8 min 36 s for 300 steps (about 1.2 s per step of 32 samples), compilation and
           three evaluations included; shared CPU, an upper bound.
Result:    512 fresh samples each (temperature 1), mean +- standard error: reward
           0.285 +- 0.012 before -> 0.718 +- 0.006 after, at KL 6.62 nats per 63-character
           sample to the starting model (0.105 nats per character). Mean completed line
           30.1 -> 19.0 characters, 1.64 -> 2.55 completed lines per sample. Samples still
           read as play dialogue (speaker names, short verse lines, blank lines between
           speeches) but with more misspellings and long invented speaker names that fill
           a line ("HED MENKE GMINCKINIO:"); val loss 1.898 -> 2.053 nats per character.
"""

import os

from gen.core.config import ConfigDict, load_file


def get_config():
  c = load_file(os.path.join(os.path.dirname(__file__), "shakespeare_char_cpu.py"))
  c.family = "lm.finetune"  # Fine-tuning from feedback (gen.lm.finetune).
  c.finetune = ConfigDict()
  c.finetune.method = "reinforce"  # reinforce | ppo | dpo
  c.finetune.reward = "line_length"  # A name registered in gen.lm.finetune.rewards.
  c.finetune.target = 20.0  # Characters per line.
  c.finetune.prompt_len = 0  # 0: prompts are the start token ("\n"); k: a data window's first k.
  c.finetune.max_new_tokens = 0  # Sampled tokens per prompt; 0: fill the context.
  c.finetune.kl_coef = 0.02  # beta: weight of KL(policy || reference), nats per sequence.
  c.finetune.ppo_epochs = 1  # PPO only.
  c.finetune.clip = 0.2  # PPO only.
  c.finetune.beta = 0.1  # DPO only.

  c.data.batch_size = 32  # Samples per step.
  c.optim.update(lr=5e-5, warmup_steps=10, schedule="constant", weight_decay=0.0, ema_decay=0.0)

  c.train.update(num_steps=300, log_every=10, eval_every=100, eval_batches=0, sample_every=100,
                 num_samples=2, checkpoint_every=100)
  return c
