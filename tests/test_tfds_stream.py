"""The streamed TFDS source (ImageNet): decoding, resizing and cropping against Pillow done
by hand, crops keyed by (seed, step, row) whatever the process count, the errors, and a
short run of the ImageNet config's step on a prepared split this test writes."""
import io

import numpy as np
import pytest

from vaelab import config_base, validation
from vaelab.data import pipeline, tfds_source, tfds_stream
from vaelab.errors import ConfigError, DataError

tfds = pytest.importorskip("tensorflow_datasets")
Image = pytest.importorskip("PIL.Image")

# (height, width) of the prepared images: landscape, portrait, square, and smaller than the
# crop (upscaled).
SHAPES = [(20, 30), (36, 18), (16, 16), (6, 9), (24, 40), (30, 22)]
N = 12


def _jpeg(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """imagenet2012 prepared as ArrayRecord in a temporary data_dir, from JPEGs of several
  shapes (TFDS stores the bytes as they are: no TensorFlow needed)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  rng = np.random.default_rng(0)
  rows = []
  for i in range(N):
    h, w = SHAPES[i % len(SHAPES)]
    # Smooth images, so that JPEG's loss is small and crops are told apart by position.
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([yy * 255 // h, xx * 255 // w, np.full((h, w), 20 * i)], -1)
    rows.append({"image": _jpeg(base.astype(np.uint8)), "label": int(rng.integers(1000)),
                 "file_name": f"img{i:02d}.JPEG"})
  tfds_source.prepare(data_dir, "imagenet2012", {"train": rows, "validation": rows})
  return data_dir, {r["file_name"]: r for r in rows}


def _by_hand(encoded, size, top=None, left=None, flip=False):
  """Shorter side to `size` with Pillow's bicubic, then a crop (the centre by default)."""
  im = Image.open(io.BytesIO(encoded)).convert("RGB")
  w, h = im.size
  nw, nh = max(size, int(w * size / min(w, h))), max(size, int(h * size / min(w, h)))
  a = np.asarray(im.resize((nw, nh), Image.BICUBIC))
  top = (nh - size) // 2 if top is None else top
  left = (nw - size) // 2 if left is None else left
  a = a[top:top + size, left:left + size]
  return a[:, ::-1] if flip else a


def _records_order(data_dir, split="train"):
  """The file names in the order the prepared split stores them (TFDS shuffles)."""
  ds = tfds.data_source("imagenet2012", split=split, data_dir=data_dir,
                        decoders={"image": tfds.decode.SkipDecoding()})
  return [ds[i]["file_name"].decode() for i in range(len(ds))]


def test_square_against_pillow_by_hand():
  rng = np.random.default_rng(1)
  a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  enc = _jpeg(a)
  np.testing.assert_array_equal(tfds_stream.square(enc, 10, None), _by_hand(enc, 10))
  # Resized to 10 x 15: the free range is 6 columns; fractions pick its first and last.
  np.testing.assert_array_equal(tfds_stream.square(enc, 10, (0.0, 0.0, 0.9)),
                                _by_hand(enc, 10, 0, 0))
  np.testing.assert_array_equal(tfds_stream.square(enc, 10, (0.5, 0.999, 0.9)),
                                _by_hand(enc, 10, 0, 5))
  np.testing.assert_array_equal(tfds_stream.square(enc, 10, (0.0, 0.4, 0.1)),
                                _by_hand(enc, 10, 0, 2, flip=True))
  # Smaller than the crop: upscaled so that the shorter side is the crop's.
  small = _jpeg(a[:5, :8])
  assert tfds_stream.square(small, 10, None).shape == (10, 10, 3)
  with pytest.raises(DataError, match="record 7: cannot decode"):
    tfds_stream.square(b"not an image", 10, None, "record 7")


def test_eval_split_is_centre_crops_with_labels(prepared):
  data_dir, rows = prepared
  src = tfds_stream.StreamingTfdsSource("imagenet2012", "validation", 8, crop="center",
                                        data_dir=data_dir, threads=2)
  assert len(src) == N and not src.keyed
  assert src.info.image_shape == (8, 8, 3) and src.info.num_classes == 1000
  order = _records_order(data_dir, "validation")
  idx = np.array([3, 0, 11, 3])
  out = src.get(idx)
  assert out["image"].dtype == np.float32 and out["image"].shape == (4, 8, 8, 3)
  assert out["label"].dtype == np.int32
  for k, i in enumerate(idx):
    row = rows[order[i]]
    assert out["label"][k] == row["label"]
    np.testing.assert_array_equal(np.round(out["image"][k] * 255).astype(np.uint8),
                                  _by_hand(row["image"], 8))
  with pytest.raises(IndexError):
    src.get(np.array([N]))


def test_random_crops_are_keyed_and_process_count_free(prepared):
  data_dir, _ = prepared
  src = tfds_stream.StreamingTfdsSource("imagenet2012", "train", 8, crop="random", flip=True,
                                        data_dir=data_dir)
  assert src.keyed
  whole = pipeline.Batcher(src, 8, seed=5)
  halves = [pipeline.Batcher(src, 8, seed=5, process_index=p, process_count=2)
            for p in range(2)]
  for step in (0, 1, 3):
    b = whole.batch(step)
    np.testing.assert_array_equal(
        b["image"], np.concatenate([h.batch(step)["image"] for h in halves]))
    np.testing.assert_array_equal(b["image"], whole.batch(step)["image"])  # a pure function
  # Another step's keys crop the same records elsewhere.
  idx, rows = np.arange(N), np.arange(N)
  at = lambda step: src.get(idx, keys=pipeline._row_keys(5, step, rows))  # pylint: disable=protected-access
  assert not np.array_equal(at(0)["image"], at(1)["image"]) and np.array_equal(at(1)["image"], at(1)["image"])
  # Without keys (pictures, probes) a training source takes the centre.
  eval_like = tfds_stream.StreamingTfdsSource("imagenet2012", "train", 8, crop="center",
                                              data_dir=data_dir)
  np.testing.assert_array_equal(src.get(np.arange(N))["image"],
                                eval_like.get(np.arange(N))["image"])


def test_unprepared_set_fails_naming_the_manual_step(tmp_path):
  with pytest.raises(DataError, match="manual_dir"):
    tfds_stream.StreamingTfdsSource("imagenet2012", "train", 8, data_dir=str(tmp_path))


def _imagenet_config(**overrides):
  from vaelab import api
  return api._config("configs/vqgan_imagenet.py:runlocal", overrides)  # pylint: disable=protected-access


@pytest.mark.parametrize("key,value,fragment", [
    ("data.image_size", 0, "data.image_size=0"),
    ("data.train_crop", "inception", "data.train_crop='inception'"),
    ("data.decode_threads", -1, "data.decode_threads=-1"),
])
def test_bad_keys_are_refused_by_name(key, value, fragment):
  with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
    validation.validate(_imagenet_config(**{key: value}))


def test_missing_keys_are_named():
  c = config_base.base_config()
  c.data.name = "imagenet2012"
  with pytest.raises(ConfigError, match="needs data.image_size"):
    validation.validate(c)


# Slow (a VQGAN compile): the contract's vqgan_imagenet case also trains on the streamed source.
@pytest.mark.slow
def test_the_imagenet_config_trains_and_evaluates_on_a_prepared_split(prepared, tmp_path):
  """The config's own source and step, shrunk: a few steps, then the final evaluation with
  its PSNR and SSIM over the centre crops, and the device path refused by name."""
  import vaelab
  data_dir, _ = prepared
  small = {"data.data_dir": data_dir, "data.image_size": 16, "batch_size": 4,
           "num_train_steps": 3, "log_every": 1, "eval_every": 3, "checkpoint_every": 3,
           "eval.batch_size": 4, "eval.num_pictures": 4, "model.filters": 8,
           "model.channel_multipliers": (1, 2), "model.num_codes": 16, "model.code_dim": 4,
           "model.disc_filters": 8, "loss.disc_start": 1}
  run = vaelab.train("configs/vqgan_imagenet.py:runlocal", str(tmp_path / "run"),
                     overrides=small, evaluate=True)
  assert len(run.history) >= 3
  assert all(np.isfinite(r["train/loss"]) for r in run.history if "train/loss" in r)
  assert np.isfinite(run.results["eval/psnr"]) and -1 <= run.results["eval/ssim"] <= 1
  assert "eval/probe_fid" not in run.results
  with pytest.raises(ConfigError, match="has no device form"):
    vaelab.train("configs/vqgan_imagenet.py:runlocal",
                 overrides=dict(small, **{"data.placement": "device"}))
