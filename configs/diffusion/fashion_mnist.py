"""EDM-preconditioned UNet on Fashion-MNIST, unconditional.

Run:       gen train --config=configs/diffusion/fashion_mnist.py \\
             --workdir=runs/diffusion-fashion-mnist --config.data.dir=DIR
           gen sample --workdir=runs/diffusion-fashion-mnist --sampler=dpmpp_2m --steps=20
           (DIR holds fashion-mnist/*-ubyte.gz, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator), shared with one or two other jobs during the
           measurement, so the time is an upper bound.
Wall time: 13 min 3 s for 1200 steps at batch 32 (0.64 epochs; 1.3 steps/s), compilation,
           evals and samples included; 12 min 23 s of CPU time.
Result:    1000 test images, EMA params, step 1200: EDM loss 0.286, x0_mse 0.029 (step 600:
           0.310, 0.031). Samples (heun, 18 steps): most are recognisable as a garment class
           (shirts and pullovers, trousers, dresses, sneakers, ankle boots, bags), with
           rough, smeared textures and ragged edges; a few are shapeless. A CPU-budget run,
           far from converged.
FD:        A re-run on the quiet CPU: 3 min 49 s, eval loss 0.286 again; FD 29.22 from 10,000
           samples (dpmpp_2m, 20 steps), precision 0.712, recall 0.784 (3 min 28 s, 50
           samples/s). Latent space, configs/diffusion/latent_fashion_mnist.py: 8.54.
           The first run: FD (gen classifier features, fashion_mnist) 33.44 from 2,000 samples (dpmpp_2m,
           20 steps), precision 0.756, recall 0.725; real test images at 2,000: 0.300. `gen
           eval --workdir=runs/diffusion-fashion-mnist --metric=fd
           --fd_classifier=runs/classifier-fashion_mnist --num_samples=2000 --batch_size=250
           --sampler=dpmpp_2m --steps=20`: 7 min 59 s (4.2 samples/s), with other jobs on the
           CPU (docs/RESULTS.md).
Reference: no published number at this budget; EDM (Karras et al. 2022), 667k-param UNet.
"""

from gen.core.config import ConfigDict, base_config


def get_config():
  c = base_config()
  c.family = "diffusion"
  c.data.name = "fashion_mnist"
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

  c.train.num_steps = 1200
  c.train.log_every = 100
  c.train.eval_every = 600
  c.train.eval_batches = 2  # 1000 test images per eval.
  c.train.sample_every = 600
  c.train.checkpoint_every = 600
  return c
