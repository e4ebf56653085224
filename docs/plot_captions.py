"""Plots `gen eval --metric=captions` records: faithfulness and Fréchet distance against guidance,
or against training steps.

  python docs/plot_captions.py RUN/captions.json [MORE.json ...] --out=docs/images/x.png
  python docs/plot_captions.py A.json B.json C.json --against=step --guidance=2 --out=curve.png

Left: the share of faithful images (solid) and of images whose colours are all right (dashed)
per guidance scale; right: the Fréchet distance on the judge's features. One colour per split
and record. With `--against=step`, the records are one run's checkpoints (`gen eval --step=N`):
faithful (solid) and the share of objects drawn as their caption's identity (dashed) against
each record's step, one colour per split, at the guidance scales of `--guidance` (all by
default). Pillow only (no plotting library), so it runs wherever gen does.
"""

from __future__ import annotations

import argparse
import json
import os

from PIL import Image, ImageDraw

W, H, PAD = 360, 240, 44
PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (23, 190, 207)]


def _panel(draw, x0, title, series, ylabel, ymax, xlabel="guidance"):
  """Axes at x0 with `series` [(label, colour, dashed, [(x, y)])]; y from 0 to ymax."""
  xs = sorted({x for *_, pts in series for x, _ in pts}) or [0.0, 1.0]
  lo, hi = min(xs), max(max(xs), min(xs) + 1e-9)
  px = lambda x: x0 + PAD + (x - lo) / (hi - lo) * (W - 2 * PAD)  # noqa: E731
  py = lambda y: H - PAD - y / ymax * (H - 2 * PAD)  # noqa: E731
  draw.rectangle([x0 + PAD, PAD, x0 + W - PAD, H - PAD], outline=(0, 0, 0))
  draw.text((x0 + PAD, 8), title, fill=(0, 0, 0))
  draw.text((x0 + W // 2 - 20, H - 16), xlabel, fill=(0, 0, 0))
  draw.text((x0 + 2, PAD - 16), ylabel, fill=(0, 0, 0))
  for x in xs:
    draw.text((px(x) - 6, H - PAD + 4), f"{x:g}", fill=(0, 0, 0))
  for k in range(5):
    y = ymax * k / 4
    draw.text((x0 + 4, py(y) - 6), f"{y:.3g}", fill=(90, 90, 90))
  for _label, colour, dashed, pts in series:
    pts = sorted(pts)
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
      if dashed:  # Every other tenth of the segment.
        for t in range(0, 10, 2):
          f, g = t / 10, (t + 1) / 10
          draw.line([px(xa + f * (xb - xa)), py(ya + f * (yb - ya)), px(xa + g * (xb - xa)),
                     py(ya + g * (yb - ya))], fill=colour, width=2)
      else:
        draw.line([px(xa), py(ya), px(xb), py(yb)], fill=colour, width=2)
    for x, y in pts:
      draw.ellipse([px(x) - 3, py(y) - 3, px(x) + 3, py(y) + 3], fill=colour)


def _by_guidance(records):
  faithful, fd, legend = [], [], []
  for name, record in records:
    for split in sorted({r["split"] for r in record["results"]}):
      rows = [r for r in record["results"] if r["split"] == split and r["guidance"] is not None]
      colour = PALETTE[len(legend) % len(PALETTE)]
      label = f"{name}: {split}"
      legend.append((label, colour))
      faithful.append((label, colour, False, [(r["guidance"], r["faithful"]) for r in rows]))
      faithful.append((label, colour, True, [(r["guidance"], r["colour"]) for r in rows]))
      fd.append((label, colour, False, [(r["guidance"], r["fd"]) for r in rows]))
  return faithful, fd, legend


def _by_step(records, guidance):
  """One series per split and guidance scale across the records (one run's checkpoints)."""
  rows = [(record["step"], r) for _, record in records for r in record["results"]
          if r["guidance"] is not None and (guidance is None or r["guidance"] in guidance)]
  faithful, fd, legend = [], [], []
  for split, g in sorted({(r["split"], r["guidance"]) for _, r in rows}):
    pts = [(step, r) for step, r in rows if (r["split"], r["guidance"]) == (split, g)]
    colour = PALETTE[len(legend) % len(PALETTE)]
    label = f"{split}, guidance {g:g}"
    legend.append((label, colour))
    faithful.append((label, colour, False, [(s, r["faithful"]) for s, r in pts]))
    faithful.append((label, colour, True, [(s, r["object_identity"]) for s, r in pts]))
    fd.append((label, colour, False, [(s, r["fd"]) for s, r in pts]))
  return faithful, fd, legend


def plot(records: list[tuple[str, dict]], out: str, against: str = "guidance",
         guidance: tuple[float, ...] | None = None):
  """Writes the PNG `out` of `records` [(name, captions.json record)]; returns `out`."""
  if against == "step":
    faithful, fd, legend = _by_step(records, guidance)
    title = "faithful (solid), objects of the caption's identity (dashed)"
  elif against == "guidance":
    faithful, fd, legend = _by_guidance(records)
    title = "faithful (solid), all colours right (dashed)"
  else:
    raise ValueError(f"--against must be guidance or step, got '{against}'")
  if not legend:
    raise ValueError("no results to plot (none at the --guidance asked for?)")
  top = max([y for *_, pts in faithful for _, y in pts] + [0.05])
  image = Image.new("RGB", (2 * W, H + 18 * len(legend) + 8), (255, 255, 255))
  draw = ImageDraw.Draw(image)
  _panel(draw, 0, title, faithful, "share", min(1.0, top * 1.1), against)
  _panel(draw, W, "Frechet distance, judge features", fd, "FD",
         max(y for *_, pts in fd for _, y in pts) * 1.1, against)
  for i, (label, colour) in enumerate(legend):
    y = H + 6 + 18 * i
    draw.line([PAD, y + 6, PAD + 24, y + 6], fill=colour, width=3)
    draw.text((PAD + 30, y), label, fill=(0, 0, 0))
  image.save(out)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("records", nargs="+", help="captions.json files of gen eval")
  parser.add_argument("--out", required=True, help="the PNG to write")
  parser.add_argument("--against", default="guidance", choices=("guidance", "step"),
                      help="the x axis: guidance scale, or the records' training steps")
  parser.add_argument("--guidance", default="",
                      help="with --against=step: the scales to plot, e.g. 2 or 2,4 (default all)")
  args = parser.parse_args(argv)
  try:
    guidance = tuple(float(g) for g in args.guidance.split(",") if g) or None
  except ValueError:
    parser.error(f"--guidance takes numbers joined by ',', got '{args.guidance}'")
  records = []
  for path in args.records:
    with open(path) as f:
      records.append((os.path.basename(os.path.dirname(os.path.abspath(path))), json.load(f)))
  try:
    print(plot(records, args.out, args.against, guidance))
  except ValueError as e:
    parser.error(str(e))


if __name__ == "__main__":
  main()
