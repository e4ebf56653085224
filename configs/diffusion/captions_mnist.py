"""Text to image from scratch on captioned MNIST scenes: a DiT reading a jointly trained text
transformer by cross-attention, in pixel space, with classifier-free guidance.

Run:       gen train --config=configs/diffusion/captions_mnist.py \\
             --workdir=runs/captions-mnist --config.data.dir=DIR
           gen sample --workdir=runs/captions-mnist --prompt="a red 3 above a blue 8" \\
             --guidance=4
           gen eval --workdir=runs/captions-mnist --metric=captions \\
             --judge=runs/judge-captions-mnist
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator): the 2000-step run alone; the 600-step pilot shared
           with two other jobs throughout.
Wall time: 18 min 8 s for 2000 steps (1.9 steps/s, compilation, evals and
           samples included); the pilot's 600 steps took 14 min 15 s shared. 5,329,520 params.
Result:    step 2000 (EMA params, 1000 test scenes): EDM loss
           0.083, x0_mse 0.0105. The judge (gen.classifier.configs.captions_mnist; 100
           captions per split, dpmpp_2m 20 steps): faithful 0.00 at guidance 0, 1, 2 and 4 on
           seen and held-out compositions; colours right 0.03 / 0.02 / 0.00 / 0.02, positions
           0.06 / 0.03 / 0.01 / 0.02 (seen). The samples are fragmented 4 x 4 patches in
           roughly the prompt's colours, no glyphs: at this budget the DiT on pixels lags the
           latent DiT of captions_mnist_latent_dit.py (same width, depth and 64 tokens, 2000
           steps: positions 0.88-0.97, colours 0.59-0.70) and the pixel UNet of
           captions_mnist_unet.py. The 600-step pilot (EDM loss 0.131, x0_mse 0.014) looked
           alike. The table's pixel DiT row.
Reference: PixArt-alpha's cross-attention DiT blocks (Chen et al. 2023); no published number
           on these scenes.
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="captions:mnist")

  c.model.update(kind="text_denoiser", arch="dit")
  c.model.dit.update(dim=192, depth=6, heads=6, patch=4)
  c.model.text.update(width=128, layers=2, heads=4, max_length=32)

  c.diffusion.update(guidance=3.0, sampler="dpmpp_2m", sample_steps=20)

  c.optim.update(lr=0.001, warmup_steps=200)

  c.train.update(checkpoint_every=1000, eval_every=1000, log_every=100, num_steps=2000,
                 sample_every=1000)
  c.train.eval_batches = 2
  return c
