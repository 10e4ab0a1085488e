"""Tests for vaelab.evaluate.factor_pictures: what each latent captures, and its PNGs."""
from __future__ import annotations

import os

import numpy as np
import pytest

from vaelab.data import dsprites


def test_factor_of_latent_names_each_latents_factor():
  from vaelab.evaluate import factor_pictures as fp
  mi = np.array([[0.05, 1.2, np.nan], [0.9, 0.1, np.nan], [0.01, 0.02, np.nan],
                 [0.4, 0.5, np.nan]])
  entropy = np.array([1.0, 2.0, np.nan])  # the third factor never varies
  got = fp.factor_of_latent(mi, ("shape", "scale", "color"), entropy, min_value=0.05)
  assert [name for name, _ in got] == ["scale", "shape", None, "shape"]
  # Normalised by the factor's entropy: z3's 0.5 nats of scale (H = 2) is less than its
  # 0.4 of shape (H = 1).
  assert got[0][1] == pytest.approx(0.6) and got[3][1] == pytest.approx(0.4)
  assert fp.factor_of_latent(mi)[0] == ("factor 1", 1.2)  # raw nats without entropies
  assert fp.latent_labels(mi, ("shape", "scale", "color"), entropy, kl=[3.1, 2.0, 0.0, 1.0])[
      0] == "z0: scale (0.60, KL 3.10)"
  with pytest.raises(ValueError, match="2 names for 3"):
    fp.factor_of_latent(mi, ("shape", "scale"))


def test_factor_pictures_write_pngs(tmp_path):
  from vaelab.evaluate import factor_pictures as fp
  rng = np.random.default_rng(0)
  mi = rng.random((6, 5))
  paths = [
      fp.save_mutual_information(mi, str(tmp_path / "mi.png"), dsprites.FACTOR_NAMES[1:],
                                 kl=rng.random(6) * 3, entropy=np.full(5, 1.5)),
      fp.save_metric_curves(
          [{"label": f"beta={b}", "curves": {"eval/mig": [(s, 0.1 * b + 0.01 * s + seed)
                                                          for s in (0, 100, 200)],
                                             "dci_disentanglement": [(100, 0.2), (200, 0.3)]}}
           for b in (1, 4) for seed in (0, 0.02)], str(tmp_path / "curves.png")),
      fp.save_kl_curves([(s, np.minimum(s / 100.0 * np.arange(1, 7), 4.0)) for s in range(0, 500,
                                                                                     50)],
                        str(tmp_path / "kl.png"), labels=fp.latent_labels(mi),
                        capacity=[(s, s / 20.0) for s in range(0, 500, 50)]),
  ]
  # The dict forms a sweep script collects: runs by name grouped into lines, and per-latent
  # KL curves with the factor each latent captures.
  paths.append(fp.save_metric_curves(
      {f"beta={b} seed={s}": {"mig": [(0, 0.1 * b), (100, 0.2 * b + s)]} for b in (1, 4)
       for s in (0, 1)}, str(tmp_path / "curves_dict.png"),
      group=lambda name: name.split(" ")[0]))
  paths.append(fp.save_latent_kl_curves(
      {d: [(s, min(4.0, s * (d + 1) / 100)) for s in range(0, 300, 50)] for d in range(4)},
      str(tmp_path / "kl_dict.png"), {0: "scale", 2: "pos_x"}))
  for p in paths:
    assert os.path.getsize(p) > 5000, p


def test_latent_responses_average_each_cell_over_the_same_draws(tmp_path):
  from vaelab.evaluate import factor_pictures as fp
  from vaelab.evaluate.disentanglement.ground_truth import ProceduralGroundTruth
  sizes = (3, 5, 4, 6)  # the plane is factors 1 and 3
  truth = ProceduralGroundTruth(lambda f: f.astype(np.float32), sizes, ("a", "pos_x", "b", "pos_y"))
  # Codes: pos_x, -2 pos_y, and a function of the other factors only.
  represent = lambda obs: np.stack([obs[:, 1], -2 * obs[:, 3], obs[:, 0] * obs[:, 2] ** 2], 1)
  r = fp.latent_responses(represent, truth, (1, 3), draws=7, rng=np.random.default_rng(0))
  assert r.shape == (5, 6, 3)
  np.testing.assert_allclose(r[:, :, 0], np.arange(5)[:, None] * np.ones((1, 6)))
  np.testing.assert_allclose(r[:, :, 1], -2 * np.arange(6)[None, :] * np.ones((5, 1)))
  # The same draws of the other factors in every cell: their latent is flat over the plane.
  np.testing.assert_allclose(r[:, :, 2], r[0, 0, 2])
  assert r[0, 0, 2] > 0
  path = fp.save_latent_responses(r, str(tmp_path / "resp.png"), [1, 0],
                                  labels=["z1: pos_y", "z0: pos_x"])
  assert os.path.getsize(path) > 3000
  with pytest.raises(ValueError, match="responses must be"):
    fp.save_latent_responses(r[0], str(tmp_path / "bad.png"), [0])
