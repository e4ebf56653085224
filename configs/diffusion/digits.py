"""EDM-preconditioned UNet on scikit-learn's 8x8 digits: the diffusion quickstart.

Run:       gen train --config=configs/diffusion/digits.py --workdir=runs/diffusion-digits
           gen sample --workdir=runs/diffusion-digits --sampler=heun --steps=18
Hardware:  2-core CPU (no accelerator), no other jobs running.
Wall time: 3 min 50 s for 3000 steps (13-16 steps/s), compilation, evals and samples
           included. (Under load from three other training jobs, before the UNet and
           compiler-option speed-ups of benchmarks/RESULTS.md: 20 min 40 s.)
Result:    test split (297 images), EMA params, step 3000: EDM loss 0.471, x0_mse 0.053
           (both at random noise levels, as in training). Samples (heun, 18 steps, 35
           network evaluations, 64 in 2.4 s): most are recognisable digits of every class,
           with clean backgrounds; about one in six is ambiguous or malformed.
FD:        On an earlier run of this config (same settings, under load): FD (gen
           classifier features, digits) 2.57 from 10,000 samples (dpmpp_2m, 20 steps),
           precision 0.806, recall 0.946; the GAN quickstart: 11.65 (at 297 samples: 14.83
           and 12.67; the 297 real test images: 18.18, not a floor on digits, see
           docs/RESULTS.md). `gen eval --workdir=runs/diffusion-digits --metric=fd
           --fd_classifier=runs/classifier-digits --sampler=dpmpp_2m --steps=20`: 7 min 24 s
           (22.7 samples/s), with other jobs on the CPU.
Reference: none published for 8x8 digits; this is a smoke-scale EDM (Karras et al. 2022).
"""

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "diffusion"
  c.data.name = "digits"
  c.data.preprocess = "scale"  # [-1, 1].
  c.data.batch_size = 64
  c.data.eval_batch_size = 297  # The whole digits test split in one batch.

  c.model = ConfigDict()
  c.model.arch = "unet"  # unet | dit
  c.model.conditional = False  # Class embedding (+ label dropout for guidance).
  c.model.label_dropout = 0.0  # P(null label) in training; > 0 enables guidance.
  c.model.dropout = 0.0
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.unet = ConfigDict()
  c.model.unet.channels = 32
  c.model.unet.channel_mult = (1, 2)  # 8x8 -> 4x4.
  c.model.unet.num_res_blocks = 1
  c.model.unet.attn_resolutions = ()  # Self-attention only in the 4x4 middle.
  c.model.unet.heads = 4
  c.model.unet.groups = 8  # GroupNorm groups (at most).
  c.model.dit = ConfigDict()  # Used with model.arch = "dit".
  c.model.dit.patch = 2
  c.model.dit.dim = 128
  c.model.dit.depth = 4
  c.model.dit.heads = 4
  c.model.dit.mlp_ratio = 4.0
  c.model.dit.positions = "sincos"  # sincos (fixed, as in DiT) | learned

  c.diffusion = ConfigDict()
  c.diffusion.objective = "edm"  # eps | v | x0 | edm | flow
  c.diffusion.schedule = "cosine"  # linear | cosine (eps, v, x0 only)
  c.diffusion.sigma_data = 0.5  # EDM's data standard deviation.
  c.diffusion.p_mean = -1.2  # EDM's training noise levels: ln s ~ N(p_mean, p_std^2).
  c.diffusion.p_std = 1.2
  c.diffusion.sampler = "heun"  # ddpm ddim euler heun dpmpp_2m flow_euler flow_heun
  c.diffusion.sample_steps = 18  # 35 network evaluations with heun.
  c.diffusion.guidance = 1.0  # Classifier-free guidance scale; 1 = none.
  c.diffusion.clip_denoised = False  # Clip x0_hat to [-1, 1] at every step.

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 200
  c.optim.ema_decay = 0.999

  c.train.num_steps = 3000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  return c
