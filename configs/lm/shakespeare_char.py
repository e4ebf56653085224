"""Character-level GPT on Tiny Shakespeare in nanoGPT's GPU shape (shakespeare_char).

6 layers, 6 heads, 384 wide (10.7M parameters), context 256, batch 64, dropout 0.2,
5000 iterations of AdamW (lr 1e-3 -> 1e-4 cosine, beta2 0.99, weight decay 0.1), bf16
compute with float32 parameters.

Run:       gen train --config=configs/lm/shakespeare_char.py --workdir=runs/shakespeare
           gen sample --workdir=runs/shakespeare --prompt="ROMEO:" --max_new_tokens=500 \\
             --temperature=0.8 --top_k=200
           (pip install -e ".[cuda]" on a GPU machine; tinyshakespeare/input.txt is looked
           up in data.dir or $GEN_DATA_DIR)
Hardware:  an accelerator (not run here: this project's machine is a 2-core CPU).
Wall time: not measured here (needs an accelerator).
Result:    not measured here.
Reference: nanoGPT's README: val loss 1.4697 after 5000 iterations, about 3 minutes on one
           A100.
"""

from gen.lm.config import default_config


def get_config():
  c = default_config()
  return c
