"""Class-conditional DCGAN on MNIST: conditional batch norm in G, projection discriminator.

Run:       gen train --config=configs/gan/mnist_cond.py --workdir=runs/gan-mnist-cond \\
             --config.data.dir=DIR
           gen sample --workdir=runs/gan-mnist-cond --label=3 --out=threes.png
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator).
Wall time: 22 min 9 s for 3000 steps, compilation and evals included, with the CPU shared
           by two other training jobs (an upper bound; mnist.py, the same networks
           unconditioned, runs at about 4.4 steps/s, some 12 minutes).
Result:    step 3000, last 100 steps: loss_d 0.708, loss_g 1.814, D accuracy 0.84 on real
           and 0.86 on fake batches, r1 2.0, grad norms D 4.2 / G 3.8. Test split (1000
           images) vs as many EMA samples: D accuracy 0.92 real / 0.84 fake. Samples follow
           their labels: `--label=3` gives sixteen 3s. Outside check (a scikit-learn MLP
           classifier, 98.0% on the real test split, not part of gen), 200 EMA samples per
           class: it names the requested class for 90.6% of them (84.5% for 8 to 97.5% for
           6) and is confident (p > 0.9) on 89.8% (unconditional mnist.py: 74.2%).
FD:        FD (gen classifier features, mnist) 7.55 from 10,000 EMA samples (classes drawn
           uniformly), precision 0.798, recall 0.762 (7.29 from 2,000); real test images:
           0.251. `gen eval --workdir=runs/gan-mnist-cond --metric=fd
           --fd_classifier=runs/classifier-mnist`: 53 s, 616 samples/s, with other jobs on the
           CPU (docs/RESULTS.md).
"""

from gen.gan.config import default_config


def get_config():
  c = default_config()
  c.data.update(eval_batch_size=500, name="mnist")

  c.model.latent_dim = 64
  c.model.conditional = True  # Conditional batch norm in G, projection D.
  c.model.d_channels = (32, 64, 128)  # 28x28 -> 14x14 -> 7x7 -> 4x4.
  c.model.g_channels = (128, 64)  # 7x7 -> 14x14 -> 28x28.
  c.model.g_out_conv = False  # Last layer: a 4x4/2 transposed conv (DCGAN).

  c.train.update(checkpoint_every=500, eval_every=500, num_steps=3000, sample_every=500)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
