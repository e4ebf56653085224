"""Gated PixelCNN on scikit-learn's 8x8 digits (dynamically binarized): the quickstart.

Run:       gen train --config=configs/pixelcnn/digits.py --workdir=runs/pixelcnn-digits
Hardware:  2-core CPU (no accelerator).
Wall time: 3 min 27 s for 2500 steps (the 2 cores shared with another training job).
Result:    exact test NLL 22.72 nats (0.512 bits/dim) on the 297 test digits, EMA params,
           step 2500 (22.27 is the VAE quickstart's IWAE bound on the same images).
           Samples are binary 8x8 strokes; at this size binarized digits are barely
           readable even for real ones (compare the originals in completions.png).
"""

from gen.core.config import ConfigDict, base_config


def get_config():
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
