"""The official files of disentanglement_lib's data sets (vaelab/data/ground_truth_files.py),
on small files of each format written here: dlib's factors, a short run with every score,
the refusals (missing, wrong shape, wrong dtype, truncated, checksum), host memory on a
sparse MPI3D file of the real size."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ground_truth_writers as writers
from conftest import ROOT, xla_flags
from vaelab import config_base, validation
from vaelab.data import dsprites, file_reading, ground_truth_files as gtf
from vaelab.errors import ConfigError, DataError
from vaelab.evaluate import disentanglement

# name: (data.name, file or folder name, writer)
FORMATS = {
    "dsprites": ("dsprites_file", gtf.DSPRITES_FILE, writers.write_dsprites),
    "shapes3d_npz": ("shapes3d_file", gtf.SHAPES3D_NPZ, writers.write_shapes3d_npz),
    "shapes3d_h5": ("shapes3d_file", gtf.SHAPES3D_H5, writers.write_shapes3d_h5),
    "mpi3d": ("mpi3d_file", "mpi3d_real.npz", writers.write_mpi3d),
    "smallnorb": ("smallnorb_file", "small_norb", writers.write_smallnorb),
    "cars3d": ("cars3d_file", "cars", writers.write_cars3d),
}
SCORES = ("eval/betavae_score", "eval/factorvae_score", "eval/mig", "eval/dci_disentanglement",
          "eval/sap_score", "eval/modularity_score", "eval/irs",
          "eval/gaussian_total_correlation", "eval/mutual_info_score")


def _data_cfg(name, path, verify=True, num_eval=16):
  c = config_base.base_config().data
  return config_base.set_overrides(c, {"name": name, "path": path, "verify": verify,
                                       "num_eval": num_eval})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """{format: path} of the good files."""
  root = tmp_path_factory.mktemp("official")
  out = {}
  for key, (_, filename, writer) in FORMATS.items():
    path = str(root / key / filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer(path)
    out[key] = path
  return out


def _load(key, path):
  # The h5 file carries the official name, whose published checksum it cannot match.
  return gtf.load(_data_cfg(FORMATS[key][0], path, verify=key != "shapes3d_h5"))


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_factors_are_dlibs(written, key):
  source = _load(key, written[key])
  spec = {"dsprites": gtf.DSPRITES, "shapes3d_npz": gtf.SHAPES3D, "shapes3d_h5": gtf.SHAPES3D,
          "mpi3d": gtf.MPI3D_REAL, "smallnorb": gtf.SMALLNORB, "cars3d": gtf.CARS3D}[key]
  assert source.info.factor_sizes == spec.factor_sizes
  assert source.info.factor_names == spec.factor_names
  rows = np.array([0, 1, len(source) - 1, 7])
  batch = source.get(rows)
  assert batch["image"].shape == (4,) + spec.image_shape and batch["image"].dtype == np.float32
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1
  gt = disentanglement.ground_truth_from_source(source)
  factors, images = gt.sample(5, np.random.default_rng(0))
  assert factors.shape == (5, len(spec.factor_sizes)) and images.shape == (5,) + spec.image_shape
  if key == "smallnorb":  # instances and both chunks repeat factor vectors: any row of them
    np.testing.assert_array_equal(source.table_factors[gt.rows_of(factors)], factors)
  else:
    np.testing.assert_array_equal(gt.observations(factors), images)


def test_dsprites_file_rows_are_the_files(written):
  source = _load("dsprites", written["dsprites"])
  with np.load(written["dsprites"]) as f:
    imgs, classes = f["imgs"], f["latents_classes"]
  rows = np.arange(0, len(source), 17)
  np.testing.assert_array_equal(source.get(rows)["image"][..., 0], imgs[rows].astype(np.float32))
  np.testing.assert_array_equal(source.get(rows)["factors"], classes[rows])
  # Inflated once beside the file, read from there.
  assert os.path.exists(written["dsprites"] + ".imgs.npy")
  assert source._images.path == written["dsprites"] + ".imgs.npy"


def test_mpi3d_grid_order_and_rows_read_in_place(written):
  source = _load("mpi3d", written["mpi3d"])
  assert len(source) == 1036800 and source._images.path == written["mpi3d"]
  # dlib's index: factors in row-major order of (6, 6, 2, 3, 3, 40, 40).
  idx = np.array([0, 1, 40, 1600, 1036799])
  expected = np.stack(np.unravel_index(idx, gtf.MPI3D_REAL.factor_sizes), 1)
  np.testing.assert_array_equal(source.get(idx)["factors"], expected)
  assert source.device_form() is None  # 12.7 GB stays on the host


def test_shapes3d_h5_and_npz_agree(written):
  a, b = _load("shapes3d_npz", written["shapes3d_npz"]), _load("shapes3d_h5", written["shapes3d_h5"])
  rows = np.array([95, 3, 3, 0, 50])
  for key in ("image", "factors"):
    np.testing.assert_array_equal(a.get(rows)[key], b.get(rows)[key])


def test_smallnorb_factors_from_cat_and_info(written):
  source = _load("smallnorb", written["smallnorb"])
  assert len(source) == 160
  f = source.table_factors
  assert f[:, 2].max() == 1  # azimuth 0, 2 halved as dlib halves it
  assert sorted(np.unique(f[:, 0])) == [0, 1, 2, 3, 4]


def test_cars3d_factor_order(written):
  source = _load("cars3d", written["cars3d"])
  f = source.table_factors
  assert len(source) == 192
  # Row-major over (elevation 4, azimuth 24, the folder's 2 cars), dlib's index order.
  np.testing.assert_array_equal(f[:5], [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [0, 2, 0]])
  np.testing.assert_array_equal(f, np.stack(np.unravel_index(np.arange(192), (4, 24, 2)), 1))
  # The writer's pattern: channel 0 follows the elevation, 1 the azimuth, 2 the car.
  level = source.get(np.arange(192))["image"][:, 32, 0, :]  # a pixel off the bar
  expected = np.floor(255 * (f + 1) / (np.array([4, 24, 183]) + 1)) / 255
  np.testing.assert_allclose(level, expected, atol=1.01 / 255)


BAD = ("missing", "shape", "dtype", "truncated")
# What each refusal's message must name, beside the file.
NAMED = {
    ("dsprites", "shape"): "'imgs'", ("dsprites", "dtype"): "'imgs'",
    ("shapes3d_npz", "shape"): "'images'", ("shapes3d_npz", "dtype"): "'images'",
    ("shapes3d_h5", "shape"): "'images'", ("shapes3d_h5", "dtype"): "'images'",
    ("mpi3d", "shape"): "'images'", ("mpi3d", "dtype"): "'images'",
    ("smallnorb", "shape"): "'dat'", ("smallnorb", "dtype"): "'cat'",
    ("cars3d", "shape"): "'im'", ("cars3d", "dtype"): "'im'",
}
PAGES = {"dsprites": "deepmind/dsprites-dataset", "shapes3d_npz": "deepmind/3d-shapes",
         "shapes3d_h5": "deepmind/3d-shapes", "mpi3d": "rr-learning",
         "smallnorb": "ylclab/data/norb-v1.0-small", "cars3d": "scottreed.info"}


def _truncate(path):
  if os.path.isdir(path):  # the first file of the folder, as a download cut short
    path = sorted(os.path.join(path, f) for f in os.listdir(path))[0]
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(min(size // 2, 1 << 20))
  return os.path.basename(path)


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("key", sorted(FORMATS))
def test_refusals_name_the_file_and_field(tmp_path, key, bad):
  name, filename, writer = FORMATS[key]
  path = str(tmp_path / filename)
  if bad == "missing":
    with pytest.raises(DataError) as e:
      gtf.check(_data_cfg(name, path))
    assert filename in str(e.value) and PAGES[key] in str(e.value)
    return
  writer(path, bad=None if bad == "truncated" else bad)
  if bad == "truncated":
    cut = _truncate(path)
    with pytest.raises(DataError, match="truncated") as e:
      gtf.load(_data_cfg(name, path, verify=False))  # what a run reads before it compiles
    assert cut in str(e.value)
    return
  with pytest.raises(DataError) as e:
    gtf.check(_data_cfg(name, path, verify=False))
  assert NAMED[key, bad] in str(e.value) and "expected" in str(e.value)


def test_a_missing_norb_file_is_named(written, tmp_path):
  folder = tmp_path / "norb"
  writers.write_smallnorb(str(folder))
  gone = folder / gtf.SMALLNORB_FILES[4]
  gone.unlink()
  with pytest.raises(DataError, match=gtf.SMALLNORB_FILES[4]):
    gtf.check(_data_cfg("smallnorb_file", str(folder)))


def test_checksum_is_checked_and_cached(tmp_path, monkeypatch):
  path = str(tmp_path / gtf.SHAPES3D_H5)
  writers.write_shapes3d_h5(path)
  cfg = _data_cfg("shapes3d_file", path)
  with pytest.raises(DataError, match="sha256.*data.verify=False"):
    gtf.check(cfg)
  gtf.check(_data_cfg("shapes3d_file", path, verify=False))
  with open(path + ".sha256") as f:
    cached = json.load(f)
  assert cached["size"] == os.path.getsize(path)
  # The cache is trusted while the file's size and mtime are those it was computed for:
  # a file matching its record is not read again.
  monkeypatch.setitem(gtf.KNOWN_SHA256, gtf.SHAPES3D_H5, cached["sha256"])
  gtf.check(cfg)
  monkeypatch.setattr(file_reading.hashlib, "sha256", None)  # any hashing now fails
  gtf.check(cfg)
  os.utime(path, ns=(0, 0))  # a changed file is hashed again
  with pytest.raises(TypeError):
    gtf.check(cfg)


def test_covers_grid():
  full = np.stack(np.unravel_index(np.arange(24), (2, 3, 4)), 1)
  src = gtf.FileSource("t", np.zeros((24, 2, 2, 1), np.uint8), full,
                       gtf.Spec(("a", "b", "c"), (2, 3, 4), (2, 2, 1)))
  assert disentanglement.ground_truth_from_source(src).covers_grid()
  part = gtf.FileSource("t", np.zeros((23, 2, 2, 1), np.uint8), full[1:],
                        gtf.Spec(("a", "b", "c"), (2, 3, 4), (2, 2, 1)))
  assert not disentanglement.ground_truth_from_source(part).covers_grid()


def test_validation_refuses_before_building(tmp_path):
  config = tiny_config("mpi3d_file", str(tmp_path / "mpi3d_toy.npz"))
  with pytest.raises(DataError, match="mpi3d_toy.npz"):
    validation.validate(config)
  config.data.path = ""
  with pytest.raises(ConfigError, match="data.path"):
    validation.validate(config)


def tiny_config(name: str, path: str, verify: bool = True):
  """configs/beta_vae_dsprites.py:runlocal on a file data set, at a few seconds' size."""
  c = config_base.load_config("configs/beta_vae_dsprites.py:runlocal")
  return config_base.set_overrides(c, {
      "data.name": name, "data.path": path, "data.verify": verify, "batch_size": 8,
      "num_train_steps": 3, "log_every": 1, "eval_every": 10**6, "checkpoint_every": 10**6,
      "eval.batch_size": 8, "model.hidden": (16,), "model.latent_dim": 4, "data.num_eval": 16,
      "eval.num_pictures": 4, "eval.probe_train_size": 16, "eval.iwae_ks": (1,),
      "eval.disentanglement_num_train": 60, "eval.disentanglement_num_eval": 30,
      "eval.disentanglement_num_variance_estimate": 100,
      "eval.disentanglement_batch_size": 4})


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_trains_and_reports_every_score(written, key, tmp_path):
  from vaelab.training import loop
  config = tiny_config(FORMATS[key][0], written[key], verify=key != "shapes3d_h5")
  pictures = key in ("dsprites", "shapes3d_h5")  # the pictures' cost, on two of them
  _, _, results, history = loop.train(config, str(tmp_path) if pictures else None,
                                      evaluate=True)
  if pictures:  # with the factors' names (a part of dSprites' grid has no position plane)
    assert (tmp_path / "traversals.png").exists() and (tmp_path / "mi_matrix.png").exists()
    with open(tmp_path / "latent_factors.json") as f:
      assert json.load(f)["factor_names"] is not None
  assert all(np.isfinite(h["train/loss"]) for h in history if "train/loss" in h)
  for score in SCORES:
    assert score in results, score
    # MPI3D's sparse file is all zeros: codes that never vary score nothing finite for some.
    if key != "mpi3d":
      assert np.isfinite(results[score]), score


MEMORY_SCRIPT = r"""
import json, resource, sys
sys.path.insert(0, {tests!r})
from test_ground_truth_files import tiny_config
from vaelab.training import loop
config = tiny_config("mpi3d_file", {path!r})
loop.train(config, None, evaluate=False)
print(json.dumps({{"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def test_a_real_size_mpi3d_starts_in_little_host_memory(written):
  code = MEMORY_SCRIPT.format(tests=os.path.join(ROOT, "tests"), path=written["mpi3d"])
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, XLA_FLAGS=xla_flags()), timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  rss = json.loads(proc.stdout.strip().splitlines()[-1])["max_rss_mb"]
  # The images are 12.7 GB; the process holds the factor table and the model.
  assert rss < 2000, rss


def test_renderer_check_counts_exact_images(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import dsprites_renderer_check
  path = str(tmp_path / gtf.DSPRITES_FILE)
  writers.write_dsprites(path)  # the renderer's own images: every one exact
  out = dsprites_renderer_check.compare_with_file(path, block=50)
  assert (out["images"], out["exact_images"], out["largest_pixel_difference"]) == (192, 192, 0)
  with np.load(path, allow_pickle=True) as f:
    arrays = dict(f)
  arrays["imgs"][7, 3, 5] ^= 1  # one pixel of one image, and a whole image of another shape
  arrays["imgs"][100] = 1 - arrays["imgs"][100]
  np.savez_compressed(path, **arrays)
  out = dsprites_renderer_check.compare_with_file(path, block=50)
  assert out["exact_images"] == 190 and out["largest_pixel_difference"] == 1.0
  assert out["mean_fraction_of_pixels_differing"] == (1 + 4096) / (192 * 4096)
  shapes = arrays["latents_classes"][[7, 100], 1]
  per_shape = {name: 64 - int((shapes == k).sum())
               for k, name in enumerate(dsprites.SHAPE_NAMES)}
  assert out["exact_images_per_shape"] == per_shape


def test_smallnorb_resized_as_dlibs_int8_images(written):
  """dlib reads the images' bytes as int8: PIL resizes them in its integer mode "I"."""
  from PIL import Image
  source = _load("smallnorb", written["smallnorb"])
  base = os.path.join(written["smallnorb"], gtf.SMALLNORB_FILES[0])
  dtype, shape, offset = gtf._norb_header(base)
  dat = np.fromfile(base, dtype, offset=offset).reshape(shape)
  for row in (0, 33, 79):
    pic = Image.fromarray(dat[row, 0].view(np.int8))
    assert pic.mode == "I"
    dlib = np.asarray(pic.resize((64, 64), Image.LANCZOS)) / 255.0
    np.testing.assert_allclose(source.get(np.array([row]))["image"][0, ..., 0],
                               np.clip(dlib, 0, 1), atol=1e-7)
