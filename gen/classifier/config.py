"""Every key of a classifier config, with its default: experiment files override what differs.

`gen/classifier/configs/*.py` start from `default_config()` and set only what their run changes; a
workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict, base_config


def default_config() -> ConfigDict:
  c = base_config()
  c.family = "classifier"
  c.data.name = "digits"
  c.data.preprocess = "scale"
  c.data.batch_size = 64
  c.data.eval_batch_size = 297  # The whole digits test split in one batch.

  c.model = ConfigDict()
  c.model.channels = (32, 64)  # 8 -> 4 -> 2, then a global average pool.
  c.model.features = 128  # Width of the penultimate layer: the FD feature dimension.
  # mean (global average) | flatten (every position) | slots (each slot of a captioned scene,
  # gen.core.data.captions, read by the same layers).
  c.model.pool = "mean"

  c.optim.name = "adamw"
  c.optim.lr = 2e-3
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 100
  c.optim.ema_decay = 0.999

  c.train.num_steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.sample_every = 0
  c.train.checkpoint_every = 1000
  return c
