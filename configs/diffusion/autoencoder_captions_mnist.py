"""KL-regularized autoencoder on captioned MNIST scenes (32 x 32 RGB): the 8 x 8 x 4 latent
space of configs/diffusion/captions_mnist_latent.py.

Run:       gen train --config=configs/diffusion/autoencoder_captions_mnist.py \\
             --workdir=runs/autoencoder-captions-mnist --config.data.dir=DIR
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator), shared with one or two other jobs throughout (an
           upper bound on the time).
Wall time: 12 min 27 s for 2000 steps at batch 32 (2.0-3.0 steps/s logged), evals and
           reconstructions included. 500,059 params.
Result:    2000 test scenes, EMA params, step 2000: reconstruction MSE 0.0044 on [-1, 1]
           (PSNR 30.6 dB on [0, 1]), L1 0.027, KL 1451 nats per image; latent 8 x 8 x 4, per
           channel RMS 0.75 / 0.67 / 1.18 / 1.02. The reconstructions keep every glyph's colour,
           size and shape. With the default L1 loss the same run reached PSNR 17.2 dB: its
           reconstructions were black canvases, the median of a mostly black image.
Reference: LDM's KL-regularized first stage (Rombach et al. 2022), kl_weight 1e-6, L2 here.
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="captions:mnist")

  c.model.kind = "autoencoder"  # denoiser | classifier | autoencoder
  c.model.autoencoder.pad = 0  # 32 -> 16 -> 8: an 8 x 8 x 4 latent.
  # Squared error: with L1 the mostly black canvas pulled the reconstructions to black.
  c.model.autoencoder.loss = "l2"

  c.optim.update(ema_decay=0.999, lr=0.001)

  c.train.update(checkpoint_every=1000, eval_every=1000, log_every=100, num_steps=2000)
  c.train.eval_batches = 4  # 2000 test images per eval.
  return c
