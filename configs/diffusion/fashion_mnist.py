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

from gen.diffusion.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=32, name="fashion_mnist")

  c.train.update(checkpoint_every=600, eval_every=600, log_every=100, num_steps=1200,
                 sample_every=600)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
