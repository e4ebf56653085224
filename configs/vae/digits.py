"""VAE on scikit-learn's 8x8 digits (dynamically binarized): the quickstart.

Run:       gen train --config=configs/vae/digits.py --workdir=runs/vae-digits
Hardware:  2-core CPU (no accelerator).
Wall time: 3 min 4 s for 3000 steps (about 20 steps/s), compilation and evals included.
Result:    test split (297 images), EMA params, step 3000: IWAE NLL (k=64) 22.27 nats
           (0.502 bits/dim); negative ELBO 22.71 nats. Samples are recognisable digits.
"""

from gen.vae.config import default_config


def get_config():
  c = default_config()
  return c
