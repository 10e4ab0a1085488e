"""vaelab's SAP, Modularity / Explicitness, IRS, unsupervised scores (and MIG) against
disentanglement_lib's own code, on identical codes and factors.

  .venv/bin/python experiments/compare_dlib_scores.py [--dlib REPO] [--train 10000] [--test 5000]

(REPO: a git repository of disentanglement_lib, by default this machine's mirror.)

disentanglement_lib needs TensorFlow 1 and gin, which this project does not install. The
metric files it needs (`evaluation/metrics/{utils,mig,sap_score,modularity_explicitness,
irs,unsupervised_metrics}.py`) are read from its git repository (`git show HEAD:...`) into
a temporary directory, beside two stand-ins: `gin` (its `configurable` fills a function's
keyword arguments from `bind_parameter`, which is all these files ask of it) and `six`
(`six.moves.range` is `range`). dlib's outer `compute_*` functions then run unchanged, on a
ground truth that hands out the precomputed factors and codes in order (the
representation is the identity), so dlib draws exactly the training and test points that
vaelab scores with `vaelab.disentanglement_scores(codes=, factors=, codes_test=,
factors_test=)`.

Cases: random codes and factors, structured codes (each factor in its own code, a rotated
pair, a duplicated code, a nearly collapsed one, noise), and small-integer codes with
binary factors (ties everywhere; two-class explicitness). Printed: the largest absolute
difference per score over the cases, and a JSON line.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)

MIRROR = "/work/.mirror/google-research+disentanglement_lib/repo"
METRIC_FILES = ("utils", "mig", "sap_score", "modularity_explicitness", "irs",
                "unsupervised_metrics")

GIN_STUB = '''"""Stand-in for gin: configurable functions take their bound keyword arguments."""
import functools

REQUIRED = object()
_BINDINGS = {}


def bind_parameter(key, value):
  scope, name = key.rsplit(".", 1)
  _BINDINGS.setdefault(scope, {})[name] = value


def configurable(name=None, blacklist=None, whitelist=None, module=None):
  def wrap(fn, scope):
    @functools.wraps(fn)
    def inner(*args, **kwargs):
      for key, value in _BINDINGS.get(scope, {}).items():
        kwargs.setdefault(key, value)
      return fn(*args, **kwargs)
    return inner

  if callable(name):
    return wrap(name, name.__name__)
  return lambda fn: wrap(fn, name or fn.__name__)
'''


def load_dlib(repo: str, where: str):
  """disentanglement_lib's metric modules, imported from `repo`'s HEAD."""
  metrics = os.path.join(where, "disentanglement_lib", "evaluation", "metrics")
  os.makedirs(metrics)
  for package in ("disentanglement_lib", "disentanglement_lib/evaluation",
                  "disentanglement_lib/evaluation/metrics"):
    open(os.path.join(where, package, "__init__.py"), "w").close()
  for name in METRIC_FILES:
    text = subprocess.run(
        ["git", "-C", repo, "show", f"HEAD:disentanglement_lib/evaluation/metrics/{name}.py"],
        check=True, capture_output=True, text=True).stdout
    with open(os.path.join(metrics, f"{name}.py"), "w") as f:
      f.write(text)
  os.makedirs(os.path.join(where, "gin"))
  with open(os.path.join(where, "gin", "__init__.py"), "w") as f:
    f.write(GIN_STUB)
  open(os.path.join(where, "gin", "tf.py"), "w").close()
  os.makedirs(os.path.join(where, "six"))
  open(os.path.join(where, "six", "__init__.py"), "w").close()
  with open(os.path.join(where, "six", "moves.py"), "w") as f:
    f.write("range = range\n")
  sys.path.insert(0, where)
  mods = {n: importlib.import_module(f"disentanglement_lib.evaluation.metrics.{n}")
          for n in METRIC_FILES}
  gin = importlib.import_module("gin")
  gin.bind_parameter("discretizer.discretizer_fn", mods["utils"]._histogram_discretize)
  gin.bind_parameter("discretizer.num_bins", 20)
  return mods


class Replay:
  """A dlib GroundTruthData whose `sample` returns the given rows, in order."""

  def __init__(self, factors, codes):
    self.factors, self.codes, self.at = factors, codes, 0

  def sample(self, num, random_state):
    rows = slice(self.at, self.at + num)
    self.at += num
    return self.factors[rows], self.codes[rows]


def case(name: str, n: int, rng: np.random.Generator):
  """(codes (n, d), factors (n, F)) of one kind."""
  if name == "integer":
    y = np.stack([rng.integers(0, s, n) for s in (2, 2, 3, 5)], 1)
    z = np.stack([y[:, 0], y[:, 1] + rng.integers(0, 2, n), (y[:, 2] + y[:, 3]) % 4,
                  rng.integers(0, 3, n), y[:, 3]], 1).astype(np.float64)
    return z, y
  sizes = (3, 6, 40, 32, 32)  # dSprites' scored factors
  y = np.stack([rng.integers(0, s, n) for s in sizes], 1)
  if name == "random":
    return rng.normal(size=(n, 10)), y
  scaled = y / np.array(sizes, np.float64)
  z = rng.normal(size=(n, 10))
  z[:, :5] = scaled + 0.05 * rng.normal(size=(n, 5))
  z[:, 3:5] = z[:, 3:5] @ np.array([[0.8, -0.6], [0.6, 0.8]])  # a rotated pair
  z[:, 5] = z[:, 0] + 0.01 * rng.normal(size=n)  # a duplicate
  z[:, 6] = 1e-3 * rng.normal(size=n)  # nearly collapsed
  return z * np.array([1, 2, 0.5, 1, 3, 1, 1, 1, 1, 1]), y


def dlib_scores(dl, z_train, y_train, z_test, y_test) -> dict[str, float]:
  rs = np.random.RandomState(0)
  both = lambda: Replay(np.concatenate([y_train, y_test]), np.concatenate([z_train, z_test]))
  train = lambda: Replay(y_train, z_train)
  ident = lambda x: np.array(x, np.float64)
  n_train, n_test = len(z_train), len(z_test)
  out = {}
  out["mig"] = dl["mig"].compute_mig(train(), ident, rs, None, num_train=n_train)["discrete_mig"]
  out["sap_score"] = dl["sap_score"].compute_sap(
      both(), ident, rs, None, num_train=n_train, num_test=n_test,
      continuous_factors=False)["SAP_score"]
  out["sap_score_continuous"] = dl["sap_score"].compute_sap(
      both(), ident, rs, None, num_train=n_train, num_test=n_test,
      continuous_factors=True)["SAP_score"]
  out.update(dl["modularity_explicitness"].compute_modularity_explicitness(
      both(), ident, rs, None, num_train=n_train, num_test=n_test))
  out["irs"] = dl["irs"].compute_irs(train(), ident, rs, None, diff_quantile=0.99,
                                     num_train=n_train, batch_size=16)["IRS"]
  u = dl["unsupervised_metrics"].unsupervised_metrics(train(), ident, rs, None,
                                                      num_train=n_train)
  out.update({k: u[k] for k in ("gaussian_total_correlation",
                                "gaussian_wasserstein_correlation", "mutual_info_score")})
  return {k: float(np.real(v)) for k, v in out.items()}


def vaelab_scores(z_train, y_train, z_test, y_test) -> dict[str, float]:
  import vaelab
  from vaelab.evaluate.disentanglement import sap
  s = vaelab.disentanglement_scores(codes=z_train, factors=y_train, codes_test=z_test,
                                    factors_test=y_test,
                                    metrics=("mig", "sap", "modularity", "irs", "unsupervised"))
  out = s.as_dict()
  out["sap_score_continuous"] = sap.sap_from_codes(z_train, y_train, z_test, y_test,
                                                   continuous_factors=True).sap
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dlib", default=MIRROR, help="disentanglement_lib's git repository")
  p.add_argument("--train", type=int, default=10000, help="training points (dlib's 10,000)")
  p.add_argument("--test", type=int, default=5000, help="test points (dlib's 5,000)")
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as where:
    dl = load_dlib(args.dlib, where)
    rng = np.random.default_rng(0)
    rows, worst, values = [], {}, {}
    for name in ("random", "structured", "integer"):
      z, y = case(name, args.train + args.test, rng)
      split = z[:args.train], y[:args.train], z[args.train:], y[args.train:]
      ref, ours = dlib_scores(dl, *split), vaelab_scores(*split)
      values[name] = {"dlib": ref, "vaelab": {k: ours[k] for k in ref}}
      for key in ref:
        diff = abs(ours[key] - ref[key])
        worst[key] = max(worst.get(key, 0.0), diff)
        rows.append([f"{name}: {key}", f"{ref[key]:.10f}", f"{ours[key]:.10f}", f"{diff:.1e}"])
  common.print_table(["case: score", "disentanglement_lib", "vaelab", "|diff|"], rows,
                     title=f"{args.train} training, {args.test} test points")
  common.print_table(["score", "largest |diff|"], [[k, f"{v:.2e}"] for k, v in worst.items()])
  print(json.dumps({"experiment": "compare_dlib_scores", "train": args.train, "test": args.test,
                    "max_abs_diff": worst, "scores": values}))


if __name__ == "__main__":
  main()
