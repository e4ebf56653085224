"""GAN on CIFAR-10 (32x32x3) for accelerators: hinge loss, spectral norm, DiffAugment.

Recipe:    networks shaped after SNGAN's "standard CNN" (Miyato et al. 2018): a DCGAN-style
           generator with batch norm and a discriminator of 3x3 + 4x4/2 convs with spectral
           normalization, trained with the hinge loss, one D step per G step, Adam lr 2e-4
           (b1 0.5, as in DCGAN); plus DiffAugment color,translation,cutout on real and
           generated images (Zhao et al. 2020) and an EMA generator for sampling.
Run:       gen train --config=configs/gan/cifar10.py --workdir=runs/gan-cifar10
           (tfds:cifar10 needs `tfds build cifar10` once where there is a network.)
Hardware:  an accelerator (not run here: this project's machine is a 2-core CPU).
Wall time: not measured here (needs an accelerator).
Result:    not measured here. FID: `gen eval --workdir=runs/gan-cifar10 --metric=fid
           --inception=pt_inception-2015-12-05-6726825d.pth --num_samples=50000` (the FID
           weights file, supplied by path; see gen/eval/inception.py).
Reference: CIFAR-10 FID, unconditional, 100% data: StyleGAN2 11.07, DiffAugment-StyleGAN2
           9.89 (Zhao et al. 2020). Those are much larger models; this DCGAN-sized
           network should be expected to land well above them.
"""

from gen.gan.config import default_config


def get_config():
  c = default_config()
  c.data.update(eval_batch_size=500, name="tfds:cifar10", num_threads=8, prefetch=8,
                random_flip=True)

  c.gan.augment = "color,translation,cutout"  # DiffAugment policy.
  c.gan.d_lr = 2e-4  # D's learning rate; G's is optim.lr.
  c.gan.loss = "hinge"  # nonsaturating | hinge
  c.gan.r1_every = 16  # Lazy R1 every k steps (scaled by k), if r1_gamma > 0.
  c.gan.r1_gamma = 0.0  # R1 weight; 0 turns it off (spectral norm instead).
  c.gan.standing_stats = 1024  # Latents for G's batch-norm statistics when sampling.

  c.model.update(latent_dim=128, spectral_norm=True)
  c.model.d_channels = (64, 128, 256)  # 32x32 -> 16x16 -> 8x8 -> 4x4.
  c.model.d_convs_per_stage = 2  # A 3x3 conv before each strided 4x4 conv.
  c.model.g_channels = (512, 256, 128, 64)  # 4x4 -> ... -> 32x32, then a 3x3 conv.

  c.optim.update(b2=0.999, ema_decay=0.9999, lr=0.0002)

  c.train.update(checkpoint_every=5000, eval_batches=4, eval_every=10000, log_every=500,
                 num_steps=100000, sample_every=5000)
  return c
