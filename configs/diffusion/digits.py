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

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.batch_size = 64
  c.data.eval_batch_size = 297  # The whole digits test split in one batch.

  c.model.dit.patch = 2
  c.model.unet.channels = 32
  c.model.unet.channel_mult = (1, 2)  # 8x8 -> 4x4.

  c.optim.update(ema_decay=0.999, lr=0.001, warmup_steps=200)

  c.train.update(checkpoint_every=1000, eval_every=1000, log_every=100, num_steps=3000,
                 sample_every=1000)
  return c
