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

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "diffusion"
  c.data.name = "fashion_mnist"
  c.data.preprocess = "scale"  # [-1, 1].
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.model = ConfigDict()
  c.model.kind = "autoencoder"  # denoiser | classifier | autoencoder
  c.model.autoencoder = ConfigDict()
  c.model.autoencoder.pad = 2  # 28 -> 32 (edge values), so the latent is 8 x 8.
  c.model.autoencoder.channels = 16
  c.model.autoencoder.channel_mult = (1, 2, 4)  # 32 -> 16 -> 8: f = 4.
  c.model.autoencoder.num_res_blocks = 1
  c.model.autoencoder.groups = 8  # GroupNorm groups (at most).
  c.model.autoencoder.latent_channels = 4  # Latent 8 x 8 x 4 = 256 numbers per image.
  c.model.autoencoder.loss = "l1"  # l1 | l2: the reconstruction term.
  c.model.autoencoder.kl_weight = 1e-6  # LDM's KL weight (per summed latent / summed pixels).
  c.model.autoencoder.disc_weight = 0.0  # > 0: a patch discriminator's hinge loss joins...
  c.model.autoencoder.disc_start = 1000  # ...from this step (LDM: after a warm-up).
  c.model.autoencoder.disc_channels = 32
  c.model.autoencoder.disc_layers = 2

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.ema_decay = 0.999

  c.train.num_steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.eval_batches = 4  # 2000 test images per eval.
  c.train.sample_every = 1000  # Reconstructions (test images over them).
  c.train.checkpoint_every = 1000
  return c
