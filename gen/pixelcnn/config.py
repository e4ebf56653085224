"""Every key of a pixelcnn config, with its default: experiment files override what differs.

`configs/pixelcnn/*.py` start from `default_config()` and set only what their run changes; a
workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict, base_config


def default_config() -> ConfigDict:
  c = base_config()
  c.family = "pixelcnn"
  c.data.name = "digits"
  c.data.preprocess = "binarize"
  c.data.batch_size = 32
  c.data.eval_batch_size = 297

  c.model = ConfigDict()
  c.model.head = "bernoulli"  # bernoulli (binarized data) | logistic_mixture (8-bit data)
  c.model.num_mix = 5  # Logistic mixture components (logistic_mixture head).
  c.model.features = 24
  c.model.num_layers = 4
  c.model.input_kernel = 5
  c.model.conditional = False

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.ema_decay = 0.995

  c.train.num_steps = 2500
  c.train.log_every = 100
  c.train.eval_every = 1250
  c.train.sample_every = 1250
  c.train.checkpoint_every = 1250
  return c
