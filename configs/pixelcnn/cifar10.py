"""Gated PixelCNN with the PixelCNN++ mixture head on CIFAR-10 (bits/dim), for accelerators.

Run:       gen train --config=configs/pixelcnn/cifar10.py --workdir=runs/pixelcnn-cifar10
           (needs `tfds build cifar10` once, where there is a network; data.dir points at it)
Hardware:  one GPU/TPU; far too slow for a CPU.
Wall time: not measured here: this project's machines have no accelerator yet.
Result:    not measured here.
Reference: PixelCNN++ 2.92 bits/dim on the CIFAR-10 test set (Salimans et al. 2017), with a
           U-Net of 6 gated ResNet blocks per resolution and 160 filters; Gated PixelCNN
           3.03 (van den Oord et al. 2016). This config is the flat gated stack of this
           family, sized like the Gated PixelCNN paper (15 layers); expect it between the two.
"""

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "pixelcnn"
  c.data.name = "tfds:cifar10"
  c.data.preprocess = "scale"
  c.data.random_flip = True
  c.data.batch_size = 64
  c.data.eval_batch_size = 500
  c.data.num_threads = 8

  c.model = ConfigDict()
  c.model.head = "logistic_mixture"
  c.model.num_mix = 10
  c.model.features = 128
  c.model.num_layers = 15
  c.model.input_kernel = 7
  c.model.conditional = False

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 2000
  c.optim.ema_decay = 0.9995

  c.train.num_steps = 500_000
  c.train.log_every = 500
  c.train.eval_every = 25_000
  c.train.sample_every = 25_000
  c.train.num_samples = 16
  c.train.checkpoint_every = 5000
  return c
