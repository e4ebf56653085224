"""DDPM on CIFAR-10: the DDPM/ADM UNet shape (38M params), eps-prediction, linear schedule.

Run:       gen train --config=configs/diffusion/cifar10.py --workdir=runs/diffusion-cifar10
           gen sample --workdir=runs/diffusion-cifar10 --sampler=ddpm --steps=1000
           (needs network access for tfds:cifar10, or a prepared TFDS data.dir)
Hardware:  not measured here (needs an accelerator: 800k steps at batch 128).
Wall time: not measured here (needs an accelerator). DDPM reports 21 steps/s, 10.6 hours,
           on a TPU v3-8 for this shape (Ho et al. 2020, appendix B).
Result:    not measured here (needs an accelerator). Published anchors, unconditional
           CIFAR-10 FID on 50k samples: DDPM (this shape, eps + linear, 1000 ancestral
           steps) 3.17 (Ho et al. 2020); EDM 1.97 at 35 NFE (Karras et al. 2022), which needs
           --config.diffusion.objective=edm --config.diffusion.sampler=heun
           --config.diffusion.sample_steps=18 and their larger DDPM++ network, so expect
           between the two with this UNet. FID: `gen eval --workdir=runs/diffusion-cifar10
           --metric=fid --inception=pt_inception-2015-12-05-6726825d.pth --num_samples=50000
           --sampler=ddpm --steps=1000` (weights supplied by path, gen/eval/inception.py).
Reference: Ho et al. 2020 (DDPM): ch 128, ch_mult (1, 2, 2, 2), 2 res blocks, attention at
           16x16, dropout 0.1, lr 2e-4, batch 128, EMA 0.9999, random flips; 35.7M params
           without ADM's scale-shift norm, which this UNet uses (Dhariwal & Nichol 2021).
"""

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(name="tfds:cifar10", random_flip=True)

  c.diffusion.clip_denoised = True  # Clip x0_hat to [-1, 1] at every step (as DDPM does).
  c.diffusion.objective = "eps"  # eps | v | x0 | edm | flow
  c.diffusion.sample_steps = 100  # For the periodic grids; FID as published: ddpm, 1000.
  c.diffusion.sampler = "ddim"  # ddpm ddim euler heun dpmpp_2m flow_euler flow_heun
  c.diffusion.schedule = "linear"  # linear | cosine (eps, v, x0 only)

  c.model.dit.update(depth=12, dim=384, heads=6, patch=2)
  c.model.dropout = 0.1
  c.model.unet.update(attn_resolutions=(16,), channels=128, num_res_blocks=2)
  c.model.unet.channel_mult = (1, 2, 2, 2)  # 32 -> 16 -> 8 -> 4.
  c.model.unet.groups = 32  # GroupNorm groups (at most).

  c.optim.update(ema_decay=0.9999, lr=0.0002, schedule="constant", warmup_steps=5000)

  c.train.update(checkpoint_every=10000, eval_batches=4, eval_every=10000, log_every=100,
                 num_steps=800000, sample_every=10000)
  return c
