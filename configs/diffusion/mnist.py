"""EDM-preconditioned UNet on MNIST, unconditional.

Run:       gen train --config=configs/diffusion/mnist.py --workdir=runs/diffusion-mnist \\
             --config.data.dir=DIR
           gen sample --workdir=runs/diffusion-mnist --sampler=heun --steps=18
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator), no other jobs running.
Wall time: 17 min 57 s for 6000 steps at batch 32 (3.2 epochs; about 6 steps/s),
           compilation, evals and samples included.
Result:    1000 test images, EMA params, step 6000: EDM loss 0.153, x0_mse 0.021 (step
           3000: 0.161, 0.022). Samples (heun, 18 steps; 64 in 7.0 s): about three in four
           are clearly recognisable digits, every class appears; the rest are malformed
           (open loops, merged strokes). At 1200 steps (an earlier run) it was about half.
FD:        At 6000 steps (a re-run: 19 min 44 s, eval loss 0.153 again): FD 15.14 from 10,000
           samples (dpmpp_2m, 20 steps), precision 0.665, recall 0.934; `gen eval` as below
           with --num_samples=10000: 3 min 28 s (50 samples/s) on the quiet CPU. Latent
           space, configs/diffusion/latent_mnist.py: 7.91 in less wall time.
           At 1200 steps (the earlier run): FD (gen classifier features, mnist) 39.02
           from 2,000 samples (dpmpp_2m, 20 steps), precision 0.611, recall 0.895; real
           test images at 2,000: 0.688. `gen eval
           --workdir=runs/diffusion-mnist --metric=fd --fd_classifier=runs/classifier-mnist
           --num_samples=2000 --batch_size=250 --sampler=dpmpp_2m --steps=20`: 9 min 50 s
           (3.5 samples/s), with other jobs on the CPU (docs/RESULTS.md).
Reference: no published number at this budget; EDM (Karras et al. 2022), 667k-param UNet.
"""

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "diffusion"
  c.data.name = "mnist"
  c.data.preprocess = "scale"  # [-1, 1].
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.model = ConfigDict()
  c.model.arch = "unet"  # unet | dit
  c.model.conditional = False  # Class embedding (+ label dropout for guidance).
  c.model.label_dropout = 0.0  # P(null label) in training; > 0 enables guidance.
  c.model.dropout = 0.0
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.unet = ConfigDict()
  c.model.unet.channels = 16
  c.model.unet.channel_mult = (1, 2, 4)  # 28 -> 14 -> 7.
  c.model.unet.num_res_blocks = 1
  c.model.unet.attn_resolutions = ()  # Self-attention only in the 7x7 middle.
  c.model.unet.heads = 4
  c.model.unet.groups = 8  # GroupNorm groups (at most).
  c.model.dit = ConfigDict()  # Used with model.arch = "dit".
  c.model.dit.patch = 4
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
