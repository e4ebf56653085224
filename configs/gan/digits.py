"""DCGAN on scikit-learn's 8x8 digits: the GAN quickstart (non-saturating loss + R1, EMA G).

Run:       gen train --config=configs/gan/digits.py --workdir=runs/gan-digits
           gen sample --workdir=runs/gan-digits --interpolate --out=interp.png
Hardware:  2-core CPU (no accelerator).
Wall time: 3 min 19 s for 8000 steps (about 45 steps/s), compilation and evals included.
Result:    step 8000, last 100 steps: loss_d 1.115, loss_g 0.934, D accuracy 0.79 on real and
           0.75 on fake batches, r1 1.8. Test split (297 images) vs as many EMA samples: D
           accuracy 0.55 real / 0.75 fake (re-measured 2026-12-02, 5 min 22 s on a shared CPU;
           an older run gave 0.60 / 0.69). Most samples are recognisable digits of every class,
           blurrier and noisier than the real ones (about one in five is a smudge); no collapse,
           and interpolations morph smoothly from one digit into another. Outside check (a
           scikit-learn MLP digit classifier, 99.0% on the real test split, not part of gen):
           confident (p > 0.9) on 79.5% of 2000 samples (real test images: 95.6%), each class
           predicted for 8-12% of them.
FD:        FD (gen classifier features, digits) 11.65 from 10,000 EMA samples, precision
           0.709, recall 0.897 (at 297 samples: 12.67; the 297 real test images: 18.18, not a
           floor on digits, see docs/RESULTS.md). `gen eval --workdir=runs/gan-digits
           --metric=fd --fd_classifier=runs/classifier-digits`: 8 s (10,618 samples/s).
"""

from gen.gan.config import default_config


def get_config():
  c = default_config()
  return c
