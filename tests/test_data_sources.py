"""Tests for the npz and TFDS data sources (vaelab.data.npz, vaelab.data.tfds_source). The
TFDS tests are skipped where tensorflow_datasets is missing; the others run everywhere."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from conftest import ROOT
from vaelab.data import tfds_source
from vaelab.data.npz import load_npz
from vaelab.data.tfds_source import load_tfds
from vaelab.errors import DataError

try:
  import tensorflow_datasets as tfds
except ImportError:
  tfds = None
needs_tfds = pytest.mark.skipif(tfds is None, reason="tensorflow_datasets is not installed")

# This project's machines keep a 5,000-image MNIST npz beside the checkout, where the
# benchmarks find it (experiments/benchmark_loop.py).
MNIST_5K = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist_5k.npz")


def _save(tmp_path, name="split.npz", **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return str(path)


def _uint8_images(n=6, shape=(5, 4, 1), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


# ----------------------------------------------------------------- npz round trips


def test_npz_uint8_round_trip_with_labels_and_factors(tmp_path):
  image = _uint8_images(n=7, shape=(5, 4, 3))
  label = np.array([0, 3, 1, 2, 3, 0, 1], np.int64)
  factors = np.array([[0, 4], [1, 0], [2, 1], [0, 2], [1, 3], [2, 4], [0, 0]], np.int16)
  src = load_npz(_save(tmp_path, image=image, label=label, factors=factors), "eval")

  assert len(src) == 7
  assert src.name == "npz/eval"
  assert src.info.image_shape == (5, 4, 3)
  assert src.info.has_label and src.info.num_classes == 4
  assert src.info.factor_sizes == (3, 5)
  # uint8 stays uint8 in memory (4x less host memory than float32).
  assert src._arrays["image"].dtype == np.uint8  # pylint: disable=protected-access

  idx = np.array([6, 0, 3])
  batch = src.get(idx)
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (3, 5, 4, 3)
  np.testing.assert_array_equal(batch["image"], image[idx].astype(np.float32) / 255.0)
  assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], label[idx])
  assert batch["factors"].dtype == np.int32 and batch["factors"].shape == (3, 2)
  np.testing.assert_array_equal(batch["factors"], factors[idx])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npz_float_round_trip_without_channel_axis(tmp_path, dtype):
  image = np.random.default_rng(1).random((5, 6, 7)).astype(dtype)
  image[0, 0, 0], image[1, 0, 0] = 0.0, 1.0  # both ends of [0, 1] are allowed
  src = load_npz(_save(tmp_path, image=image))

  assert src.info.image_shape == (6, 7, 1)  # channel axis added
  assert not src.info.has_label and src.info.num_classes is None
  assert src.info.factor_sizes is None
  batch = src.get(np.arange(5))
  assert set(batch) == {"image"}
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (5, 6, 7, 1)
  np.testing.assert_allclose(batch["image"][..., 0], image, rtol=1e-7)


def test_npz_uint8_without_channel_axis_and_uint8_labels(tmp_path):
  image = _uint8_images(n=4, shape=(3, 3))
  label = np.array([9, 0, 2, 9], np.uint8)
  src = load_npz(_save(tmp_path, image=image, label=label))
  assert src.info.image_shape == (3, 3, 1)
  assert src.info.num_classes == 10
  batch = src.get(np.array([3, 1]))
  np.testing.assert_array_equal(batch["image"][..., 0] * 255.0, image[[3, 1]])
  np.testing.assert_array_equal(batch["label"], [9, 0])


def test_npz_accepts_pathlike(tmp_path):
  np.savez(tmp_path / "p.npz", image=_uint8_images())
  assert len(load_npz(tmp_path / "p.npz")) == 6


def test_npz_real_mnist_5k():
  if not os.path.exists(MNIST_5K):
    pytest.skip(f"{MNIST_5K} not present")
  src = load_npz(MNIST_5K)
  assert len(src) == 5000
  assert src.info.image_shape == (28, 28, 1)
  assert src.info.num_classes == 10
  batch = src.get(np.arange(0, 5000, 50))
  assert batch["image"].min() >= 0.0 and batch["image"].max() == 1.0


def test_npz_float_split_of_mnist_size_loads_as_written(tmp_path):
  image = np.random.default_rng(0).random((5000, 28, 28, 1), dtype=np.float32)
  path = _save(tmp_path, image=image, label=np.arange(5000) % 10)
  src = load_npz(path)
  assert len(src) == 5000 and src.info.num_classes == 10
  np.testing.assert_array_equal(src.get(np.arange(0, 5000, 7))["image"], image[::7])


# ------------------------------------------------------------------- npz bad input


def _assert_data_error(path, field, *fragments):
  with pytest.raises(DataError) as excinfo:
    load_npz(path)
  msg = str(excinfo.value)
  assert os.path.basename(path) in msg, msg
  if field is not None:
    assert repr(field) in msg, msg
  for fragment in fragments:
    assert fragment in msg, msg
  return msg


def test_npz_missing_file(tmp_path):
  _assert_data_error(str(tmp_path / "nope.npz"), None, "does not exist")


def test_npz_directory_is_not_a_file(tmp_path):
  (tmp_path / "dir.npz").mkdir()
  _assert_data_error(str(tmp_path / "dir.npz"), None, "directory")


def test_npz_not_an_npz(tmp_path):
  path = tmp_path / "text.npz"
  path.write_text("this is not a zip archive\n")
  _assert_data_error(str(path), None, "not a .npz (zip) archive")


def test_npz_truncated_file(tmp_path):
  good = _save(tmp_path, "good.npz", image=_uint8_images(n=50))
  data = open(good, "rb").read()
  path = tmp_path / "truncated.npz"
  path.write_bytes(data[: len(data) // 2])
  _assert_data_error(str(path), None)


def test_npz_single_npy_array(tmp_path):
  path = tmp_path / "single.npz"
  with open(path, "wb") as f:
    np.save(f, _uint8_images())
  _assert_data_error(str(path), None, ".npy")


def test_npz_missing_image_key_lists_keys(tmp_path):
  path = _save(tmp_path, images=_uint8_images(), labels=np.zeros(6, np.int32))
  msg = _assert_data_error(path, "image", "missing")
  assert "images" in msg and "labels" in msg


@pytest.mark.parametrize("shape", [(6,), (6, 28 * 28), (2, 3, 4, 5, 1)])
def test_npz_image_wrong_rank(tmp_path, shape):
  path = _save(tmp_path, image=np.zeros(shape, np.uint8))
  _assert_data_error(path, "image", str(shape), "(N, H, W, C)")


def test_npz_image_channels_first(tmp_path):
  path = _save(tmp_path, image=np.zeros((4, 3, 32, 32), np.uint8))
  _assert_data_error(path, "image", "channels-first")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.bool_, np.complex64])
def test_npz_image_wrong_dtype(tmp_path, dtype):
  path = _save(tmp_path, image=np.zeros((3, 4, 4, 1), dtype))
  _assert_data_error(path, "image", np.dtype(dtype).name, "uint8")


def test_npz_image_object_dtype(tmp_path):
  image = np.empty((2,), object)
  image[0], image[1] = np.zeros((4, 4)), np.zeros((5, 5))
  path = str(tmp_path / "ragged.npz")
  np.savez(path, image=image)  # np.savez pickles object arrays
  _assert_data_error(path, "image", "object")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_float_image_not_finite(tmp_path, bad):
  image = np.full((4, 3, 3, 1), 0.5, np.float32)
  image[2, 1, 1, 0] = bad
  path = _save(tmp_path, image=image)
  _assert_data_error(path, "image", "NaN or Inf", "index 2")


def test_npz_float_image_out_of_range_suggests_dividing_by_255(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (4, 3, 3)).astype(np.float32)
  image[0, 0, 0], image[1, 0, 0] = 0.0, 255.0
  path = _save(tmp_path, image=image)
  _assert_data_error(path, "image", "[0, 1]", "min 0", "max 255", "divide the image by 255")


def test_npz_float_image_negative(tmp_path):
  image = np.full((4, 3, 3, 1), 0.5, np.float64)
  image[3, 0, 0, 0] = -0.25
  path = _save(tmp_path, image=image)
  msg = _assert_data_error(path, "image", "[0, 1]", "min -0.25", "max 0.5")
  assert "255" not in msg


@pytest.mark.parametrize("image", [np.zeros((0, 28, 28, 1), np.uint8),
                                   np.zeros((0, 28, 28), np.float32)])
def test_npz_empty(tmp_path, image):
  path = _save(tmp_path, image=image)
  _assert_data_error(path, "image", "N=0")


def test_npz_label_wrong_length(tmp_path):
  path = _save(tmp_path, image=_uint8_images(n=6), label=np.zeros(5, np.int32))
  _assert_data_error(path, "label", "N=6", "got 5")


def test_npz_label_wrong_rank(tmp_path):
  path = _save(tmp_path, image=_uint8_images(n=6), label=np.zeros((6, 1), np.int32))
  _assert_data_error(path, "label", "(N,)", "(6, 1)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_npz_label_non_integer(tmp_path, dtype):
  path = _save(tmp_path, image=_uint8_images(n=6), label=np.zeros(6, dtype))
  _assert_data_error(path, "label", "integer", np.dtype(dtype).name)


def test_npz_label_negative(tmp_path):
  label = np.array([0, 1, 2, -1, 0, 1])
  path = _save(tmp_path, image=_uint8_images(n=6), label=label)
  _assert_data_error(path, "label", ">= 0", "min -1", "index 3")


def test_npz_label_too_large_for_int32(tmp_path):
  label = np.array([0, 1, 2, 2**40, 0, 1], np.int64)
  path = _save(tmp_path, image=_uint8_images(n=6), label=label)
  _assert_data_error(path, "label", "int32")


@pytest.mark.parametrize("factors,fragment", [
    (np.zeros(6, np.int32), "(N, F)"),
    (np.zeros((6, 2, 1), np.int32), "(N, F)"),
    (np.zeros((5, 2), np.int32), "N=6"),
    (np.zeros((6, 2), np.float32), "integer"),
    (np.zeros((6, 0), np.int32), "at least one"),
    (np.array([[0, 1]] * 5 + [[0, -3]], np.int32), ">= 0"),
])
def test_npz_bad_factors(tmp_path, factors, fragment):
  path = _save(tmp_path, image=_uint8_images(n=6), factors=factors)
  _assert_data_error(path, "factors", fragment)


# ------------------------------------------------------------------------------ TFDS

N_MOCK = 40


def _tfds_records(name, n):
  """The mock's own records, read one by one through tfds (the reference)."""
  ds = tfds.data_source(name, split="train")
  return [ds[i] for i in range(n)]


@pytest.fixture(scope="module")
def mock_mnist():
  with tfds.testing.mock_data(num_examples=N_MOCK):
    return load_tfds("mnist", "train"), _tfds_records("mnist", N_MOCK)


@pytest.fixture(scope="module")
def mock_cifar10():
  with tfds.testing.mock_data(num_examples=N_MOCK):
    return load_tfds("cifar10", "test"), _tfds_records("cifar10", N_MOCK)


@pytest.fixture(scope="module")
def mock_dsprites():
  # mock_data's `max_value` is ignored by the data_source mock (tfds 4.9.10), so
  # the mock pixels are 0..254, not 0/1 as in the real TFDS dsprites; the 0/1 ->
  # 0/255 mapping is tested on a real prepared dsprites below.
  with tfds.testing.mock_data(num_examples=N_MOCK):
    return load_tfds("dsprites", "train"), _tfds_records("dsprites", N_MOCK)


@pytest.mark.parametrize("fixture,shape", [("mock_mnist", (28, 28, 1)),
                                           ("mock_cifar10", (32, 32, 3))])
@needs_tfds
def test_tfds_mock_classification(request, fixture, shape):
  src, records = request.getfixturevalue(fixture)
  assert len(src) == N_MOCK
  assert src.info.image_shape == shape
  assert src.info.has_label and src.info.num_classes == 10
  assert src.info.factor_sizes is None
  # Stored as uint8 and equal to what tfds returns record by record.
  stored = src._arrays["image"]  # pylint: disable=protected-access
  assert stored.dtype == np.uint8 and stored.shape == (N_MOCK,) + shape
  np.testing.assert_array_equal(stored, np.stack([r["image"] for r in records]))

  batch = src.get(np.arange(N_MOCK))
  assert set(batch) == {"image", "label"}
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (N_MOCK,) + shape
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["image"].max() > 0.5  # 0..255, not 0..1, before the division
  assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], [r["label"] for r in records])
  assert src.name.startswith(fixture.removeprefix("mock_") + "/")


@needs_tfds
def test_tfds_mock_dsprites_factors_and_binary_images(mock_dsprites):
  src, records = mock_dsprites
  assert len(src) == N_MOCK
  assert src.info.image_shape == (64, 64, 1)
  assert not src.info.has_label
  # The layout of procedural_dsprites / the original npz: a constant color factor first.
  assert src.info.factor_sizes == (1, 3, 6, 40, 32, 32)
  assert src.info.factor_names == ("color", "shape", "scale", "orientation", "pos_x", "pos_y")

  batch = src.get(np.arange(N_MOCK))
  assert set(batch) == {"image", "factors"}
  # Pixels that are already 0..255 (the mock's) are not rescaled.
  stored = src._arrays["image"]  # pylint: disable=protected-access
  assert stored.dtype == np.uint8 and stored.max() > 1
  np.testing.assert_array_equal(stored, np.stack([r["image"] for r in records]))
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["factors"].dtype == np.int32 and batch["factors"].shape == (N_MOCK, 6)
  expected = [[0] + [r[k] for k in ("label_shape", "label_scale", "label_orientation",
                              "label_x_position", "label_y_position")] for r in records]
  np.testing.assert_array_equal(batch["factors"], expected)
  assert (batch["factors"] < np.array(src.info.factor_sizes)).all()


@needs_tfds
def test_tfds_mock_shapes3d_factors():
  with tfds.testing.mock_data(num_examples=3):
    src = load_tfds("shapes3d", "train")
  assert src.info.image_shape == (64, 64, 3)
  assert src.info.factor_sizes == (10, 10, 10, 8, 4, 15)
  assert src.info.factor_names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape",
                                   "orientation")
  assert src.get(np.arange(3))["factors"].shape == (3, 6)


@needs_tfds
def test_tfds_unknown_name_lists_supported():
  with pytest.raises(DataError) as excinfo:
    load_tfds("celeba", "train")
  msg = str(excinfo.value)
  for name in ("celeba", "mnist", "fashion_mnist", "cifar10", "dsprites", "shapes3d"):
    assert name in msg, msg


@needs_tfds
def test_tfds_not_prepared_fails_fast_without_downloading(tmp_path, monkeypatch):
  calls = []

  def no_download(*args, **kwargs):
    calls.append(args)
    raise RuntimeError("load_tfds must never download or prepare")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
  with pytest.raises(DataError) as excinfo:
    load_tfds("mnist", "train", data_dir=str(tmp_path))
  assert not calls, "load_tfds tried to download and prepare"
  msg = str(excinfo.value)
  for fragment in ("'mnist'", "'train'", "not prepared", "tfds build mnist",
                   "--config.data.name=npz", "--config.data.train_path=", str(tmp_path)):
    assert fragment in msg, msg


# A real prepared data set (ArrayRecord files on disk, no mock), written without
# TensorFlow from PNG bytes, which TFDS stores as they are (tfds_source.prepare).


def _png(array):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
  return buf.getvalue()


def _prepare_real(name, data_dir, make_images, num_examples):
  features = tfds.builder(name).info.features
  images = make_images(num_examples)
  rng = np.random.default_rng(0)
  rows = []
  for i in range(num_examples):
    row = {"image": _png(images[i])}
    for key, feature in features.items():
      if isinstance(feature, tfds.features.ClassLabel):
        row[key] = int(rng.integers(feature.num_classes))
      elif key != "image":
        row[key] = float(rng.random())
    rows.append(row)
  tfds_source.prepare(data_dir, name, {"train": rows})
  return images, rows


@pytest.fixture(scope="module")
def real_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  rng = np.random.default_rng(1)
  mnist = _prepare_real(
      "mnist", data_dir, lambda n: rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
      num_examples=2 * tfds_source.CHUNK + 5)
  dsprites = _prepare_real(
      "dsprites", data_dir, lambda n: rng.integers(0, 2, (n, 64, 64, 1), dtype=np.uint8),
      num_examples=30)
  return data_dir, {"mnist": mnist, "dsprites": dsprites}


@pytest.fixture
def no_single_reads(monkeypatch):
  """Makes per-record reads fail, so a passing load used the batched reads."""
  from tensorflow_datasets.core.data_sources import base  # pylint: disable=g-import-not-at-top

  def fail(self, key):
    raise AssertionError("read record by record on a real data source")
  monkeypatch.setattr(base.BaseDataSource, "__getitem__", fail)


@needs_tfds
def test_tfds_real_mnist_batched_reads(real_data_dir, no_single_reads):
  data_dir, prepared = real_data_dir
  images, rows = prepared["mnist"]
  src = load_tfds("mnist", "train", data_dir=data_dir)
  n = len(images)
  assert len(src) == n and src.info.num_classes == 10
  # TFDS shuffles records when preparing; compare as multisets keyed by the pixels.
  stored = src._arrays["image"]  # pylint: disable=protected-access
  by_pixels = {images[i].tobytes(): rows[i]["label"] for i in range(n)}
  assert sorted(x.tobytes() for x in stored) == sorted(by_pixels)
  labels = src.get(np.arange(n))["label"]
  assert all(by_pixels[stored[i].tobytes()] == labels[i] for i in range(n))


@needs_tfds
def test_tfds_real_split_slice(real_data_dir):
  data_dir, _ = real_data_dir
  src = load_tfds("mnist", "train[:7]", data_dir=data_dir)
  full = load_tfds("mnist", "train", data_dir=data_dir)
  assert len(src) == 7 and src.name == "mnist/train[:7]"
  np.testing.assert_array_equal(src.get(np.arange(7))["image"], full.get(np.arange(7))["image"])


@needs_tfds
def test_tfds_real_dsprites_binary(real_data_dir, no_single_reads):
  data_dir, prepared = real_data_dir
  images, rows = prepared["dsprites"]
  src = load_tfds("dsprites", "train", data_dir=data_dir)
  stored = src._arrays["image"]  # pylint: disable=protected-access
  assert set(np.unique(stored).tolist()) == {0, 255}
  # 0/1 TFDS pixels come out of a batch as exactly 0.0 / 1.0.
  assert set(np.unique(src.get(np.arange(len(src)))["image"]).tolist()) == {0.0, 1.0}
  keys = ("label_shape", "label_scale", "label_orientation", "label_x_position",
          "label_y_position")
  expected = {images[i].tobytes(): [0] + [rows[i][k] for k in keys] for i in range(len(rows))}
  factors = src.get(np.arange(len(src)))["factors"]
  for i in range(len(src)):
    np.testing.assert_array_equal(factors[i], expected[(stored[i] // 255).tobytes()])


@needs_tfds
def test_tfds_real_unknown_split(real_data_dir):
  data_dir, _ = real_data_dir
  with pytest.raises(DataError) as excinfo:
    load_tfds("mnist", "validation", data_dir=data_dir)
  assert "'validation'" in str(excinfo.value) and "'mnist'" in str(excinfo.value)


def test_procedural_dsprites_trains_without_its_held_out_images(monkeypatch):
  from vaelab import config_base
  from vaelab.data import dsprites, make_sources
  # Only the factors matter here: not rendering the 737,280 images saves a minute and 3 GB.
  monkeypatch.setattr(dsprites, "render", lambda f: np.zeros((len(f), 1, 1, 1), np.float32))
  c = config_base.base_config()
  c.data.name, c.data.num_eval = "procedural_dsprites", 300
  train, held = make_sources(c.data)
  assert len(train) + len(held) == dsprites.NUM_IMAGES
  train_idx = dsprites.factors_to_index(train.get(np.arange(len(train)))["factors"])
  held_idx = dsprites.factors_to_index(held.get(np.arange(len(held)))["factors"])
  assert len(np.intersect1d(train_idx, held_idx)) == 0
  assert len(np.unique(np.concatenate([train_idx, held_idx]))) == dsprites.NUM_IMAGES
