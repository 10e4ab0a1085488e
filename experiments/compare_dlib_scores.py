"""vaelab's SAP, Modularity / Explicitness, IRS, unsupervised scores (and MIG), UDR, the
downstream task and the unfairness scores against disentanglement_lib's own code, on
identical codes and factors.

  .venv/bin/python experiments/compare_dlib_scores.py [--dlib REPO] [--train 10000] [--test 5000]
      [--udr_models 5] [--udr_points 1000] [--downstream_sizes 10,100,1000]
      [--downstream_test 1000] [--fairness_train 1000] [--fairness_per_class 20]

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

UDR (`evaluation/udr/metrics/udr.py`'s compute_udr_sklearn, both correlations) runs on
`--udr_models` representations of the same points (rotated, noisy, partly collapsed copies
of shared factors, with per-latent KLs some of which fall under the threshold), handed to
dlib batch by batch. The downstream task (`downstream_task.py`, logistic regression and
boosted trees) and fairness (`fairness.py`, boosted trees) run dlib's outer functions on a
ground truth that replays the same factor draws vaelab's functions get; sklearn's
`GradientBoostingClassifier()` is seeded (random_state=0, in dlib's utils through a
stand-in of `ensemble`) as vaelab seeds its trees, so that ties between features break the
same way. Their sample sizes are options (dlib's are 10, 100, 1,000, 10,000 training
points, 5,000 test points, and 10,000 / 100 per sensitive value for fairness: the boosted
trees at 10,000 points take many CPU minutes).
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
                "unsupervised_metrics", "downstream_task", "fairness")

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
  udr_dir = os.path.join(where, "disentanglement_lib", "evaluation", "udr", "metrics")
  os.makedirs(udr_dir)
  for package in ("evaluation/udr", "evaluation/udr/metrics"):
    open(os.path.join(where, "disentanglement_lib", package, "__init__.py"), "w").close()
  with open(os.path.join(udr_dir, "udr.py"), "w") as f:
    f.write(subprocess.run(
        ["git", "-C", repo, "show", "HEAD:disentanglement_lib/evaluation/udr/metrics/udr.py"],
        check=True, capture_output=True, text=True).stdout)
  sys.path.insert(0, where)
  mods = {n: importlib.import_module(f"disentanglement_lib.evaluation.metrics.{n}")
          for n in METRIC_FILES}
  mods["udr"] = importlib.import_module("disentanglement_lib.evaluation.udr.metrics.udr")
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


class _SeededEnsemble:
  """sklearn.ensemble for dlib's utils, its GradientBoostingClassifier() seeded with 0."""

  def __getattr__(self, name):
    import sklearn.ensemble
    return getattr(sklearn.ensemble, name)

  @staticmethod
  def GradientBoostingClassifier(**kwargs):  # noqa: N802 (sklearn's name)
    import sklearn.ensemble
    return sklearn.ensemble.GradientBoostingClassifier(**{"random_state": 0, **kwargs})


def udr_case(num_models: int, n: int, rng: np.random.Generator):
  """(representations, kls) of models sharing 4 factors, rotated / noisy / collapsed."""
  z = rng.normal(size=(n, 4))
  reps, kls = [], []
  for m in range(num_models):
    codes = np.zeros((n, 10))
    codes[:, :4] = z[:, rng.permutation(4)] * rng.choice([-1, 1], 4)
    if m % 2:
      a = rng.uniform(0.2, 1.3)
      codes[:, :2] = codes[:, :2] @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    codes += rng.uniform(0.05, 0.5) * rng.normal(size=codes.shape)
    kl = np.concatenate([rng.uniform(0.3, 3.0, 4), rng.uniform(0.0, 0.03, 6)])
    reps.append(codes)
    kls.append(kl)
  return reps, kls


def compare_udr(dl, reps, kls) -> dict[str, float]:
  import vaelab
  n = len(reps[0])
  batch = 10  # dlib's udr study's batch_size

  class Rows:  # observations are row indices, drawn in order
    at = 0

    def sample_observations(self, num, random_state):
      rows = np.arange(self.at, self.at + num)
      self.at += num
      return rows

  fns = [lambda rows, r=r, k=k: (r[rows], k) for r, k in zip(reps, kls)]
  worst = {}
  for correlation in ("lasso", "spearman"):
    ref = dl["udr"].compute_udr_sklearn(Rows(), fns, np.random.RandomState(0), batch, n,
                                        correlation_matrix=correlation, filter_low_kl=True,
                                        include_raw_correlations=False,
                                        kl_filter_threshold=0.01)
    ours = vaelab.udr(reps, kls, correlation=correlation)
    worst[f"udr_{correlation}_model_scores"] = float(np.max(np.abs(
        np.array(ref["model_scores"]) - ours.model_scores)))
    worst[f"udr_{correlation}_pairwise"] = float(np.max(np.abs(
        np.array(ref["pairwise_disentanglement_scores"])[..., 0] - ours.pairwise)))
  return worst


DSPRITES_SIZES = (3, 6, 40, 32, 32)  # dSprites' scored factors


class ReplayFactors:
  """A dlib GroundTruthData and a vaelab GroundTruth at once: `sample` hands out the rows
  of one queue, `sample_factors` those of another, in order; observations are a fixed
  function of the factors (entangled, partly lost), the representation the identity."""

  def __init__(self, sizes, sample_rows, factor_rows):
    self.factor_sizes = self.factors_num_values = tuple(sizes)
    self.varying_factors = tuple(range(len(sizes)))
    self._sample, self._factors = sample_rows, factor_rows
    self._at_sample = self._at_factors = 0

  @staticmethod
  def observations(f):
    f = np.asarray(f, np.float64)
    z = f / np.array(DSPRITES_SIZES, np.float64)
    z[:, 0] += 0.5 * np.sin(1.3 * f @ np.arange(1.0, f.shape[1] + 1))
    z[:, -1] += z[:, -2]
    return z

  def sample_observations_from_factors(self, factors, random_state):
    return self.observations(factors)

  def sample(self, num, random_state):
    f = self._sample[self._at_sample:self._at_sample + num]
    self._at_sample += num
    return f, self.observations(f)

  def sample_factors(self, num, random_state):
    f = self._factors[self._at_factors:self._at_factors + num]
    self._at_factors += num
    return np.array(f)


def compare_downstream_fairness(dl, args, rng) -> dict[str, float]:
  from vaelab.evaluate.disentanglement import downstream, fairness
  sizes = DSPRITES_SIZES
  draw = lambda n: np.stack([rng.integers(0, s, n) for s in sizes], 1)
  ident = lambda x: np.array(x, np.float64)
  gin = importlib.import_module("gin")
  dl["utils"].ensemble = _SeededEnsemble()
  worst = {}
  train_sizes = [int(t) for t in args.downstream_sizes.split(",")]
  rows = draw(sum(train_sizes) + len(train_sizes) * args.downstream_test)
  for predictor, fn in (("logistic_regression", dl["utils"].logistic_regression_cv),
                        ("boosted_trees", dl["utils"].gradient_boosting_classifier)):
    gin.bind_parameter("predictor.predictor_fn", fn)
    ref = dl["downstream_task"].compute_downstream_task(
        ReplayFactors(sizes, rows, None), ident, np.random.RandomState(0),
        num_train=train_sizes, num_test=args.downstream_test)
    ours, at = {}, 0
    for t in train_sizes:
      tr, te = rows[at:at + t], rows[at + t:at + t + args.downstream_test]
      at += t + args.downstream_test
      obs = ReplayFactors.observations
      ours.update(downstream.downstream_from_codes(obs(tr), tr, obs(te), te,
                                                   predictors=(predictor,),
                                                   random_state=0)[predictor])
    worst[f"downstream_{predictor}"] = max(abs(ours[k] - float(ref[k])) for k in ref)
    worst[f"downstream_{predictor}_keys_equal"] = float(set(ours) == set(ref))
  gin.bind_parameter("predictor.predictor_fn", dl["utils"].gradient_boosting_classifier)
  train_rows = draw(args.fairness_train)
  factor_rows = draw(len(sizes) * (len(sizes) - 1) * args.fairness_per_class)
  ref = dl["fairness"].compute_fairness(
      ReplayFactors(sizes, train_rows, factor_rows), ident, np.random.RandomState(0),
      num_train=args.fairness_train, num_test_points_per_class=args.fairness_per_class)
  ours = fairness.fairness(ident, ReplayFactors(sizes, train_rows, factor_rows),
                           np.random.default_rng(0), num_train=args.fairness_train,
                           num_test_points_per_class=args.fairness_per_class, random_state=0)
  worst["fairness"] = max(abs(ours[k] - float(ref[k])) for k in ref)
  worst["fairness_keys_equal"] = float(set(ours) == set(ref))
  worst["fairness_mean_pred_mean_sens"] = float(ours["mean_fairness:mean_pred:mean_sens"])
  return worst


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dlib", default=MIRROR, help="disentanglement_lib's git repository")
  p.add_argument("--train", type=int, default=10000, help="training points (dlib's 10,000)")
  p.add_argument("--test", type=int, default=5000, help="test points (dlib's 5,000)")
  p.add_argument("--udr_models", type=int, default=5)
  p.add_argument("--udr_points", type=int, default=1000, help="dlib's UDR study: 1,000")
  p.add_argument("--downstream_sizes", default="10,100,1000",
                 help="training sizes (dlib's: 10,100,1000,10000)")
  p.add_argument("--downstream_test", type=int, default=1000, help="dlib's: 5,000")
  p.add_argument("--fairness_train", type=int, default=1000, help="dlib's: 10,000")
  p.add_argument("--fairness_per_class", type=int, default=20, help="dlib's: 100")
  p.add_argument("--only_new", action="store_true",
                 help="skip the eight scores, compare UDR, downstream and fairness only")
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as where:
    dl = load_dlib(args.dlib, where)
    rng = np.random.default_rng(0)
    rows, worst, values = [], {}, {}
    for name in (() if args.only_new else ("random", "structured", "integer")):
      z, y = case(name, args.train + args.test, rng)
      split = z[:args.train], y[:args.train], z[args.train:], y[args.train:]
      ref, ours = dlib_scores(dl, *split), vaelab_scores(*split)
      values[name] = {"dlib": ref, "vaelab": {k: ours[k] for k in ref}}
      for key in ref:
        diff = abs(ours[key] - ref[key])
        worst[key] = max(worst.get(key, 0.0), diff)
        rows.append([f"{name}: {key}", f"{ref[key]:.10f}", f"{ours[key]:.10f}", f"{diff:.1e}"])
    new = compare_udr(dl, *udr_case(args.udr_models, args.udr_points, rng))
    new.update(compare_downstream_fairness(dl, args, rng))
  if rows:
    common.print_table(["case: score", "disentanglement_lib", "vaelab", "|diff|"], rows,
                       title=f"{args.train} training, {args.test} test points")
  common.print_table(["UDR / downstream / fairness", "largest |diff| (or check)"],
                     [[k, f"{v:.2e}"] for k, v in new.items()],
                     title=f"UDR: {args.udr_models} models, {args.udr_points} points; downstream "
                           f"sizes {args.downstream_sizes}, test {args.downstream_test}; "
                           f"fairness {args.fairness_train} / {args.fairness_per_class}")
  if worst:
    common.print_table(["score", "largest |diff|"], [[k, f"{v:.2e}"] for k, v in worst.items()])
  print(json.dumps({"experiment": "compare_dlib_scores", "train": args.train, "test": args.test,
                    "max_abs_diff": worst, "new_scores": new, "scores": values}))


if __name__ == "__main__":
  main()
