"""KL-regularized autoencoder on captioned MNIST scenes (32 x 32 RGB): the 8 x 8 x 4 latent
space of configs/diffusion/captions_mnist_latent.py.

Run:       gen train --config=configs/diffusion/autoencoder_captions_mnist.py \\
             --workdir=runs/autoencoder-captions-mnist --config.data.dir=DIR
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="captions:mnist")

  c.model.kind = "autoencoder"  # denoiser | classifier | autoencoder
  c.model.autoencoder.update(pad=0, channels=32)  # 32 -> 16 -> 8: an 8 x 8 x 4 latent.

  c.optim.update(ema_decay=0.999, lr=0.001)

  c.train.update(checkpoint_every=1000, eval_every=1000, log_every=100, num_steps=2000)
  c.train.eval_batches = 4  # 2000 test images per eval.
  return c
