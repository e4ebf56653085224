"""LoRA fine-tuning of the Shakespeare character model on a play it has not seen.

The task of `configs/lm/shakespeare_char_sft.py` (train on the first half of `val`, The Taming
of the Shrew; evaluate on `val[50%:70%]`) with LoRA instead of every parameter: rank 8,
alpha 16 (scale 2) on every attention and MLP kernel (16 matrices), the base frozen, a higher
learning rate (2e-3, as LoRA usually needs). Everything else is that config's.

Run:       gen train --config=configs/lm/shakespeare_char_sft_lora.py \\
             --workdir=runs/shakespeare-sft-lora --config.init_from=runs/shakespeare-cpu
Hardware:  2-core CPU (no accelerator), shared with other jobs: step rates are noisy.
Wall time: 1 min 17 s for 300 steps, compilation and six evaluations included (the full
           fine-tuning run: 1 min 8 s, just before it on the same machine).
Result:    loss on val[50%:70%]: 1.857 nats per character for the starting model -> 1.757
           (1.839 at step 50, 1.765 at step 200); full fine-tuning reaches 1.726 (1.824 at
           step 50, 1.739 at step 200). Train loss over the last 50 steps 1.890 (full 1.836).
           Trainable: 65,536 of 809,856 params (8.1%); optimizer state 0.50 MiB against
           6.18 MiB; state 3.8 MiB against 9.3 MiB (the base stored once, float32). Step time
           about the same (5.8-6.6 steps/s against 5.3-6.8 over the last 150 steps): the
           gradient of each adapted weight is formed in full before it reaches A and B, and
           XLA's step temporaries are 54.3 MiB against 52.3 MiB.
"""

import os

from gen.core.config import load_file


def get_config():
  c = load_file(os.path.join(os.path.dirname(__file__), "shakespeare_char_sft.py"))
  c.optim.lora.update(rank=8, alpha=16.0)  # Targets: the LM's default, every linear but the head.
  c.optim.lr = 2e-3
  return c
