"""Gated PixelCNN on scikit-learn's 8x8 digits (dynamically binarized): the quickstart.

Run:       gen train --config=configs/pixelcnn/digits.py --workdir=runs/pixelcnn-digits
Hardware:  2-core CPU (no accelerator).
Wall time: 3 min 27 s for 2500 steps (the 2 cores shared with another training job).
Result:    exact test NLL 22.72 nats (0.512 bits/dim) on the 297 test digits, EMA params,
           step 2500 (22.27 is the VAE quickstart's IWAE bound on the same images).
           Samples are binary 8x8 strokes; at this size binarized digits are barely
           readable even for real ones (compare the originals in completions.png).
"""

from gen.pixelcnn.config import default_config


def get_config():
  c = default_config()
  return c
