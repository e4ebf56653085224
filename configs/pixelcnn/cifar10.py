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

from gen.pixelcnn.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=64, eval_batch_size=500, name="tfds:cifar10", num_threads=8,
                preprocess="scale", random_flip=True)

  c.model.update(features=128, head="logistic_mixture", input_kernel=7, num_layers=15, num_mix=10)

  c.optim.update(ema_decay=0.9995, lr=0.001, warmup_steps=2000)

  c.train.update(checkpoint_every=5000, eval_every=25000, log_every=500, num_samples=16,
                 num_steps=500000, sample_every=25000)
  return c
