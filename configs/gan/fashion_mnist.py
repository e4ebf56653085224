"""DCGAN on Fashion-MNIST (28x28): non-saturating loss + R1, EMA generator.

Run:       gen train --config=configs/gan/fashion_mnist.py --workdir=runs/gan-fashion \\
             --config.data.dir=DIR
           gen sample --workdir=runs/gan-fashion --interpolate --out=interp.png
           (DIR holds the four Fashion-MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator).
Wall time: 35 min 49 s for 3000 steps, compilation and evals included, with the CPU shared
           by two or three other training jobs throughout (1.4 steps/s; an upper bound:
           the same networks run at about 4.4 steps/s alone, some 12 minutes, see mnist.py).
Result:    step 3000, last 100 steps: loss_d 0.960, loss_g 1.280, D accuracy 0.75 on real
           and 0.81 on fake batches, r1 1.3, grad norms D 4.0 / G 1.6. Test split (1000
           images) vs as many EMA samples: D accuracy 0.69 real / 0.91 fake. Most samples
           are recognisable garments (shirts, pullovers, dresses, trousers, coats), shoes
           and bags blurrier; no collapse. Outside check (a scikit-learn MLP classifier,
           89.3% on the real test split, not part of gen): confident (p > 0.9) on 52.4% of
           2000 samples (real test images: 82.3%), each class predicted for 3.3-16.0%.
FD:        FD (gen classifier features, fashion_mnist) 36.03 from 10,000 EMA samples,
           precision 0.733, recall 0.787 (35.39 from 2,000); real test images: 0.061. `gen eval
           --workdir=runs/gan-fashion --metric=fd --fd_classifier=runs/classifier-fashion_mnist`:
           43 s, 539 samples/s, with other jobs on the CPU (docs/RESULTS.md).
"""

from gen.gan.config import default_config


def get_config():
  c = default_config()
  c.data.update(eval_batch_size=500, name="fashion_mnist")

  c.model.latent_dim = 64
  c.model.d_channels = (32, 64, 128)  # 28x28 -> 14x14 -> 7x7 -> 4x4.
  c.model.g_channels = (128, 64)  # 7x7 -> 14x14 -> 28x28.
  c.model.g_out_conv = False  # Last layer: a 4x4/2 transposed conv (DCGAN).

  c.train.update(checkpoint_every=500, eval_every=500, num_steps=3000, sample_every=500)
  c.train.eval_batches = 2  # 1000 test images per eval.
  return c
