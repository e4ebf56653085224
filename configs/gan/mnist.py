"""DCGAN on MNIST (28x28): non-saturating loss + R1, EMA generator.

Run:       gen train --config=configs/gan/mnist.py --workdir=runs/gan-mnist --config.data.dir=DIR
           gen sample --workdir=runs/gan-mnist --interpolate --out=interp.png
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator).
Wall time: 12 min 21 s for 3000 steps (about 4.4 steps/s), compilation and evals included.
Result:    step 3000, last 100 steps: loss_d 0.911, loss_g 1.348, D accuracy 0.78 on real and
           0.82 on fake batches, r1 1.5, grad norms D 4.3 / G 1.8. Test split (1000 images) vs
           as many EMA samples: D accuracy 0.55 real / 0.95 fake. About three samples in four
           are recognisable digits, all ten classes among them; the rest are broken strokes or
           blobs. No collapse; interpolations morph smoothly (1 into 4, 8 into 0, 7 into 9).
           Outside check (a scikit-learn MLP classifier, 98.0% on the real test split, not
           part of gen): confident (p > 0.9) on 74.2% of 2000 samples (real test images:
           96.9%), each class predicted for 4.5-15.4% of them.
FD:        FD (gen classifier features, mnist) 26.84 from 10,000 EMA samples, precision 0.713,
           recall 0.873 (28.60 from 2,000); real test images: 0.251. `gen eval
           --workdir=runs/gan-mnist --metric=fd --fd_classifier=runs/classifier-mnist`: 49 s,
           616 samples/s, with other jobs on the CPU (docs/RESULTS.md).
"""

from gen.gan.config import default_config


def get_config():
  c = default_config()
  c.data.update(eval_batch_size=500, name="mnist")

  c.model.latent_dim = 64
  c.model.d_channels = (32, 64, 128)  # 28x28 -> 14x14 -> 7x7 -> 4x4.
  c.model.g_channels = (128, 64)  # 7x7 -> 14x14 -> 28x28.
  c.model.g_out_conv = False  # Last layer: a 4x4/2 transposed conv (DCGAN).

  c.train.update(checkpoint_every=500, eval_every=500, num_steps=3000, sample_every=500)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
