"""Text to image from scratch on captioned MNIST scenes: a DiT reading a jointly trained text
transformer by cross-attention, in pixel space, with classifier-free guidance.

Run:       gen train --config=configs/diffusion/captions_mnist.py \\
             --workdir=runs/captions-mnist --config.data.dir=DIR
           gen sample --workdir=runs/captions-mnist --prompt="a red 3 above a blue 8" \\
             --guidance=4
           gen eval --workdir=runs/captions-mnist --metric=captions \\
             --judge=runs/judge-captions-mnist
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator), shared with two other jobs throughout.
Wall time: measured only as a pilot, `--config.train.num_steps=600`: 14 min 15 s for 600
           steps at batch 32 (0.7-0.9 steps/s while shared), eval and samples included.
           5,329,520 params.
Result:    step 600 (EMA params, 1000 test scenes): EDM loss 0.131, x0_mse 0.014. The samples
           are fragmented 4 x 4 patches of roughly the prompt's colours, no glyphs yet: at this
           budget the DiT on pixels lags the latent UNet of captions_mnist_latent.py, which
           2000 latent steps bring to glyph-like strokes. Not judged.
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

  c.train.update(checkpoint_every=1000, eval_every=1000, log_every=100, num_steps=3000,
                 sample_every=1000)
  c.train.eval_batches = 2
  return c
