"""Latent diffusion on MNIST: an EDM UNet on the 8 x 8 x 4 latents of
configs/diffusion/autoencoder_mnist.py, against pixel-space configs/diffusion/mnist.py.

Run:       gen train --config=configs/diffusion/autoencoder_mnist.py \\
             --workdir=runs/autoencoder-mnist --config.data.dir=DIR
           gen train --config=configs/diffusion/latent_mnist.py \\
             --workdir=runs/latent-mnist --config.data.dir=DIR
           gen sample --workdir=runs/latent-mnist --sampler=heun --steps=18
           (`latent.autoencoder` names the autoencoder's workdir: runs/autoencoder-mnist.)
Hardware:  2-core CPU (no accelerator), no other jobs running.
Wall time: 6 min 9 s for 6000 steps at batch 32 (17.7 steps/s logged; pixel mnist.py: 5.8),
           evals and samples included; with the autoencoder's 5 min 16 s, 11 min 25 s in
           all, against 17 min 57 s (quiet) to 19 min 44 s for mnist.py's 6000 steps.
Result:    1000 test images, EMA params, step 6000: EDM loss 0.151 in latent space (not
           comparable with the pixel loss). Samples (docs/images/latent-mnist.png, heun 18):
           most are clear digits, every class appears, strokes slightly soft.
FD:        FD (gen classifier features, mnist) 7.91 from 10,000 samples (dpmpp_2m, 20
           steps), precision 0.774, recall 0.885; pixel-space mnist.py, same steps, sampler
           and evaluation: 15.14 (0.665, 0.934). `gen eval --workdir=runs/latent-mnist
           --metric=fd --fd_classifier=runs/classifier-mnist --num_samples=10000
           --batch_size=250 --sampler=dpmpp_2m --steps=20`: 1 min 16 s (164 samples/s; pixel
           50 samples/s). Sampling at batch 64, heun 18 steps, decode included: 83.7 images/s
           against 25.0 (3.36x; `python benchmarks/latent.py`).
Reference: latent diffusion (Rombach et al. 2022) with EDM's preconditioning (Karras et al.
           2022). No published number at this budget.
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="mnist")

  c.diffusion.sigma_data = 1.0  # The latents are normalized to unit variance.

  c.latent.autoencoder = "runs/autoencoder-mnist"  # Its workdir (model.kind='autoencoder').

  c.model.dit.patch = 1
  c.model.unet.update(channels=32, num_res_blocks=2)
  c.model.unet.channel_mult = (1, 2)  # 8 -> 4.

  c.train.update(checkpoint_every=1500, eval_every=3000, log_every=100, num_steps=6000,
                 sample_every=3000)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
