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

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="mnist")

  c.train.update(checkpoint_every=1500, eval_every=3000, log_every=100, num_steps=6000,
                 sample_every=3000)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
