"""Every key of a gan config, with its default: experiment files override what differs.

`configs/gan/*.py` start from `default_config()` and set only what their run changes; a
workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict, base_config


def default_config() -> ConfigDict:
  c = base_config()
  c.family = "gan"
  c.data.name = "digits"
  c.data.preprocess = "scale"  # [-1, 1], the range of the generator's tanh.
  c.data.batch_size = 64
  c.data.eval_batch_size = 297  # The whole digits test split in one batch.

  c.model = ConfigDict()
  c.model.latent_dim = 32
  c.model.g_channels = (64, 32)  # 4x4 -> 8x8, then a 3x3 conv.
  c.model.g_out_conv = True  # Last layer: a 3x3 conv at full resolution.
  c.model.d_channels = (32, 64)  # 8x8 -> 4x4 -> 2x2.
  c.model.d_convs_per_stage = 1  # 2 adds a 3x3 conv before each strided one.
  c.model.spectral_norm = False
  c.model.conditional = False  # Conditional batch norm in G, projection D.

  c.gan = ConfigDict()
  c.gan.loss = "nonsaturating"  # nonsaturating | hinge
  c.gan.d_lr = 5e-4  # D's learning rate; G's is optim.lr.
  c.gan.r1_gamma = 0.1  # R1 weight; 0 turns the penalty off.
  c.gan.r1_every = 1  # Lazy R1 every k steps (scaled by k); on CPU 1 is fastest.
  c.gan.augment = ""  # DiffAugment policy, e.g. "color,translation,cutout".
  c.gan.standing_stats = 512  # Latents for G's batch-norm statistics when sampling.

  c.optim.name = "adam"
  c.optim.lr = 5e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.99
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.optim.grad_clip = 0.0
  c.optim.ema_decay = 0.999

  c.train.num_steps = 8000
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.sample_every = 2000
  c.train.checkpoint_every = 2000
  return c
