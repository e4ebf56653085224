"""Random-access data sources: each record is `{"image": uint8[H, W, C], "label": int32}`.

Sources are plain Python objects with `__len__` and `__getitem__` (grain's
`RandomAccessDataSource` protocol), so one grain pipeline serves all of them:

- `digits`: scikit-learn's bundled 8x8 digits (no files, no network).
- `mnist`, `fashion_mnist`: the original IDX gzip files from `data.dir` or `$GEN_DATA_DIR`.
- `tfds:NAME`: a TensorFlow Datasets entry read without TensorFlow (`tfds.data_source`).

Each is registered by name (`register`); a family may register more image sources when
it is imported. In-memory sources name their classes (`class_names`, lowercase English), which
`gen.core.data.captions` turns into words.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Callable

import numpy as np


class DataError(RuntimeError):
  """A data file is missing, truncated or not what it claims to be."""


class ArraySource:
  """Images and labels held in memory; `class_names[label]` names a class (empty: unnamed)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, name: str,
               class_names: tuple[str, ...] = ()):
    assert images.ndim == 4 and images.dtype == np.uint8, (images.shape, images.dtype)
    assert len(images) == len(labels)
    assert not class_names or len(class_names) == num_classes, (class_names, num_classes)
    self.images, self.labels = images, labels.astype(np.int32)
    self.num_classes, self.name, self.class_names = num_classes, name, tuple(class_names)

  @property
  def shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": self.labels[i]}

  def __repr__(self):
    return f"ArraySource({self.name}, n={len(self)}, shape={self.shape})"


# ------------------------------------------------------------------------------ digits

DIGITS_TEST_SIZE = 297  # 1797 images: 1500 train, 297 test (fixed permutation).
DIGIT_NAMES = tuple("0123456789")


def digits(split: str) -> ArraySource:
  """scikit-learn's 8x8 digits (values 0..16), rescaled to uint8 0..255."""
  from sklearn.datasets import load_digits  # Bundled with scikit-learn; reads no network.

  d = load_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  perm = np.random.default_rng(0).permutation(len(images))
  idx = {"train": perm[DIGITS_TEST_SIZE:], "test": perm[:DIGITS_TEST_SIZE]}
  if split not in idx:
    raise DataError(f"digits has splits 'train' and 'test', not '{split}'")
  return ArraySource(images[idx[split]], d.target[idx[split]], 10, f"digits/{split}", DIGIT_NAMES)


# --------------------------------------------------------------------------------- IDX

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
_IDX_SIZES = {"train": 60000, "test": 10000}
# Fashion-MNIST's classes as its paper names them ("T-shirt/top" ... "Ankle boot"), lowercase.
CLASS_NAMES = {"mnist": DIGIT_NAMES,
               "fashion_mnist": ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal",
                                 "shirt", "sneaker", "bag", "ankle boot")}


def _read_gz(path: str) -> bytes:
  if not os.path.isfile(path):
    raise DataError(f"missing data file {path}")
  try:
    with gzip.open(path, "rb") as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"corrupt data file {path}: expected a gzip-compressed IDX file ({e})") from e


def read_idx(path: str, expect_dims: int) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images)."""
  raw = _read_gz(path)
  if len(raw) < 4 + 4 * expect_dims:
    raise DataError(f"corrupt data file {path}: {len(raw)} bytes is too short for an IDX header")
  magic = struct.unpack(">I", raw[:4])[0]
  want = 0x0800 + expect_dims
  if magic != want:
    raise DataError(
        f"corrupt data file {path}: IDX magic {magic:#010x}, expected {want:#010x} "
        f"(unsigned bytes, {expect_dims} dims)")
  dims = struct.unpack(">" + "I" * expect_dims, raw[4:4 + 4 * expect_dims])
  offset = 4 + 4 * expect_dims
  size = int(np.prod(dims))
  if len(raw) - offset != size:
    raise DataError(
        f"corrupt data file {path}: header says {dims} = {size} bytes of data, "
        f"file has {len(raw) - offset}")
  return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def resolve_base(name: str, data_dir: str, what: str) -> str:
  """The data folder: `data.dir`, else `$GEN_DATA_DIR`; a clear error when neither is set."""
  base = data_dir or os.environ.get("GEN_DATA_DIR", "")
  if not base:
    raise DataError(
        f"dataset '{name}' reads files from a folder: set --config.data.dir=DIR or the "
        f"environment variable GEN_DATA_DIR (a folder holding {what})")
  return base


def resolve_dir(name: str, data_dir: str = "") -> str:
  """Finds the folder holding `name`'s IDX files: `data.dir`, else `$GEN_DATA_DIR`.

  Either may point at the dataset's own folder or at a parent holding `mnist/` or
  `fashion-mnist/`.
  """
  base = resolve_base(name, data_dir,
                      f"{_IDX_FILES['train'][0]}, or a parent of '{_IDX_FOLDERS[name]}/'")
  sub = os.path.join(base, _IDX_FOLDERS[name])
  if os.path.isfile(os.path.join(sub, _IDX_FILES["train"][0])):
    return sub
  return base


def idx_dataset(name: str, split: str, data_dir: str = "") -> ArraySource:
  if split not in _IDX_FILES:
    raise DataError(f"{name} has splits 'train' and 'test', not '{split}'")
  folder = resolve_dir(name, data_dir)
  img_file, lbl_file = (os.path.join(folder, f) for f in _IDX_FILES[split])
  images = read_idx(img_file, 3)
  labels = read_idx(lbl_file, 1)
  if len(images) != len(labels):
    raise DataError(f"{img_file} has {len(images)} images but {lbl_file} has {len(labels)} labels")
  if len(images) != _IDX_SIZES[split]:
    raise DataError(f"{img_file}: expected {_IDX_SIZES[split]} images, found {len(images)}")
  return ArraySource(images[..., None], labels, 10, f"{name}/{split}", CLASS_NAMES[name])


# -------------------------------------------------------------------------------- TFDS


class TfdsSource:
  """A TFDS entry through `tfds.data_source` (array_record; no TensorFlow needed)."""

  def __init__(self, name: str, split: str, data_dir: str = "",
               image_key: str = "image", label_key: str = "label"):
    import tensorflow_datasets as tfds  # Imported lazily: it is slow and optional.

    self.name = f"tfds:{name}/{split}"
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir or None,
                                      download=False)
    except Exception as e:
      raise DataError(
          f"could not open TFDS dataset '{name}' split '{split}' (data_dir="
          f"{data_dir or 'default'}): {type(e).__name__}: {e}. Prepare it first with "
          f"`tfds build {name}` on a machine with network, or point data.dir at it.") from e
    self._image_key, self._label_key = image_key, label_key
    features = self._source.dataset_info.features
    self.num_classes = (features[label_key].num_classes
                        if label_key in features else 0)
    self.shape = tuple(features[image_key].shape)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i):
    rec = self._source[i]
    image = np.asarray(rec[self._image_key], np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    label = np.int32(rec[self._label_key]) if self._label_key in rec else np.int32(0)
    return {"image": image, "label": label}


SOURCES: dict[str, Callable[[str, str, str], object]] = {}
DEFAULT = "digits"  # Bundled with scikit-learn: a fresh machine trains without any files.


def register(name: str, loader: Callable[[str, str, str], object]) -> None:
  """Registers `loader(name, split, data_dir) -> source` for `name`, or for every
  `name...` when `name` ends with ':' (like `tfds:`)."""
  SOURCES[name] = loader


register("digits", lambda name, split, data_dir: digits(split))
register("mnist", idx_dataset)
register("fashion_mnist", idx_dataset)
register("tfds:", lambda name, split, data_dir: TfdsSource(name[len("tfds:"):], split, data_dir))


def load(name: str, split: str, data_dir: str = ""):
  """Returns the source called `name` for `split`."""
  loader = SOURCES.get(name) or SOURCES.get(name.split(":", 1)[0] + ":" if ":" in name else "")
  if loader is None:
    known = ", ".join(k + "NAME" if k.endswith(":") else k for k in SOURCES)
    raise DataError(f"unknown data source '{name}': expected one of {known}")
  return loader(name, split, data_dir)
