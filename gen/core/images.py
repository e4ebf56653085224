"""Image grids and PNG files."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def grid(images, ncol: int | None = None, pad: int = 1, min_cell: int = 32) -> np.ndarray:
  """Tiles `images` (float [N, H, W, C] in [0, 1]) into one uint8 picture.

  `[rows, cols, H, W, C]` images are a grid laid out already: one row each, `cols` wide.

  Small images are enlarged (nearest neighbour) so each cell is at least `min_cell`
  pixels wide: an 8x8 digit is unreadable at its own size.
  """
  x = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  if x.ndim == 5:
    ncol = ncol or x.shape[1]
    x = x.reshape((-1,) + x.shape[2:])
  if x.ndim == 3:
    x = x[..., None]
  n, h, w, c = x.shape
  if c == 1:
    x = np.repeat(x, 3, axis=-1)
  scale = max(1, -(-min_cell // max(h, w)))
  if scale > 1:
    x = x.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
  ncol = ncol or int(np.ceil(np.sqrt(n)))
  nrow = -(-n // ncol)
  out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 0.5, np.float32)
  for i in range(n):
    r, col = divmod(i, ncol)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    out[top:top + h, left:left + w] = x[i]
  return (out * 255 + 0.5).astype(np.uint8)


def save_png(path: str, picture: np.ndarray) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(picture).save(path)
  return path


def save_grid(path: str, images, ncol: int | None = None) -> str:
  return save_png(path, grid(images, ncol))
