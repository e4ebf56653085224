"""GPT-2 small (124M): 12 layers, 12 heads, 768 wide, context 1024, vocabulary 50304.

For accelerators and benchmarks. The vocabulary is a SentencePiece BPE trained locally on
the training split (no GPT-2 tokenizer download); 50304 = 50257 rounded up to a multiple of
64, as nanoGPT does. Data: `tfds:lm1b` (prepare it with `tfds build lm1b` where there is a
network; the split is read into memory), or any `text:PATH`.

Run:       gen train --config=configs/lm/gpt2_124m.py --workdir=runs/gpt2
           gen train --config=configs/lm/gpt2_124m.py --workdir=runs/gpt2 \
             --config.data.name=text:PATH/TO/corpus.txt
Hardware:  an accelerator (not run here: this project's machine is a 2-core CPU).
Wall time: not measured here (needs an accelerator).
Result:    not measured here.
Reference: nanoGPT's GPT-2 (124M) reaches val loss about 2.85 on OpenWebText after 600k
           iterations of 0.5M tokens (8 A100s, about 4 days); a different corpus and
           tokenizer here, so only the shape is comparable.
"""

from gen.lm.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, eval_batch_size=32, name="tfds:lm1b")
  c.data.eval_split = "test"  # lm1b: train | test; text:PATH: train | val
  c.data.seq_len = 1024  # Context length (nanoGPT's block_size).
  c.data.tokenizer = "sentencepiece"  # char | byte | sentencepiece
  c.data.vocab_size = 50304  # sentencepiece only.

  c.model.update(dropout=0.0, num_heads=12, num_layers=12, width=768)

  c.optim.update(b2=0.95, lr=0.0006, warmup_steps=2000)

  c.train.update(checkpoint_every=5000, eval_batches=50, eval_every=2000, log_every=100,
                 num_steps=600000, sample_every=10000)
  return c
