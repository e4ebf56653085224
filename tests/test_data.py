"""Data sources (digits, IDX files, TFDS) and the grain pipeline."""

import gzip
import os
import struct

import numpy as np
import pytest

from gen.core import config as config_lib
from gen.core.data import DataError, load, postprocess, preprocess
from gen.core.data import ImageData as Data
from gen.core.data import sources


def _config(**data):
  c = config_lib.base_config()
  c.family = "vae"
  config_lib.apply_overrides(c, {f"data.{k}": v for k, v in data.items()})
  return c


def _write_idx(folder, images, labels, split="train", magic_images=0x0803, truncate=0):
  os.makedirs(folder, exist_ok=True)
  img_name, lbl_name = sources._IDX_FILES[split]
  n, h, w = images.shape
  raw = struct.pack(">IIII", magic_images, n, h, w) + images.tobytes()
  with gzip.open(os.path.join(folder, img_name), "wb") as f:
    f.write(raw[:len(raw) - truncate])
  with gzip.open(os.path.join(folder, lbl_name), "wb") as f:
    f.write(struct.pack(">II", 0x0801, n) + labels.tobytes())


def test_digits_source():
  train, test = load("digits", "train"), load("digits", "test")
  assert len(train) == 1500 and len(test) == 297
  rec = train[0]
  assert rec["image"].shape == (8, 8, 1) and rec["image"].dtype == np.uint8
  assert rec["image"].max() <= 255 and 0 <= rec["label"] < 10
  # The split is fixed and disjoint.
  tr = {train.images[i].tobytes() + bytes([train.labels[i]]) for i in range(len(train))}
  assert not any(test.images[i].tobytes() + bytes([test.labels[i]]) in tr for i in range(5))
  with pytest.raises(DataError, match="splits"):
    load("digits", "validation")


def test_idx_reader_on_made_files(tmp_path, monkeypatch):
  monkeypatch.setitem(sources._IDX_SIZES, "train", 5)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 5, dtype=np.uint8)
  _write_idx(tmp_path / "mnist", images, labels)
  src = load("mnist", "train", str(tmp_path))  # A parent of mnist/ works ...
  np.testing.assert_array_equal(src.images[..., 0], images)
  np.testing.assert_array_equal(src.labels, labels)
  src = load("mnist", "train", str(tmp_path / "mnist"))  # ... and so does the folder itself.
  assert len(src) == 5
  monkeypatch.setenv("GEN_DATA_DIR", str(tmp_path))
  assert len(load("mnist", "train")) == 5


def test_idx_errors_name_the_path(tmp_path, monkeypatch):
  monkeypatch.setitem(sources._IDX_SIZES, "train", 3)
  monkeypatch.delenv("GEN_DATA_DIR", raising=False)
  with pytest.raises(DataError, match="GEN_DATA_DIR"):
    load("mnist", "train")
  with pytest.raises(DataError, match=r"missing data file .*train-images-idx3-ubyte\.gz"):
    load("mnist", "train", str(tmp_path))
  images, labels = np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8)
  _write_idx(tmp_path / "a", images, labels, magic_images=0x0801)
  with pytest.raises(DataError, match=r"a/train-images.*IDX magic 0x00000801, expected 0x00000803"):
    load("mnist", "train", str(tmp_path / "a"))
  _write_idx(tmp_path / "b", images, labels, truncate=10)
  with pytest.raises(DataError, match=r"b/train-images.*header says"):
    load("mnist", "train", str(tmp_path / "b"))
  os.makedirs(tmp_path / "c")
  (tmp_path / "c" / "train-images-idx3-ubyte.gz").write_bytes(b"not a gzip file at all")
  with pytest.raises(DataError, match=r"corrupt data file .*c/train-images.*gzip"):
    load("mnist", "train", str(tmp_path / "c"))


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_shared_idx_datasets(shared_data, name, folder):
  train = load(name, "train", shared_data)
  test = load(name, "test", os.path.join(shared_data, folder))
  assert len(train) == 60000 and len(test) == 10000
  assert train.shape == (28, 28, 1)
  counts = np.bincount(test.labels, minlength=10)
  if name == "mnist":
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
  else:
    assert counts.tolist() == [1000] * 10


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    data = Data(_config(name="tfds:mnist", batch_size=8, preprocess="scale"))
    assert data.shape == (28, 28, 1) and data.num_classes == 10
    batch = next(data.train_iterator())
    assert batch["image"].shape == (8, 28, 28, 1) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].dtype == np.int32
  with pytest.raises(DataError, match="could not open TFDS dataset 'not_a_dataset_xyz'"):
    load("tfds:not_a_dataset_xyz", "train")


def test_unknown_source():
  with pytest.raises(DataError, match="unknown data source 'cifar'"):
    load("cifar", "train")


def test_preprocess_ranges_and_determinism():
  x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(4, 0)
  s = preprocess(x, "scale", None)
  assert s.min() == -1.0 and s.max() == 1.0
  d = preprocess(x, "dequantize", np.random.default_rng(0))
  assert -1.0 <= d.min() and d.max() < 1.0
  assert np.all(np.floor((d + 1.0) * 128.0) == x)  # Noise stays inside each pixel's bin.
  b = preprocess(x, "binarize", np.random.default_rng(0))
  assert set(np.unique(b)) <= {0.0, 1.0}
  assert b[..., 0, 0, 0].sum() == 0 and b[..., -1, -1, 0].sum() == 4  # p=0 and p=1 pixels.
  np.testing.assert_array_equal(b, preprocess(x, "binarize", np.random.default_rng(0)))
  np.testing.assert_allclose(postprocess(s, "scale"), x / 255.0, atol=1e-6)
  with pytest.raises(ValueError, match="data.preprocess"):
    preprocess(x, "normalize", None)


def test_iterator_state_resumes_exactly():
  data = Data(_config(batch_size=32, preprocess="binarize"))
  it = data.train_iterator()
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(60)]  # Crosses an epoch boundary (1500 / 32 = 46).
  fresh = Data(_config(batch_size=32, preprocess="binarize")).train_iterator()
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_epochs_are_reshuffled_and_complete():
  data = Data(_config(batch_size=100, preprocess="unit"))
  it = data.train_iterator()
  epoch1 = np.concatenate([next(it)["label"] for _ in range(15)])
  epoch2 = np.concatenate([next(it)["label"] for _ in range(15)])
  np.testing.assert_array_equal(np.bincount(epoch1), np.bincount(data.train_source.labels))
  assert not np.array_equal(epoch1, epoch2)


def test_process_shards_are_disjoint_and_cover():
  c = _config(batch_size=10, preprocess="unit")
  seen = []
  for p in range(2):
    ds = Data(c, process_index=p, process_count=2)._process_shard(load("digits", "train"))
    seen.append([ds[i]["image"].tobytes() for i in range(len(ds))])
    assert Data(c, process_index=p, process_count=2).batch_size == 5
  assert len(seen[0]) + len(seen[1]) == 1500
  with pytest.raises(ValueError, match="divide evenly"):
    Data(_config(batch_size=11), process_index=0, process_count=2)


def test_eval_batches_pad_and_mask():
  data = Data(_config(eval_batch_size=100, preprocess="binarize"))
  batches = list(data.eval_batches())
  assert len(batches) == 3 and all(b["image"].shape == (100, 8, 8, 1) for b in batches)
  assert sum(b["mask"].sum() for b in batches) == 297
  assert batches[-1]["mask"][97:].sum() == 0 and batches[-1]["image"][97:].sum() == 0
  again = list(data.eval_batches())  # Fixed binarization noise: every eval sees the same bits.
  np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])
  assert len(list(data.eval_batches(max_batches=2))) == 2


def test_processes_split_each_global_batch_into_the_same_rows():
  cfg = _config(batch_size=12, preprocess="binarize")
  whole = iter(Data(cfg, process_index=0, process_count=1).train_iterator())
  parts = [iter(Data(cfg, process_index=i, process_count=3).train_iterator()) for i in range(3)]
  for _ in range(4):  # Same rows and the same binarization noise, in process order.
    batch = next(whole)
    shards = [next(p) for p in parts]
    assert all(len(s["image"]) == 4 for s in shards)
    for k in batch:
      np.testing.assert_array_equal(batch[k], np.concatenate([s[k] for s in shards]))
  with pytest.raises(ValueError, match="batch_size=10 must divide evenly over 3 processes"):
    Data(_config(batch_size=10), process_index=0, process_count=3)
