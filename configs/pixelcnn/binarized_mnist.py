"""Gated PixelCNN on dynamically binarized MNIST, with the exact NLL in nats.

Run:       gen train --config=configs/pixelcnn/binarized_mnist.py --workdir=runs/pixelcnn-mnist --config.data.dir=DIR
           gen eval --workdir=runs/pixelcnn-mnist
Hardware:  2-core CPU (no accelerator).
Wall time: MEASURED
Result:    MEASURED
Reference: PixelCNN 81.30 nats on binarized MNIST (van den Oord et al. 2016, "Pixel
           Recurrent Neural Networks", Table 4; the static binarization of Larochelle &
           Murray). Here the test set is binarized once with a fixed seed (dynamic
           binarization), which is close to, not the same as, the static one.
"""

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "pixelcnn"
  c.data.name = "mnist"
  c.data.preprocess = "binarize"
  c.data.batch_size = 16
  c.data.eval_batch_size = 500

  c.model = ConfigDict()
  c.model.head = "bernoulli"
  c.model.num_mix = 5
  c.model.features = 24
  c.model.num_layers = 5
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
