"""VAE on dynamically binarized MNIST (Bernoulli decoder), evaluated with the IWAE bound.

Run:       gen train --config=configs/vae/mnist.py --workdir=runs/vae-mnist --config.data.dir=DIR
           gen eval --workdir=runs/vae-mnist
           (DIR holds the four MNIST IDX .gz files, or set GEN_DATA_DIR.)
Hardware:  2-core CPU (no accelerator).
Wall time: 23 min 20 s for 60,000 steps (128 epochs), compilation and evals included, with
           the 2 cores shared with other jobs for most of it (alone it ran at ~75 steps/s).
           `gen eval` (k=5000 on all 10,000 test images): 41 min, also shared.
Result:    IWAE NLL 89.16 nats (0.164 bits/dim), k=5000, all 10,000 test images, EMA
           params; negative ELBO 93.33 nats. Samples are clean, varied digits.
Reference: VAE / IWAE test NLL on dynamically binarized MNIST, k=5000: 86.76 / 84.78 nats
           (Burda et al. 2016, Table 1, one stochastic layer, this architecture), after
           3,280 epochs; this config is 2.4 nats behind their VAE after 128 epochs.
"""

from gen.vae.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=128, eval_batch_size=500, name="mnist")

  c.eval.iwae_batch = 50000  # Decoder inputs per IWAE chunk (memory bound).
  c.eval.iwae_k_train = 100  # Importance samples in the periodic evals.

  c.model.update(hidden=200, latent_dim=50)
  c.model.arch = "mlp"  # Burda et al.: two tanh layers of 200 units, 50 latents.

  c.optim.update(ema_decay=0.999, grad_clip=0.0, lr=0.003, warmup_steps=500)

  c.train.update(checkpoint_every=5000, eval_every=10000, log_every=500, num_steps=60000,
                 sample_every=10000)
  c.train.eval_batches = 4  # 2000 test images per periodic eval; `gen eval` uses all 10000.
  return c
