"""Gated PixelCNN with a discretized logistic mixture head on 8-bit Fashion-MNIST (bits/dim).

Run:       gen train --config=configs/pixelcnn/fashion_mnist.py --workdir=runs/pixelcnn-fashion --config.data.dir=DIR
           gen eval --workdir=runs/pixelcnn-fashion
Hardware:  2-core CPU (no accelerator).
Wall time: MEASURED
Result:    MEASURED
"""

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "pixelcnn"
  c.data.name = "fashion_mnist"
  c.data.preprocess = "scale"
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.model = ConfigDict()
  c.model.head = "logistic_mixture"
  c.model.num_mix = 5
  c.model.features = 32
  c.model.num_layers = 6
  c.model.input_kernel = 7
  c.model.conditional = False

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 200
  c.optim.ema_decay = 0.999

  c.train.num_steps = 3000
  c.train.log_every = 100
  c.train.eval_every = 1500
  c.train.eval_batches = 2
  c.train.sample_every = 1500
  c.train.num_samples = 16
  c.train.checkpoint_every = 500
  return c
