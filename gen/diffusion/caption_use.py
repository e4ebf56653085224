"""Which words of its captions does a text-to-image denoiser read, and at which noise levels?

  python -m gen.diffusion.caption_use --workdir=RUN [--num=256] [--split=test]
      [--levels=0.1,0.2,0.4,0.7,1,1.5,2,3,5,10] [--seed=0] [--step=N] [--json]

For `num` scenes of the run's captioned dataset (`gen.core.data.captions`), at each noise
level s (sigma / alpha: EDM's sigma, for any process), the squared error of the denoised
estimate (`x0_mse`, per element, in the space the network denoises: pixels or a latent run's
latents) with the scene's own caption, and how much it rises when the caption is changed in
one attribute: every object named as another identity, another colour, the other size, in the
opposite place (left and right, top and bottom swap), or the null caption. The changed
captions keep the template and words of the true one (each is written from the same random
stream), the noise is the same for all of them. A rise near zero says the network ignores
that attribute's words at that level; the rise of the null caption is what the whole caption
tells it. `train_share` is the fraction of the run's training noise levels nearest each level
(the process's own draws of t), so a reader sees where training spends its steps.

`gen eval --metric=captions` says whether the images follow their captions; this says which
words the network has learned to follow, without sampling, in a minute on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gen.core import runs
from gen.core.data import captions, preprocess, sources
from gen.diffusion import denoiser, text, text_denoiser
from gen.diffusion import latent as latent_lib

LEVELS = (0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CHANGES = ("identity", "colour", "size", "position")
OPPOSITE = (1, 0, 3, 2)  # Slot -> the opposite slot (left <-> right, top <-> bottom).


def changed(objects: list[captions.Object], what: str, num_identities: int,
            rng: np.random.Generator) -> list[captions.Object]:
  """`objects` with attribute `what` (one of CHANGES) of every object changed: another
  identity or colour (uniform among the others), the other size, the opposite slot."""
  def one(o):
    if what == "identity":
      return dataclasses.replace(o, identity=int(o.identity + 1 + rng.integers(
          num_identities - 1)) % num_identities)
    if what == "colour":
      n = len(captions.COLOURS)
      return dataclasses.replace(o, colour=int(o.colour + 1 + rng.integers(n - 1)) % n)
    if what == "size":
      return dataclasses.replace(o, size=1 - o.size)
    if what == "position":
      return dataclasses.replace(o, slot=OPPOSITE[o.slot])
    raise ValueError(f"no change '{what}': one of {', '.join(CHANGES)}")
  return [one(o) for o in objects]  # In the same order: the caption names them as before.


def caption_sets(src, indices, seed: int = 0) -> dict[str, list[str]]:
  """{"true": captions of the scenes `indices`, and one list per change of CHANGES}: the
  same template and words for every variant of a scene (each from the stream [seed, i])."""
  rng = np.random.default_rng([seed, 1])
  out = {k: [] for k in ("true", *CHANGES)}
  for i in indices:
    objects = src.objects(int(i))
    for k in out:
      objs = objects if k == "true" else changed(objects, k, src.num_classes, rng)
      out[k].append(captions.describe(objs, src.names, np.random.default_rng([seed, 0, int(i)])))
  return out


def _train_shares(process, levels, rng, draws: int = 200_000) -> list[float]:
  """The share of training levels whose nearest level (in log s) is each of `levels`."""
  s = np.asarray(process.level(process.sample_t(rng, (draws,))), np.float64)
  edges = np.sqrt(np.asarray(levels[:-1]) * np.asarray(levels[1:]))
  return np.bincount(np.searchsorted(edges, s), minlength=len(levels)).astype(float) / draws


def measure(workdir: str, num: int = 256, levels=LEVELS, split: str = "test", seed: int = 0,
            batch: int = 256, step: int | None = None) -> dict:
  """The table of the module docstring: {"levels": [...], "rows": [{level, train_share,
  x0_mse, rise: {change: ...}}], ...}. One-line ValueErrors for runs it cannot read."""
  if step is not None:
    folder = os.path.join(workdir, "checkpoints")
    steps = sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(
        folder) else []
    if step not in steps:
      raise ValueError(f"no checkpoint at step {step} in {workdir} (it has "
                       f"{', '.join(map(str, steps)) or 'none'})")
  config, spec, pipeline, state, step = runs.load_workdir(workdir, step=step)
  if config.get("family") != "diffusion" or config.model.get("kind") != "text_denoiser":
    raise ValueError(f"{workdir} holds a {config.get('family')} "
                     f"{config.model.get('kind', 'model')} run, not a text_denoiser: it reads "
                     "no captions")
  if not config.data.name.startswith(captions.PREFIX):
    raise ValueError(f"{workdir} was trained on {config.data.name}, not on captioned scenes "
                     f"({captions.PREFIX}...): its captions cannot be changed one attribute "
                     "at a time")
  levels = sorted(float(s) for s in levels)
  if not levels or levels[0] <= 0 or not all(map(math.isfinite, levels)):
    raise ValueError(f"noise levels must be positive and finite, got {levels}")
  codec = latent_lib.codec(config, spec)
  net, process, objective, cfg = text_denoiser.parts(config, spec, codec)
  tokenizer = text.tokenizer_of(spec)
  params = pipeline.sample_params(state)
  src = sources.load(config.data.name, split, config.data.dir)
  indices = np.sort(np.random.default_rng([seed, 2]).choice(len(src), min(num, len(src)),
                                                            replace=False))
  sets = caption_sets(src, indices, seed)
  ids = {k: np.asarray(tokenizer(v)) for k, v in sets.items()}
  ids["null"] = np.repeat(np.asarray(tokenizer([""])), len(indices), axis=0)
  apply_raw = denoiser.apply_fn(net, params)

  @jax.jit
  def errors(images, t, eps, labels):  # Per example.
    x0 = cfg.to_canvas(images)
    _, x0_mse = denoiser.per_example_loss(apply_raw, process, objective, x0, t, eps, labels)
    return x0_mse

  images = np.asarray(preprocess(np.stack([src[int(i)]["image"] for i in indices]),
                                 spec.preprocess, None), np.float32)
  shape = tuple(cfg.shape)
  pairs = np.asarray([len(src.objects(int(i))) == 2 for i in indices])
  rows, shares = [], _train_shares(process, levels, jax.random.key(seed))
  for j, s in enumerate(levels):
    t = jnp.full((len(indices),), process.t_of_level(jnp.float32(s)), jnp.float32)
    eps = jax.random.normal(jax.random.fold_in(jax.random.key(seed), j),
                            (len(indices),) + shape)
    mse = {k: np.concatenate([
        np.asarray(errors(images[a:a + batch], t[a:a + batch], eps[a:a + batch],
                          v[a:a + batch])) for a in range(0, len(indices), batch)])
        for k, v in ids.items()}
    rows.append({"level": s, "train_share": float(shares[j]),
                 "x0_mse": float(np.mean(mse["true"])),
                 "rise": {k: float(np.mean(mse[k] - mse["true"])) for k in (*CHANGES, "null")},
                 "rise_pairs": {k: float(np.mean((mse[k] - mse["true"])[pairs]))
                                if pairs.any() else math.nan for k in (*CHANGES, "null")}})
  return {"workdir": workdir, "step": int(step), "dataset": config.data.name, "split": split,
          "num": len(indices), "num_pairs": int(pairs.sum()), "space": "latent" if codec is not None else "pixels",
          "levels": levels, "rows": rows, "example": {k: v[0] for k, v in sets.items()}}


def report(out: dict) -> str:
  lines = [f"{out['dataset']} {out['split']}: step {out['step']} of {out['workdir']}, "
           f"{out['num']} scenes, x0_mse per element in {out['space']}",
           "rise of x0_mse when the caption names other ... (0: the words are not read)",
           f"{'level':>6} {'train_share':>11} {'x0_mse':>8} " +
           " ".join(f"{k:>9}" for k in (*CHANGES, "null"))]
  for r in out["rows"]:
    lines.append(f"{r['level']:6.2f} {r['train_share']:11.3f} {r['x0_mse']:8.4f} " +
                 " ".join(f"{r['rise'][k]:9.4f}" for k in (*CHANGES, "null")))
  if out.get("num_pairs"):
    lines.append(f"the {out['num_pairs']} two-object scenes alone (position: the two objects "
                 "trade places, the same words in another order)")
    lines.append(f"{'level':>6} " + " ".join(f"{k:>9}" for k in (*CHANGES, "null")))
    for r in out["rows"]:
      lines.append(f"{r['level']:6.2f} " +
                   " ".join(f"{r['rise_pairs'][k]:9.4f}" for k in (*CHANGES, "null")))
  lines.append("e.g. " + " | ".join(f"{k}: {v}" for k, v in out["example"].items()))
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m gen.diffusion.caption_use",
                               description=__doc__.split("\n\n")[0])
  ap.add_argument("--workdir", required=True, help="a text_denoiser run on captioned scenes")
  ap.add_argument("--num", type=int, default=256, help="scenes")
  ap.add_argument("--split", default="test", help="test, test_held_out, train")
  ap.add_argument("--levels", default=",".join(f"{s:g}" for s in LEVELS),
                  help="noise levels sigma / alpha, comma-separated")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--step", type=int, default=None, help="a checkpoint's step (default: the last)")
  ap.add_argument("--json", action="store_true", help="one JSON line instead of the table")
  args = ap.parse_args(argv)
  try:
    levels = [float(s) for s in args.levels.split(",") if s]
    out = measure(args.workdir, args.num, levels, args.split, args.seed, step=args.step)
  except (ValueError, OSError, sources.DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(out) if args.json else report(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
