"""Every key of a lm config, with its default: experiment files override what differs.

`configs/lm/*.py` start from `default_config()` and set only what their run changes; a
workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict, base_config


def default_config() -> ConfigDict:
  c = base_config()
  c.family = "lm"
  c.data.name = "text:tinyshakespeare/input.txt"
  c.data.tokenizer = "char"  # char | byte | sentencepiece
  c.data.vocab_size = 0  # sentencepiece only.
  c.data.seq_len = 256  # Context length (nanoGPT's block_size).
  c.data.batch_size = 64
  c.data.eval_batch_size = 64
  c.data.eval_split = "val"

  c.model = ConfigDict()
  c.model.num_layers = 6
  c.model.num_heads = 6
  c.model.width = 384
  c.model.norm = "layernorm"  # layernorm | rmsnorm
  c.model.norm_eps = 1e-5  # nanoGPT's (PyTorch's LayerNorm default, as GPT-2).
  c.model.mlp = "gelu"  # gelu | swiglu
  c.model.positions = "learned"  # learned | rotary
  c.model.tie_embeddings = True
  c.model.use_bias = True
  c.model.dropout = 0.2
  c.model.dtype = "bfloat16"  # float32 | bfloat16 (compute; params stay float32)
  c.model.remat = False
  # Today's decoders (set by `gen import` of a LLaMA / Mistral / Qwen / Gemma folder).
  c.model.num_kv_heads = 0  # Key/value heads (grouped-query attention); 0: num_heads.
  c.model.head_dim = 0  # Width of a head; 0: width // num_heads.
  c.model.mlp_hidden = 0  # The MLP's hidden width; 0: 4 * width (gelu) or the SwiGLU rule.
  c.model.qkv_bias = False  # Biases on q, k, v only (Qwen2), whatever use_bias says.
  c.model.qk_norm = False  # RMSNorm of each head's q and k (Qwen3).
  c.model.rope_theta = 10000.0  # Rotary base.
  c.model.rope_scaling = ConfigDict()  # transformers' rope_parameters (llama3, linear); {}: none.
  c.model.embed_scale = False  # Embeddings times sqrt(width) (Gemma).
  c.model.param_dtype = "float32"  # Stored params: float32 | bfloat16 | float16.

  c.sample = ConfigDict()
  c.sample.max_new_tokens = 500
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
  c.optim.lora.targets = r"(attn|mlp)/\w+/kernel$"  # Every linear layer but the head.

  c.train.num_steps = 5000
  c.train.log_every = 50
  c.train.eval_every = 250
  c.train.eval_batches = 0  # The whole val split (435 windows of 256 characters).
  c.train.sample_every = 1000
  c.train.num_samples = 2
  c.train.checkpoint_every = 1000
  return c
