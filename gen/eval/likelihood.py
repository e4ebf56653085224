"""Likelihood metrics in both units, with the data convention they assume stated.

Families report negative log-likelihoods in nats: per image (`nll`, PixelCNN; `nelbo`,
`iwae_nll`, VAE) or per token (`loss`, language and music models; the token source adds
`nll_per_char` / `nll_per_step`). `units` adds the missing twin of each (bits/dim next to
nats per image, bits next to nats per token) and `convention` says what the numbers are a
likelihood of, so `gen eval` prints both units and the convention for every family that
has a likelihood.
"""

from __future__ import annotations

import math

# Per-image NLLs in nats and their bits/dim names, as the families report them.
IMAGE_NATS = {"nll": "bpd", "nelbo": "nelbo_bpd", "iwae_nll": "iwae_bpd"}
# Per-token (or per-character, per-step) NLLs in nats and their names in bits.
TOKEN_NATS = {"loss": "bits_per_token", "nll_per_char": "bits_per_char",
              "nll_per_step": "bits_per_step"}

CONVENTIONS = {
    "binarize": "binarized images (each pixel 1 with probability x/255, drawn once with a "
                "fixed seed at eval): -log p of the binary image, nats per image; "
                "bits/dim = nats / (H*W*C ln 2)",
    "scale": "8-bit images, a discrete likelihood over the 256 values of each dimension: "
             "-log P(x), nats per image; bits/dim = nats / (H*W*C ln 2)",
    "dequantize": "uniformly dequantized 8-bit images, a density on [0, 256)^D (an upper "
                  "bound on the discrete NLL): nats per image; bits/dim = nats / (D ln 2)",
    "unit": "grey levels in [0, 1] (x/255): the model's loss on them, nats per image; "
            "bits/dim = nats / (H*W*C ln 2)",
    "tokens": "next-token cross-entropy averaged over every token of the eval split, nats "
              "per token; perplexity = exp(nats per token); per character / per step: the "
              "split's total nats divided by its characters / time steps; bits = nats / ln 2",
}


def units(metrics: dict, spec) -> dict[str, float]:
  """The bits twins of the NLLs in `metrics` (nats) that are not there yet."""
  out = {}
  if spec.kind == "tokens":
    pairs, scale = TOKEN_NATS, 1.0 / math.log(2.0)
  else:
    pairs, scale = IMAGE_NATS, 1.0 / (math.prod(spec.shape) * math.log(2.0))
  for nats, bits in pairs.items():
    if nats in metrics and bits not in metrics:
      out[bits] = metrics[nats] * scale
  return out


def convention(metrics: dict, spec) -> str | None:
  """What the likelihood metrics in `metrics` measure, or None when there are none."""
  if spec.kind == "tokens":
    return CONVENTIONS["tokens"] if "loss" in metrics else None
  if any(k in metrics for k in IMAGE_NATS):
    return CONVENTIONS.get(spec.preprocess)
  return None
