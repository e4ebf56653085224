"""LoRA fine-tuning of the MNIST diffusion UNet to Fashion-MNIST.

`configs/diffusion/fashion_mnist.py` (the UNet and EDM process of `mnist.py`) started from an
MNIST run (`--config.init_from`) and trained for 600 steps with LoRA: rank 8, alpha 16 (scale
2) on every kernel but the output convolution (50 matrices: the convolutions, the time
embedding's and the res blocks' Dense layers, attention), the base frozen. Full fine-tuning
is the same command with `--config.optim.lora.rank=0`.

Run:       gen train --config=configs/diffusion/mnist.py --workdir=runs/diffusion-mnist-1200 \\
             --config.train.num_steps=1200   (the base: a shorter mnist.py run)
           gen train --config=configs/diffusion/fashion_mnist_lora.py \\
             --workdir=runs/fashion-ft-lora --config.init_from=runs/diffusion-mnist-1200
           (full fine-tuning: --workdir=runs/fashion-ft-full --config.optim.lora.rank=0)
           gen train --config=gen.classifier.configs.fashion_mnist \\
             --workdir=runs/classifier-fashion_mnist   (FD's feature classifier, 49 s)
           gen eval --workdir=runs/fashion-ft-lora --metric=fd \\
             --fd_classifier=runs/classifier-fashion_mnist --num_samples=5000 \\
             --batch_size=250 --sampler=dpmpp_2m --steps=20
           (the base on Fashion-MNIST: add --config.data.name=fashion_mnist)
           (the data: --config.data.dir=DIR, or set GEN_DATA_DIR)
Hardware:  2-core CPU (no accelerator), shared with another job at normal priority
           (load 2-4), so times are upper bounds and step rates are not comparable.
Wall time: base 7 min 19 s for 1200 steps (eval loss 0.166, x0_mse 0.0215); full
           fine-tuning 8 min 15 s and LoRA 6 min 13 s for 600 steps each, compilation, two
           evals and samples included; each FD 2-4.5 min (21-39 samples/s).
Result:    FD (gen classifier features, fashion_mnist; 5,000 samples, dpmpp_2m 20 steps,
           EMA params, vs the 60,000 train images; biased upward at 5,000, comparable among
           these rows only):
             run                    FD      precision  recall  eval loss  x0_mse
             MNIST base             156.8   0.320      0.024
             full fine-tuning       49.3    0.667      0.752   0.294      0.0282
             LoRA r=8               68.2    0.658      0.639   0.326      0.0309
           LoRA closes 82% of full fine-tuning's FD gap from the base in the same steps.
           Its eval loss is above a from-scratch fashion_mnist.py run's at step 600 (0.310;
           full fine-tuning's is below). Samples of both read as garments (shirts, coats,
           trousers, bags; full fine-tuning's more often shoes and sharper outlines), rough
           as at this budget. Trainable: 127,176 of 666,625 params (19.1%: the UNet is small,
           16-128 channels, so rank 8 is a large share); optimizer state 0.97 MiB against
           5.09 MiB; state 4.5 MiB (base, factors, their EMA, Adam) against 10.2 MiB (params,
           EMA, Adam). Step temporaries 124.2 MiB against 123.9 MiB. The output convolution
           ([3, 3, 16, 1]: a 144 x 1 matrix, rank 1 at most) stays frozen; trained, it is not
           zero, so gradients pass it.
"""

import os

from gen.core.config import load_file


def get_config():
  c = load_file(os.path.join(os.path.dirname(__file__), "fashion_mnist.py"))
  c.optim.lora.update(rank=8, alpha=16.0)
  # Every kernel but the output convolution's ([3, 3, 16, 1]: a 144 x 1 matrix takes rank 1 at
  # most). Trained, it is not zero, so the frozen one passes gradients.
  c.optim.lora.targets = r"^(?!Conv_3/).*kernel$"
  c.train.update(num_steps=600, checkpoint_every=600, eval_every=300, sample_every=600)
  return c
