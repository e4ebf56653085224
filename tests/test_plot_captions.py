"""`docs/plot_captions.py`: the trade-off plot against guidance and the learning curve against
training steps, from `gen eval --metric=captions` records (Pillow only, no jax)."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

_spec = importlib.util.spec_from_file_location(
    "plot_captions", os.path.join(os.path.dirname(__file__), "..", "docs", "plot_captions.py"))
plot_captions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_captions)


def _record(step, scale=1.0):
  rows = [{"split": split, "guidance": g, "faithful": scale * f * 0.1 * g, "colour": 0.5,
           "object_identity": scale * f * 0.05 * g, "fd": 100.0 - 10 * f * g}
          for split, f in (("test", 1.0), ("test_held_out", 0.3)) for g in (0.0, 2.0, 4.0)]
  return {"step": step, "results": rows}


def _colour_pixels(path, colour):
  return int(np.all(np.asarray(Image.open(path)) == colour, axis=-1).sum())


def test_plots_against_guidance_and_steps(tmp_path, capsys):
  paths = []
  for step in (1000, 2000, 3000):
    path = tmp_path / f"step{step}" / "captions.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_record(step, step / 3000)))
    paths.append(str(path))
  out = tmp_path / "tradeoff.png"
  plot_captions.main([paths[-1], f"--out={out}"])
  w, h = Image.open(out).size  # One legend line per split of the one record.
  assert (w, h) == (2 * plot_captions.W, plot_captions.H + 18 * 2 + 8)
  curve = tmp_path / "curve.png"
  plot_captions.main([*paths, "--against=step", "--guidance=2,4", f"--out={curve}"])
  assert capsys.readouterr().out.split() == [str(out), str(curve)]
  assert Image.open(curve).size == (w, plot_captions.H + 18 * 4 + 8)  # 2 splits x 2 scales.
  for colour in plot_captions.PALETTE[:4]:
    assert _colour_pixels(curve, colour) > 100, colour
  assert _colour_pixels(curve, plot_captions.PALETTE[4]) == 0  # Guidance 0 left out.
  for args in (["--guidance=high"], ["--guidance=7"], ["--against=loss"]):
    with pytest.raises(SystemExit) as e:
      plot_captions.main([*paths, "--against=step", f"--out={curve}", *args])
    assert e.value.code == 2
