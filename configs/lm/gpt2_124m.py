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

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "lm"
  c.data.name = "tfds:lm1b"
  c.data.tokenizer = "sentencepiece"  # char | byte | sentencepiece
  c.data.vocab_size = 50304  # sentencepiece only.
  c.data.seq_len = 1024  # Context length (nanoGPT's block_size).
  c.data.batch_size = 32
  c.data.eval_batch_size = 32
  c.data.eval_split = "test"  # lm1b: train | test; text:PATH: train | val

  c.model = ConfigDict()
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.width = 768
  c.model.norm = "layernorm"  # layernorm | rmsnorm
  c.model.norm_eps = 1e-5  # GPT-2's LayerNorm epsilon.
  c.model.mlp = "gelu"  # gelu | swiglu
  c.model.positions = "learned"  # learned | rotary
  c.model.tie_embeddings = True
  c.model.use_bias = True
  c.model.dropout = 0.0
  c.model.dtype = "bfloat16"  # float32 | bfloat16 (compute; params stay float32)
  c.model.remat = False

  c.sample = ConfigDict()
  c.sample.max_new_tokens = 500
  c.sample.temperature = 0.8
  c.sample.top_k = 200  # 0: off.
  c.sample.top_p = 1.0  # 1: off.
  c.sample.stride = 0  # Cache slide past the context; 0: a quarter of it (gen.lm.sampling).

  c.optim.name = "adamw"
  c.optim.lr = 6e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.1
  c.optim.warmup_steps = 2000
  c.optim.schedule = "cosine"
  c.optim.min_lr_ratio = 0.1
  c.optim.grad_clip = 1.0
  c.optim.ema_decay = 0.0

  c.train.num_steps = 600000
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.eval_batches = 50
  c.train.sample_every = 10000
  c.train.num_samples = 2
  c.train.checkpoint_every = 5000
  return c
