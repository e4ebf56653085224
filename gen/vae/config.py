"""Every key of a vae config, with its default: experiment files override what differs.

`configs/vae/*.py` start from `default_config()` and set only what their run changes; a
workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict, base_config


def default_config() -> ConfigDict:
  c = base_config()
  c.family = "vae"
  c.data.name = "digits"
  c.data.preprocess = "binarize"
  c.data.batch_size = 64
  c.data.eval_batch_size = 297  # The whole digits test split in one batch.

  c.model = ConfigDict()
  c.model.arch = "conv"  # conv | mlp
  c.model.mlp_depth = 2  # Hidden layers of the mlp encoder and decoder (arch="mlp").
  c.model.latent_dim = 8
  c.model.channels = (32, 64)
  c.model.hidden = 256
  c.model.likelihood = "bernoulli"
  c.model.beta = 1.0

  c.eval = ConfigDict()
  c.eval.iwae_k_train = 64  # Importance samples in the periodic evals.
  c.eval.iwae_k = 5000  # Importance samples for `gen eval`.
  c.eval.iwae_batch = 8192  # Decoder inputs per IWAE chunk (memory bound).

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.ema_decay = 0.995

  c.train.num_steps = 3000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  return c
