"""Every config loads, every key in it is read by the code, bad values are refused by key."""
import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import contract_cases
from conftest import ROOT, tiny_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.evaluate import pca
from vaelab.training import loop

CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _leaf_paths(c, prefix=""):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from _leaf_paths(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


@pytest.fixture(scope="module")
def contract_state(tmp_path_factory):
  """The contract's tiny data and frozen VQ runs (made once per test run, shared)."""
  return contract_cases.prepare(str(tmp_path_factory.mktemp("contract")))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_loads_validates_and_documents_its_command(path, arg, contract_state):
  config = load(path, arg)
  if "vq_workdir" in config:  # a prior's config needs a trained VQ run to validate
    config.vq_workdir = contract_state["vq"]["vqvae"]
  validation.validate(config, num_devices=1)
  with open(path) as f:
    assert f"--config=configs/{os.path.basename(path)}" in f.read()


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="runlokal"):
    load(os.path.join(ROOT, "configs", "default.py"), "runlokal")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_key_is_read_by_the_code(path, contract_state, tmp_path, monkeypatch):
  """Records ConfigDict reads during build, a short run with a periodic evaluation and a
  checkpoint, and the final evaluation of the config file's contract case (its runlocal
  config at the contract's tiny sizes and data, every key kept): the same programs the
  contract compiles for the case (tests/test_contract.py), so the two share them."""
  case = os.path.basename(path)[:-3]
  config = contract_cases.config_of(case, contract_state["data"], contract_state["vq"])
  config.eval_every = config.checkpoint_every = 2
  generated = config.data.name != "npz"
  names = {}

  def register(c, prefix):
    names[id(c)] = prefix
    for k, v in c.items():
      if isinstance(v, ml_collections.ConfigDict):
        register(v, f"{prefix}{k}.")
  register(config, "")
  read = set()
  orig_getattr = ml_collections.ConfigDict.__getattr__
  orig_getitem = ml_collections.ConfigDict.__getitem__

  def getattr_(self, key):
    if id(self) in names:
      read.add(names[id(self)] + key)
    return orig_getattr(self, key)

  def getitem_(self, key):
    if id(self) in names:
      read.add(names[id(self)] + str(key))
    return orig_getitem(self, key)

  monkeypatch.setattr(ml_collections.ConfigDict, "__getattr__", getattr_)
  monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", getitem_)
  # Keys only a data source other than the npz one used here reads.
  source_keys = {"data.data_dir", "data.train_split", "data.eval_split"}
  if generated:
    source_keys |= {"data.train_path", "data.eval_path"}
  loop.train_and_evaluate(config, str(tmp_path / "run"))
  monkeypatch.undo()
  unread = set(_leaf_paths(config)) - read - source_keys
  assert not unread, f"keys in {os.path.basename(path)} that no code reads: {sorted(unread)}"


def test_tfds_keys_are_read_by_the_tfds_source(monkeypatch):
  from vaelab import data as data_lib
  from vaelab.data import tfds_source
  calls = []
  monkeypatch.setattr(tfds_source, "load_tfds", lambda *a: calls.append(a))
  config = load(os.path.join(ROOT, "configs", "ae_mnist.py"))
  config.data.data_dir = "/some/dir"
  data_lib.make_sources(config.data)
  assert calls == [("mnist", "train", "/some/dir"), ("mnist", "test", "/some/dir")]


@pytest.mark.parametrize("key,value,message", [
    ("loss.beta", -1.0, "loss.beta=-1.0"),
    ("batch_size", 7, "batch_size=7 is not divisible"),
    ("num_train_steps", 0, "num_train_steps=0"),
    ("model.name", "nope", "model.name='nope'"),
    ("data.name", "imagenet", "data.name='imagenet'"),
    ("data.binarize", "maybe", "data.binarize='maybe'"),
    ("model.likelihood", "poisson", "model.likelihood='poisson'"),
    ("optimizer.name", "lion", "optimizer.name='lion'"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate=0.0"),
    ("model.latent_dim", 0, "model.latent_dim=0"),
    ("nonfinite", "ignore", "nonfinite='ignore'"),
    ("eval.disentanglement_metrics", ("mig", "sap_scroe"), "eval.disentanglement_metrics="),
    ("eval.disentanglement_seed", -1, "eval.disentanglement_seed=-1"),
])
def test_bad_values_are_refused_naming_the_key(key, value, message, npz_pair):
  config = tiny_config("vae", *npz_pair)
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError) as e:
    validation.validate(config, num_devices=2)
  assert message in str(e.value)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "vaelab.main", *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=300)


def test_cli_refuses_a_misspelled_key(tmp_path):
  out = _cli("--config=configs/vae_mnist.py", f"--workdir={tmp_path}",
             "--config.model.latnet_dim=3")
  assert out.returncode != 0
  assert "latnet_dim" in out.stderr
  assert not os.listdir(tmp_path)


def test_cli_trains_and_bad_data_gives_a_clear_error(npz_pair, tmp_path):
  train, evalp = npz_pair
  common = ["--config=configs/vae_mnist.py:runlocal", "--config.data.name=npz",
            f"--config.data.train_path={train}", "--config.model.hidden=(16,)",
            "--config.num_train_steps=3", "--config.batch_size=8", "--config.eval.batch_size=16"]
  out = _cli(*common, f"--config.data.eval_path={evalp}", f"--workdir={tmp_path / 'ok'}")
  assert out.returncode == 0, out.stderr[-2000:]
  assert os.path.exists(tmp_path / "ok" / "results.json")
  bad = tmp_path / "bad.npz"
  np.savez(bad, images=np.zeros((3, 8, 8), np.uint8))
  out = _cli(*common, f"--config.data.eval_path={bad}", f"--workdir={tmp_path / 'bad'}")
  assert out.returncode == 2
  assert "bad.npz" in out.stderr and "'image'" in out.stderr


def test_pca_baseline_matches_sklearn(npz_pair):
  from sklearn.decomposition import PCA
  from vaelab.data import npz
  train, evalp = npz.load_npz(npz_pair[0]), npz.load_npz(npz_pair[1])
  xt = train.get(np.arange(len(train)))["image"].reshape(len(train), -1)
  xe = evalp.get(np.arange(len(evalp)))["image"].reshape(len(evalp), -1)
  p = PCA(5).fit(xt)
  expected = np.square(p.inverse_transform(p.transform(xe)) - xe).sum(1).mean()
  assert pca.pca_recon_sse(train, evalp, 5) == pytest.approx(expected, rel=1e-4)
