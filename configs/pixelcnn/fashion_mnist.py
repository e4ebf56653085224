"""Gated PixelCNN with a discretized logistic mixture head on 8-bit Fashion-MNIST (bits/dim).

Run:       gen train --config=configs/pixelcnn/fashion_mnist.py --workdir=runs/pixelcnn-fashion \\
             --config.data.dir=DIR
           gen eval --workdir=runs/pixelcnn-fashion
Hardware:  2-core CPU (no accelerator).
Wall time: 10 min 48 s for 1500 steps of 16 images (0.4 epoch), compilation included, the
           2 cores shared with another job throughout. `gen eval`: 49 s.
Result:    exact test NLL 3.157 bits/dim (1716 nats), all 10,000 test images, EMA params.
           Undertrained: samples have garment-like shapes and shading but few are
           recognisable items. Train longer (or on an accelerator) for real samples.
"""

from gen.pixelcnn.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=16, eval_batch_size=500, name="fashion_mnist", preprocess="scale")

  c.model.update(head="logistic_mixture", input_kernel=7, num_layers=5)

  c.optim.update(ema_decay=0.999, warmup_steps=200)

  c.train.update(checkpoint_every=500, eval_batches=2, eval_every=750, num_samples=16,
                 num_steps=1500, sample_every=750)
  return c
