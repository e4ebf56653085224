"""Supervised fine-tuning of the Shakespeare character model on a play it has not seen.

Tiny Shakespeare's last 10% (`val`) is The Taming of the Shrew, then The Tempest (from
70%). The pre-trained model (`configs/lm/shakespeare_char_cpu.py`) saw neither. This run
starts from its params (`init_from`; fresh optimizer; its character vocabulary is kept)
and trains on the first half of `val`, and evaluates on `val[50%:70%]`, the rest of The
Taming of the Shrew. Same model and data pipeline: only the splits, the learning rate
and the length differ from the pre-training config.

Run:       gen train --config=configs/lm/shakespeare_char_sft.py --workdir=runs/shakespeare-sft \\
             --config.init_from=runs/shakespeare-cpu
           gen eval --workdir=runs/shakespeare-cpu --config.data.eval_split='val[50%:70%]'
           (the second command: the starting model on the same eval text)
Hardware:  2-core CPU (no accelerator).
Wall time: 2 min 0 s for 300 steps, compilation and six evaluations included; shared CPU,
           an upper bound.
Result:    loss on val[50%:70%] (22,308 characters, whole split): 1.857 nats per character
           for the starting model -> 1.726 after (1.824 at step 50, 1.739 at step 200;
           still falling); train loss 1.836 over the last 50 steps. Samples speak with the
           play's characters (TRANIO, BAPTISTA, GREMIO, PETRUCHIO), whose names the
           starting model never saw.
"""

import os

from gen.core.config import load_file


def get_config():
  c = load_file(os.path.join(os.path.dirname(__file__), "shakespeare_char_cpu.py"))
  c.data.train_split = "val[:50%]"  # 55,770 characters of The Taming of the Shrew.
  c.data.eval_split = "val[50%:70%]"  # 22,308 more characters of it, not trained on.
  c.model.dropout = 0.1  # A small training text.
  c.optim.update(lr=3e-4, warmup_steps=20, min_lr_ratio=0.1)
  c.train.update(num_steps=300, log_every=50, eval_every=50, sample_every=300, checkpoint_every=300)
  return c
