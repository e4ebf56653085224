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

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "diffusion"
  c.data.name = "mnist"
  c.data.preprocess = "scale"  # [-1, 1]: what the autoencoder encodes.
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.latent = ConfigDict()
  c.latent.autoencoder = "runs/autoencoder-mnist"  # Its workdir (model.kind='autoencoder').
  c.latent.autoencoder_step = 0  # 0: its newest checkpoint (a resumed run keeps its own).
  c.latent.normalize = "scalar"  # scalar (LDM: 1 / std of all latents) | channel (mean, std)
  c.latent.scale_images = 1024  # Training images the normalization is measured on.
  c.latent.sample_posterior = False  # Train on posterior samples rather than means.

  c.model = ConfigDict()
  c.model.arch = "unet"  # unet | dit
  c.model.conditional = False  # Class embedding (+ label dropout for guidance).
  c.model.label_dropout = 0.0  # P(null label) in training; > 0 enables guidance.
  c.model.dropout = 0.0
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.unet = ConfigDict()
  c.model.unet.channels = 32
  c.model.unet.channel_mult = (1, 2)  # 8 -> 4.
  c.model.unet.num_res_blocks = 2
  c.model.unet.attn_resolutions = ()  # Self-attention only in the 4x4 middle.
  c.model.unet.heads = 4
  c.model.unet.groups = 8  # GroupNorm groups (at most).
  c.model.dit = ConfigDict()  # Used with model.arch = "dit": patch 1 on the 8 x 8 latent.
  c.model.dit.patch = 1
  c.model.dit.dim = 128
  c.model.dit.depth = 4
  c.model.dit.heads = 4
  c.model.dit.mlp_ratio = 4.0
  c.model.dit.positions = "sincos"  # sincos (fixed, as in DiT) | learned

  c.diffusion = ConfigDict()
  c.diffusion.objective = "edm"  # eps | v | x0 | edm | flow
  c.diffusion.schedule = "cosine"  # linear | cosine (eps, v, x0 only)
  c.diffusion.sigma_data = 1.0  # The latents are normalized to unit variance.
  c.diffusion.p_mean = -1.2  # EDM's training noise levels: ln s ~ N(p_mean, p_std^2).
  c.diffusion.p_std = 1.2
  c.diffusion.sampler = "heun"  # ddpm ddim euler heun dpmpp_2m flow_euler flow_heun
  c.diffusion.sample_steps = 18  # 35 network evaluations with heun.
  c.diffusion.guidance = 1.0  # Classifier-free guidance scale; 1 = none.
  c.diffusion.clip_denoised = False  # Must stay False: latents are not in [-1, 1].

  c.optim.name = "adam"
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.ema_decay = 0.995

  c.train.num_steps = 6000
  c.train.log_every = 100
  c.train.eval_every = 3000
  c.train.eval_batches = 2  # 1000 test images per eval.
  c.train.sample_every = 3000
  c.train.checkpoint_every = 1500
  return c
