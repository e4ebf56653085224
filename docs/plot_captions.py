"""Plots `gen eval --metric=captions` records: faithfulness and Fréchet distance against guidance.

  python docs/plot_captions.py RUN/captions.json [MORE.json ...] --out=docs/images/x.png

Left: the share of faithful images (solid) and of images whose colours are all right (dashed)
per guidance scale; right: the Fréchet distance on the judge's features. One colour per split
and record. Pillow only (no plotting library), so it runs wherever gen does.
"""

from __future__ import annotations

import argparse
import json
import os

from PIL import Image, ImageDraw

W, H, PAD = 360, 240, 44
PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (23, 190, 207)]


def _panel(draw, x0, title, series, ylabel, ymax):
  """Axes at x0 with `series` [(label, colour, dashed, [(x, y)])]; y from 0 to ymax."""
  xs = sorted({x for *_, pts in series for x, _ in pts}) or [0.0, 1.0]
  lo, hi = min(xs), max(max(xs), min(xs) + 1e-9)
  px = lambda x: x0 + PAD + (x - lo) / (hi - lo) * (W - 2 * PAD)  # noqa: E731
  py = lambda y: H - PAD - y / ymax * (H - 2 * PAD)  # noqa: E731
  draw.rectangle([x0 + PAD, PAD, x0 + W - PAD, H - PAD], outline=(0, 0, 0))
  draw.text((x0 + PAD, 8), title, fill=(0, 0, 0))
  draw.text((x0 + W // 2 - 20, H - 16), "guidance", fill=(0, 0, 0))
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


def plot(records: list[tuple[str, dict]], out: str):
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
  top = max([y for *_, pts in faithful for _, y in pts] + [0.05])
  image = Image.new("RGB", (2 * W, H + 18 * len(legend) + 8), (255, 255, 255))
  draw = ImageDraw.Draw(image)
  _panel(draw, 0, "faithful (solid), all colours right (dashed)", faithful, "share",
         min(1.0, top * 1.1))
  _panel(draw, W, "Frechet distance, judge features", fd, "FD",
         max(y for *_, pts in fd for _, y in pts) * 1.1)
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
  args = parser.parse_args(argv)
  records = []
  for path in args.records:
    with open(path) as f:
      records.append((os.path.basename(os.path.dirname(os.path.abspath(path))), json.load(f)))
  print(plot(records, args.out))


if __name__ == "__main__":
  main()
