"""KL-regularized autoencoder on Fashion-MNIST: the latent space of
configs/diffusion/latent_fashion_mnist.py.

Run:       gen train --config=configs/diffusion/autoencoder_fashion_mnist.py \\
             --workdir=runs/autoencoder-fashion-mnist --config.data.dir=DIR
           (DIR holds fashion-mnist/*-ubyte.gz, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator), no other jobs running.
Wall time: 5 min 9 s for 2000 steps at batch 32 (about 6.7 steps/s), evals and
           reconstructions included.
Result:    2000 test images, EMA params, step 2000: reconstruction MSE 0.0136 on [-1, 1]
           (PSNR 26.2 dB on [0, 1]), L1 0.056, KL 1564 nats per image; latent 8 x 8 x 4,
           per-channel RMS 1.29 / 1.15 / 1.04 / 1.79. Shapes and shading are kept; fine
           print and knit textures are blurred (docs/images/autoencoder-fashion-mnist.png).
           latent_fashion_mnist.py measured its scale factor at 0.766.
Reference: LDM's KL-regularized first stage (Rombach et al. 2022), kl_weight 1e-6, here
           without LDM's perceptual loss and discriminator (disc_weight 0).
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="fashion_mnist")

  c.model.kind = "autoencoder"  # denoiser | classifier | autoencoder

  c.optim.update(ema_decay=0.999, lr=0.001)

  c.train.update(checkpoint_every=1000, eval_every=1000, log_every=100, num_steps=2000)
  c.train.eval_batches = 4  # 2000 test images per eval.
  c.train.sample_every = 1000  # Reconstructions (test images over them).
  return c
