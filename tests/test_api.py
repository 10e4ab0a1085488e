"""The notebook API's promises (vaelab/api.py, models/base.py): for every family, `decode`
takes what `encode` returns and gives the decoder's mean image, so decode(encode(x)) is the
model's reconstruction; an image's code does not depend on its neighbours in the array,
also under dynamic binarization (whose evaluation draw is keyed by the image itself)."""
from __future__ import annotations

import numpy as np
import pytest

import contract_cases as cc
from vaelab import api, config_base
from vaelab.training import experiment as experiment_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _one_config_per_family() -> dict[str, str]:
  """{family: its first config file}: the families whose model reconstructs images."""
  out = {}
  for case, path in sorted(cc.base_cases().items()):
    name = cc._load(path).model.name
    if name not in out and name != "vq_prior":  # a prior over codes: no reconstruction
      out[name] = case
  return out


FAMILIES = _one_config_per_family()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cc.write_data(str(tmp_path_factory.mktemp("api")))


def _run(case: str, data: dict, **overrides) -> api.Run:
  """A Run of the case's shrunk config at its initial parameters (no training needed for
  these identities; the train step is never compiled)."""
  config = config_base.set_overrides(cc.config_of(case, data, {}), overrides)
  exp = experiment_lib.build(config)
  return api.Run(config, exp, exp.init_state(), [])


def _images(run: api.Run, n: int = 6) -> np.ndarray:
  return run.experiment.eval_source.get(np.arange(n))["image"]


def test_every_family_that_reconstructs_is_covered():
  assert {"ae", "dae", "sparse_ae", "ksparse", "cae", "vae", "vqvae", "vqvae2",
          "tdvae"} <= set(FAMILIES)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"tdvae"}))  # sequences: below
def test_decode_of_encode_is_the_reconstruction(family, data):
  run = _run(FAMILIES[family], data)
  x = _images(run)
  np.testing.assert_allclose(run.decode(run.encode(x)), run.reconstruct(x), atol=1e-6)


def test_tdvae_decodes_its_codes_to_frames(data):
  run = _run(FAMILIES["tdvae"], data)
  x = _images(run, 2)
  frames = run.decode(run.encode(x))
  assert frames.shape[0] == 2 and frames.shape[-3:] == x.shape[-3:]
  assert np.all((frames >= 0) & (frames <= 1))


@pytest.mark.parametrize("binarize", ["dynamic", "threshold", "none"])
def test_an_images_code_does_not_depend_on_its_neighbours(binarize, data):
  run = _run("vae_mnist", data, **{"data.binarize": binarize})
  x = _images(run)
  assert np.mean((x > 0.05) & (x < 0.95)) > 0.1  # grey levels: a draw could differ
  together = run.encode(x)
  # Matmuls of another batch size round differently (~1e-7); another draw of the binary
  # pixels moves a code by ~0.1.
  for i in (0, 3, 5):
    np.testing.assert_allclose(run.encode(x[i:i + 1])[0], together[i], atol=1e-5)
  np.testing.assert_allclose(run.encode(x[::-1])[::-1], together, atol=1e-5)


def test_dynamic_binarization_still_draws_per_image(data):
  """The draw is keyed by the image, not fixed to one threshold: two images with the same
  intensities in different places are binarized differently where they overlap."""
  run = _run("vae_mnist", data, **{"data.binarize": "dynamic"})
  x = np.full((2, *run.experiment.eval_source.info.image_shape), 0.5, np.float32)
  x[1, 0, 0] = 0.25  # a different image, whose other pixels equal the first's
  drawn = run._inputs(x)
  assert set(np.unique(drawn)) <= {0.0, 1.0}
  assert not np.array_equal(drawn[0, 1:], drawn[1, 1:])
