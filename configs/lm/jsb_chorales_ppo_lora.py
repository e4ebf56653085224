"""LoRA PPO fine-tuning of the chorale model: `configs/lm/jsb_chorales_ppo.py` with LoRA.

The task, reward, KL penalty and steps of `jsb_chorales_ppo.py`, training rank-8 factors
(alpha 16, scale 2) of every attention and MLP kernel (16 matrices) on the frozen starting
model, at a higher learning rate (5e-4, as LoRA usually needs). The frozen base is the KL
reference itself: no second copy of the weights.

Run:       gen train --config=configs/lm/jsb_chorales.py --workdir=runs/chorales-600 \\
             --config.train.num_steps=600   (the base: a shorter jsb_chorales.py run)
           gen train --config=configs/lm/jsb_chorales_ppo_lora.py \\
             --workdir=runs/chorales-ppo-lora --config.init_from=runs/chorales-600
           gen train --config=configs/lm/jsb_chorales_ppo.py --workdir=runs/chorales-ppo \\
             --config.init_from=runs/chorales-600   (full-parameter PPO, for comparison)
           python -m gen.lm.finetune.score --workdir=runs/chorales-ppo-lora --num=512
           (likewise for runs/chorales-ppo, and runs/chorales-600 with --reward=chorale_rules)
Hardware:  2-core CPU (no accelerator), shared with another job (load 1.5-3).
Wall time: the base 3 min 34 s for 600 steps (valid NLL per token 1.390); LoRA PPO 3 min 20 s
           for 200 steps, full PPO 3 min 3 s, one after the other, compilation and two
           evaluations each included (about 1.3 steps/s for both); scoring 20 s each.
Result:    512 fresh samples each (temperature 1, the policy, seed 0), mean +- standard error;
           KL in nats per sample to the base (for LoRA: its own frozen base):
             run         reward           KL             well-formed  in key  valid NLL
             base        0.814 +- 0.006                  0.553        0.749   1.390
             full PPO    0.870 +- 0.004   4.23 +- 0.05   0.717        0.787   1.421
             LoRA PPO    0.852 +- 0.004   2.03 +- 0.03   0.653        0.776   1.401
           LoRA gains 69% of full PPO's reward gain at 48% of its KL (0.018 against 0.037 nats
           per sampled token), in the same steps and the same time. Other parts, base -> full
           / LoRA: quarter notes 23.9 -> 28.1 / 27.8, no consecutive fifths/octaves 0.868 ->
           0.888 / 0.885, voices in range 0.947 -> 0.981 / 0.978, no crossing 0.951 -> 0.977 /
           0.969. Memory (the start-up lines): 65,536 trainable params of 817,664 (8.0%);
           optimizer state 0.50 MiB against 6.24 MiB; state 3.9 MiB (base 3.1, factors 0.25,
           Adam 0.5) against 12.5 MiB (params, the reference copy, Adam). Step temporaries
           158.9 MiB against 156.9 MiB: the merged formulation forms every adapted weight's
           gradient in full. One setting tried (lr 5e-4); a higher lr or more steps would
           likely trade more KL for more reward.
"""

import os

from gen.core.config import load_file


def get_config():
  c = load_file(os.path.join(os.path.dirname(__file__), "jsb_chorales_ppo.py"))
  c.optim.lora.update(rank=8, alpha=16.0)  # Targets: the LM's default, every linear but the head.
  c.optim.lr = 5e-4
  return c
