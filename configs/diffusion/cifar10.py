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

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "diffusion"
  c.data.name = "tfds:cifar10"
  c.data.preprocess = "scale"  # [-1, 1].
  c.data.random_flip = True
  c.data.batch_size = 128
  c.data.eval_batch_size = 500

  c.model = ConfigDict()
  c.model.arch = "unet"  # unet | dit
  c.model.conditional = False  # Class embedding (+ label dropout for guidance).
  c.model.label_dropout = 0.0  # P(null label) in training; > 0 enables guidance.
  c.model.dropout = 0.1
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.unet = ConfigDict()
  c.model.unet.channels = 128
  c.model.unet.channel_mult = (1, 2, 2, 2)  # 32 -> 16 -> 8 -> 4.
  c.model.unet.num_res_blocks = 2
  c.model.unet.attn_resolutions = (16,)
  c.model.unet.heads = 4
  c.model.unet.groups = 32  # GroupNorm groups (at most).
  c.model.dit = ConfigDict()  # Used with model.arch = "dit".
  c.model.dit.patch = 2
  c.model.dit.dim = 384
  c.model.dit.depth = 12
  c.model.dit.heads = 6
  c.model.dit.mlp_ratio = 4.0
  c.model.dit.positions = "sincos"  # sincos (fixed, as in DiT) | learned

  c.diffusion = ConfigDict()
  c.diffusion.objective = "eps"  # eps | v | x0 | edm | flow
  c.diffusion.schedule = "linear"  # linear | cosine (eps, v, x0 only)
  c.diffusion.sigma_data = 0.5  # EDM's data standard deviation.
  c.diffusion.p_mean = -1.2  # EDM's training noise levels: ln s ~ N(p_mean, p_std^2).
  c.diffusion.p_std = 1.2
  c.diffusion.sampler = "ddim"  # ddpm ddim euler heun dpmpp_2m flow_euler flow_heun
  c.diffusion.sample_steps = 100  # For the periodic grids; FID as published: ddpm, 1000.
  c.diffusion.guidance = 1.0  # Classifier-free guidance scale; 1 = none.
  c.diffusion.clip_denoised = True  # Clip x0_hat to [-1, 1] at every step (as DDPM does).

  c.optim.name = "adam"
  c.optim.lr = 2e-4
  c.optim.warmup_steps = 5000
  c.optim.schedule = "constant"
  c.optim.grad_clip = 1.0
  c.optim.ema_decay = 0.9999

  c.train.num_steps = 800_000
  c.train.log_every = 100
  c.train.eval_every = 10_000
  c.train.eval_batches = 4
  c.train.sample_every = 10_000
  c.train.checkpoint_every = 10_000
  return c
