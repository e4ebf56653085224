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

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "lm"
  c.data.name = "text:tinyshakespeare/input.txt"
  c.data.tokenizer = "char"  # char | byte | sentencepiece
  c.data.vocab_size = 0  # sentencepiece only.
  c.data.seq_len = 64  # Context length (nanoGPT's block_size).
  c.data.batch_size = 12
  c.data.eval_batch_size = 128
  c.data.eval_split = "val"

  c.model = ConfigDict()
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.norm = "layernorm"  # layernorm | rmsnorm
  c.model.norm_eps = 1e-6  # The epsilon the figures above were measured with (GPT-2: 1e-5).
  c.model.mlp = "gelu"  # gelu | swiglu
  c.model.positions = "learned"  # learned | rotary
  c.model.tie_embeddings = True
  c.model.use_bias = True
  c.model.dropout = 0.0
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.remat = False

  c.sample = ConfigDict()
  c.sample.max_new_tokens = 256
  c.sample.temperature = 0.8
  c.sample.top_k = 200  # 0: off.
  c.sample.top_p = 1.0  # 1: off.
  c.sample.stride = 0  # Cache slide past the context; 0: a quarter of it (gen.lm.sampling).

  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.1
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.optim.min_lr_ratio = 0.1
  c.optim.grad_clip = 1.0
  c.optim.ema_decay = 0.0

  c.train.num_steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.eval_batches = 0  # The whole val split (1,742 windows of 64 characters).
  c.train.sample_every = 1000
  c.train.num_samples = 2
  c.train.checkpoint_every = 1000
  return c
