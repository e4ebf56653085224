"""Character-level GPT on Tiny Shakespeare, nanoGPT's CPU shape: the LM quickstart.

Run:       gen train --config=configs/lm/shakespeare_char_cpu.py --workdir=runs/shakespeare-cpu
           gen sample --workdir=runs/shakespeare-cpu --prompt="ROMEO:" --max_new_tokens=500
           (tinyshakespeare/input.txt is looked up in data.dir or $GEN_DATA_DIR; or set
           --config.data.name=text:PATH/TO/input.txt)
Hardware:  2-core CPU (no accelerator).
Wall time: 5 min 33 s for 2000 steps (about 6.5 steps/s), compilation and four evaluations
           of the whole val split included, with one other training job on the CPU (an
           upper bound). A run beside two other jobs took 10 min 11 s and reached the
           identical loss: training is deterministic.
Result:    val loss 1.898 nats/char (perplexity 6.67) on the whole val split (111,540
           characters, non-overlapping 64-character windows); train loss 1.774 over the
           last 100 steps. Samples read like play dialogue: speaker names in capitals
           with colons, verse lines, blank lines between speeches, mostly real words
           ("Which such if this our mading speak in to my Romine.").
Reference: nanoGPT's README: this shape (4 layers, 4 heads, 128 wide, context 64, batch 12,
           2000 iterations, no dropout) reaches val loss about 1.88 in about 3 minutes on a
           CPU (a laptop).
"""

from gen.lm.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=12, eval_batch_size=128)
  c.data.seq_len = 64  # Context length (nanoGPT's block_size).

  c.model.update(dropout=0.0, num_heads=4, num_layers=4, width=128)
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.norm_eps = 1e-6  # The epsilon the figures above were measured with (GPT-2: 1e-5).

  c.sample.max_new_tokens = 256

  c.train.update(eval_every=500, log_every=100, num_steps=2000)
  return c
