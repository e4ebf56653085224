"""LoRA on an imported Stable Diffusion's UNet, trained on captioned MNIST scenes.

`gen train` fine-tunes a `gen import`ed StableDiffusionPipeline folder as diffusers'
`train_text_to_image_lora.py` does (`gen.diffusion.text_to_image`): rank 4 with alpha 4
(scale 1, the script's lora_alpha = rank) on the UNet's attention projections (to_q, to_k,
to_v, to_out.0), AdamW at 1e-4 (weight decay 1e-2, clipping at 1), a constant rate, no EMA;
the VAE, the text encoder and the UNet's own weights frozen. Captions become the empty prompt
with probability 0.1 so that guidance keeps working. The argument after the colon is the
imported workdir: the config starts from its config (networks, scheduler table, sampler) and
sets `init_from` to it. The scenes are 32 x 32; when the networks' downscale does not divide
32 (Stable Diffusion 1.x / 2.x: 8 x 8 = 64) `data.resolution` resizes them to the next multiple
(64). Adapt the text encoder too with `--config.optim.lora.targets=` a pattern that also
matches `text_encoder/.*(q_proj|k_proj|v_proj|out_proj)/kernel$`; full fine-tuning of the UNet
is `--config.optim.lora.rank=0` (lower the rate).

Run:       gen import --from=PIPELINE_FOLDER --workdir=runs/sd
           gen train --config=configs/diffusion/sd_lora_captions.py:runs/sd \\
             --workdir=runs/sd-lora --config.data.dir=DIR
           gen sample --workdir=runs/sd-lora --prompt="a small red 7 on the left"
           gen export --workdir=runs/sd-lora --lora=runs/sd-lora-adapter
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR; the adapter loads with
           StableDiffusionPipeline.load_lora_weights on the pipeline folder.)
Hardware:  2-core CPU (no accelerator), shared with other jobs (load average 7.4 on its 2
           cores during the run): times are upper bounds.
Wall time: measured on the tiny random-weight sd1 test fixture
           (tests/fixtures/diffusers_sd/sd1: 16 x 16 images, VAE and UNet downscales 2 x 2,
           so the 32 x 32 scenes stay 32 x 32 and their latents are 16 x 16 x 4; 136,899
           params): 2 min 8 s for the 500 steps at batch 16, two evals and the samples
           included (4.3-4.9 steps/s; the programs came from the compilation cache of an
           earlier run of the same shapes). No real Stable Diffusion checkpoint was at hand:
           no figure for Stable Diffusion 1.5 at 64 x 64.
Result:    (random weights, so the loss starts above 1 and says nothing about image quality)
           LoRA rank 4 on 32 matrices: 3,264 trainable params of 136,899 (2.38%); optimizer
           state 0.02 MiB. Train loss (eps MSE, mean over 50 steps) 1.218 over steps 1-50,
           1.182 over steps 451-500; eval loss (4 x 64 test scenes, the same draws) 1.214 at
           step 0 (the imported weights: `--config.train.num_steps=0`), 1.205 at step 250,
           1.169 at step 500. `gen sample --prompt=...` and `gen export --lora` (UNet 32
           modules, r=4, lora_alpha 4) ran on the result.
"""

import math

from gen.core import runs
from gen.diffusion.config import default_config
from gen.diffusion.text_to_image import multiple

SCENE = 32  # The side of captions:mnist's scenes.


def sd15():
  """What `gen import` writes for Stable Diffusion 1.5 (its networks are the defaults)."""
  c = default_config()
  c.model.kind = "text_to_image"
  c.diffusion.update(objective="eps", schedule="discrete", sampler="pndm", sample_steps=50,
                     guidance=7.5)
  c.diffusion.discrete.update(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              steps_offset=1, set_alpha_to_one=False)
  return c


def get_config(arg=None):
  if arg:  # An imported (or trained) text_to_image run: its config, and its params to start.
    c = runs.load_config(arg)
    c.unlock()
    c.init_from = arg
  else:
    c = sd15()
  f = multiple(c.model.text_to_image)
  c.data.update(name="captions:mnist", batch_size=16, eval_batch_size=64, preprocess="scale",
                random_flip=False, resolution=0 if SCENE % f == 0 else math.ceil(SCENE / f) * f)
  c.model.text_to_image.caption_dropout = 0.1
  c.optim.update(name="adamw", lr=1e-4, b1=0.9, b2=0.999, weight_decay=1e-2, warmup_steps=0,
                 schedule="constant", grad_clip=1.0, ema_decay=0.0)
  c.optim.lora.update(rank=4, alpha=4.0, targets=r"^unet/.*/(to_q|to_k|to_v|to_out_0)/kernel$")
  c.train.update(num_steps=500, log_every=50, eval_every=250, eval_batches=4, sample_every=0,
                 num_samples=8, checkpoint_every=500)
  return c
