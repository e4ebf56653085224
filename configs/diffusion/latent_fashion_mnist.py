"""Latent diffusion on Fashion-MNIST: an EDM UNet on the 8 x 8 x 4 latents of
configs/diffusion/autoencoder_fashion_mnist.py, against pixel-space
configs/diffusion/fashion_mnist.py.

Run:       gen train --config=configs/diffusion/autoencoder_fashion_mnist.py \\
             --workdir=runs/autoencoder-fashion-mnist --config.data.dir=DIR
           gen train --config=configs/diffusion/latent_fashion_mnist.py \\
             --workdir=runs/latent-fashion-mnist --config.data.dir=DIR
           gen sample --workdir=runs/latent-fashion-mnist --sampler=heun --steps=18
Hardware:  2-core CPU (no accelerator), no other jobs running.
Wall time: 1 min 37 s for 1200 steps at batch 32 (17.5 steps/s logged; pixel
           fashion_mnist.py: 6.0), evals and samples included; with the autoencoder's 5 min
           9 s, 6 min 46 s in all, against 3 min 49 s for fashion_mnist.py's 1200 steps (the
           same steps, not the same wall time: the autoencoder costs more than the pixel run
           at this short budget).
Result:    1000 test images, EMA params, step 1200: EDM loss 0.333 in latent space. Samples
           (docs/images/latent-fashion-mnist.png, heun 18): recognisable garments of every
           class with smooth, blurred texture.
FD:        FD (gen classifier features, fashion_mnist) 8.54 from 10,000 samples (dpmpp_2m, 20
           steps), precision 0.741, recall 0.830; pixel-space fashion_mnist.py, same steps,
           sampler and evaluation: 29.22 (0.712, 0.784). `gen eval` as in latent_mnist.py
           with --fd_classifier=runs/classifier-fashion_mnist: 1 min 20 s (158 samples/s;
           pixel 50). Sampling at batch 64, heun 18 steps, decode included: 79.3 images/s
           against 24.4 (3.25x).
Reference: latent diffusion (Rombach et al. 2022) with EDM's preconditioning (Karras et al.
           2022). No published number at this budget.
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="fashion_mnist")

  c.diffusion.sigma_data = 1.0  # The latents are normalized to unit variance.

  c.latent.autoencoder = "runs/autoencoder-fashion-mnist"  # Its workdir (model.kind='autoencoder').

  c.model.dit.patch = 1
  c.model.unet.update(channels=32, num_res_blocks=2)
  c.model.unet.channel_mult = (1, 2)  # 8 -> 4.

  c.train.update(checkpoint_every=600, eval_every=600, log_every=100, num_steps=1200,
                 sample_every=600)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
