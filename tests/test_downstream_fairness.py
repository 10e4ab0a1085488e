"""The downstream task and unfairness scores against independent transcriptions of
disentanglement_lib's compute_downstream_task (evaluation/metrics/downstream_task.py) and
compute_fairness (evaluation/metrics/fairness.py), with sklearn's own classifiers, on the
same draws; and their place in scores() and the config."""
import numpy as np
import pytest
from sklearn import ensemble, linear_model, model_selection
from threadpoolctl import threadpool_limits

from vaelab.errors import ConfigError
from vaelab.evaluate import disentanglement as dis
from vaelab.evaluate.disentanglement import downstream, fairness

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning",
                                        "ignore::sklearn.exceptions.ConvergenceWarning",
                                        "ignore:The number of unique classes:UserWarning")

SIZES = (1, 3, 4, 5)  # factor 0 never varies, as dSprites' color
KEEP = [1, 2, 3]


def render(f):
  f = np.asarray(f, np.float64)
  # Deterministic per factor vector, entangled and partly lost, so no predictor is perfect.
  wobble = np.sin(7.3 * f[:, 1] + 3.1 * f[:, 2] + 1.7 * f[:, 3])
  other = np.cos(2.9 * f[:, 1] + 5.3 * f[:, 2] + 0.7 * f[:, 3])
  return np.stack([f[:, 1] + 0.8 * wobble, f[:, 2] + f[:, 3] + 0.9 * other,
                   f[:, 2] - f[:, 3] + 0.9 * wobble, 0.3 * wobble], axis=1).astype(np.float32)


def ground_truth():
  return dis.ProceduralGroundTruth(render, SIZES)


def represent(x):
  return np.asarray(x, np.float64) * np.array([1.0, 0.5, 2.0, 1.5])


def dlib_downstream(gt, rng, train_sizes, num_test, predictor):
  """dlib's loop: per size a training and a test sample, one predictor per factor, its
  accuracies under dlib's keys (draws in vaelab's order: the two samples, the seed)."""
  scores = {}
  for size in train_sizes:
    f_train, x_train = gt.sample(size, rng)
    f_test, x_test = gt.sample(num_test, rng)
    seed = int(rng.integers(2**31 - 1))
    mus_train, mus_test = represent(x_train), represent(x_test)
    train_acc, test_acc = [], []
    for k in KEEP:
      if predictor == "logistic_regression":
        model = linear_model.LogisticRegressionCV(Cs=10, cv=model_selection.KFold(n_splits=5))
      else:
        model = ensemble.GradientBoostingClassifier(random_state=seed)
      model.fit(mus_train, f_train[:, k])
      train_acc.append(np.mean(model.predict(mus_train) == f_train[:, k]))
      test_acc.append(np.mean(model.predict(mus_test) == f_test[:, k]))
    t = str(size)
    scores[t + ":mean_train_accuracy"] = np.mean(train_acc)
    scores[t + ":mean_test_accuracy"] = np.mean(test_acc)
    scores[t + ":min_train_accuracy"] = np.min(train_acc)
    scores[t + ":min_test_accuracy"] = np.min(test_acc)
    for i in range(len(train_acc)):
      scores[t + ":train_accuracy_factor_{}".format(i)] = train_acc[i]
      scores[t + ":test_accuracy_factor_{}".format(i)] = test_acc[i]
  return scores


def dlib_inter_group_fairness(counts):
  overall = np.sum(counts, axis=1, dtype=np.float32)
  overall /= overall.sum()
  normalized = np.array(counts, dtype=np.float32)
  per_class = np.sum(counts, axis=0)
  normalized /= np.expand_dims(per_class, 0)
  tv = np.sum(np.abs(normalized - np.expand_dims(overall, 1)), 0) / 2.
  mean = tv * per_class
  mean /= per_class.sum()
  return np.sum(mean), np.amax(tv)


def dlib_scores_dict(metric, prefix):
  result = {}
  for i in range(metric.shape[0]):
    for j in range(metric.shape[1]):
      if i != j:
        result["{}:pred{}:sens{}".format(prefix, i, j)] = metric[i, j]
  rows_means, rows_maxs, column_means, column_maxs = [], [], [], []
  for i in range(metric.shape[0]):
    rel = [metric[i, j] for j in range(metric.shape[1]) if i != j]
    result["{}:pred{}:mean_sens".format(prefix, i)] = np.mean(rel)
    result["{}:pred{}:max_sens".format(prefix, i)] = np.amax(rel)
    rows_means.append(np.mean(rel))
    rows_maxs.append(np.amax(rel))
  for j in range(metric.shape[1]):
    rel = [metric[i, j] for i in range(metric.shape[0]) if i != j]
    result["{}:sens{}:mean_pred".format(prefix, j)] = np.mean(rel)
    result["{}:sens{}:max_pred".format(prefix, j)] = np.amax(rel)
    column_means.append(np.mean(rel))
    column_maxs.append(np.amax(rel))
  result[prefix + ":mean_sens:mean_pred"] = np.mean(column_means)
  result[prefix + ":mean_sens:max_pred"] = np.mean(column_maxs)
  result[prefix + ":max_sens:mean_pred"] = np.amax(column_means)
  result[prefix + ":max_sens:max_pred"] = np.amax(column_maxs)
  result[prefix + ":mean_pred:mean_sens"] = np.mean(rows_means)
  result[prefix + ":mean_pred:max_sens"] = np.mean(rows_maxs)
  result[prefix + ":max_pred:mean_sens"] = np.amax(rows_means)
  result[prefix + ":max_pred:max_sens"] = np.amax(rows_maxs)
  return result


def dlib_fairness(gt, rng, num_train, per_class):
  """dlib's compute_fairness: one boosted-trees model per factor, then per (target i,
  sensitive j) one set of factor vectors with j set to each value in turn."""
  f_train, x_train = gt.sample(num_train, rng)
  seed = int(rng.integers(2**31 - 1))
  mus = represent(x_train)
  counts_of = [SIZES[k] for k in KEEP]
  n = len(KEEP)
  mean_f, max_f = np.zeros((n, n)), np.zeros((n, n))
  for i in range(n):
    model = ensemble.GradientBoostingClassifier(random_state=seed).fit(mus, f_train[:, KEEP[i]])
    for j in range(n):
      if i == j:
        continue
      original = gt.sample_factors(per_class, rng)
      counts = np.zeros((counts_of[i], counts_of[j]), dtype=np.int64)
      for c in range(counts_of[j]):
        intervened = np.copy(original)
        intervened[:, KEEP[j]] = c
        predictions = model.predict(represent(gt.observations(intervened)))
        counts[:, c] = np.bincount(predictions, minlength=counts_of[i])
      mean_f[i, j], max_f[i, j] = dlib_inter_group_fairness(counts)
  out = dlib_scores_dict(mean_f, "mean_fairness")
  out.update(dlib_scores_dict(max_f, "max_fairness"))
  return out


def assert_same(got, want):
  assert set(got) == set(want)
  np.testing.assert_allclose([got[k] for k in sorted(want)], [want[k] for k in sorted(want)],
                             rtol=0, atol=1e-12)


@pytest.mark.parametrize("predictor", downstream.PREDICTORS)
def test_downstream_equals_dlib(predictor):
  got = downstream.downstream_task(represent, ground_truth(), np.random.default_rng(0),
                                   train_sizes=(10, 60), num_test=80, predictors=(predictor,),
                                   represent_batch_size=32)
  with threadpool_limits(1):  # OpenBLAS's threads spin against each other under load
    want = dlib_downstream(ground_truth(), np.random.default_rng(0), (10, 60), 80, predictor)
  assert_same(got[predictor], want)
  assert len(got[predictor]) == 2 * (4 + 2 * len(KEEP))
  assert 0.4 < got[predictor]["60:mean_test_accuracy"] < 1.0  # informative, not perfect


def test_fairness_equals_dlib():
  got = fairness.fairness(represent, ground_truth(), np.random.default_rng(1), num_train=90,
                          num_test_points_per_class=7, represent_batch_size=32)
  with threadpool_limits(1):
    want = dlib_fairness(ground_truth(), np.random.default_rng(1), 90, 7)
  assert_same(got, want)
  n = len(KEEP)
  assert len(got) == 2 * (n * (n - 1) + 4 * n + 8)
  assert 0 < got["mean_fairness:mean_pred:mean_sens"] < got["max_fairness:mean_pred:mean_sens"]


def test_fairness_parts_against_dlib_on_random_counts():
  rng = np.random.default_rng(2)
  for shape in [(3, 4), (2, 2), (40, 6)]:
    counts = rng.integers(0, 20, size=shape)
    counts[:, 0] += 1  # every sensitive value has predictions
    np.testing.assert_allclose(fairness.inter_group_fairness(counts),
                               dlib_inter_group_fairness(counts), rtol=0, atol=0)
  matrix = rng.uniform(size=(5, 5))
  assert_same(fairness.aggregate(matrix, "mean_fairness"),
              dlib_scores_dict(matrix, "mean_fairness"))
  # Predictions that ignore the sensitive value are fair.
  assert fairness.inter_group_fairness(np.array([[5, 5], [3, 3]])) == (0.0, 0.0)


def test_scaled_sizes():
  assert downstream.scaled_train_sizes(10000) == (10, 100, 1000, 10000)
  assert downstream.scaled_train_sizes(1000) == (10, 100, 1000)
  assert downstream.scaled_train_sizes(200) == (10, 20, 200)
  assert fairness.scaled_points_per_class(5000) == 100
  assert fairness.scaled_points_per_class(500) == 10
  assert fairness.scaled_points_per_class(10) == 1


def test_in_scores_and_the_config():
  gt = ground_truth()
  sizes = {"num_train": 60, "num_eval": 40, "represent_batch_size": 32}
  base = dis.disentanglement_metrics(represent, gt, np.random.default_rng(3), sizes,
                                     metrics=("mig", "sap"))
  out = dis.disentanglement_metrics(represent, gt, np.random.default_rng(3), sizes,
                                    metrics=("mig", "sap", "downstream", "fairness"))
  for k in base:  # the new metrics leave the others' draws as they were
    assert out[k] == base[k]
  assert "eval/downstream_logistic_regression_10_mean_test_accuracy" in out
  assert "eval/downstream_boosted_trees_60_test_accuracy_factor_2" in out
  assert "eval/fairness_mean_fairness_mean_pred_mean_sens" in out
  assert not any(":" in k for k in out)
  # The structured result holds dlib's own keys; the sampled path equals the module's.
  s = dis.scores(represent=represent, ground_truth=gt, rng=3, sizes=sizes,
                 metrics=("downstream",), downstream_predictors=("logistic_regression",))
  r = np.random.default_rng(3).spawn(len(dis.ALL_METRICS))[dis.ALL_METRICS.index("downstream")]
  want = downstream.downstream_task(represent, gt, r, train_sizes=(10, 60), num_test=40,
                                    predictors=("logistic_regression",),
                                    represent_batch_size=32)
  assert s.downstream == want
  # Fixed codes: one training size, the training rows.
  f, x = gt.sample(200, np.random.default_rng(4))
  fixed = dis.scores(codes=represent(x), factors=f, metrics=("downstream",),
                     downstream_predictors=("logistic_regression",)).as_dict()
  assert "downstream_logistic_regression_133_mean_test_accuracy" in fixed
  # Names in the config; anything else is refused naming the key.
  config = type("C", (), {})()
  config.eval = type("E", (), {"disentanglement_metrics": ("mig", "downstream", "fairness")})()
  assert dis.configured_metrics(config) == ("mig", "downstream", "fairness")
  config.eval.disentanglement_metrics = ("fair",)
  with pytest.raises(ConfigError, match="eval.disentanglement_metrics"):
    dis.configured_metrics(config)
  assert "downstream" not in dis.METRICS and "fairness" not in dis.METRICS  # not default


def test_population_members_score_as_alone():
  # A population draws and renders once; each member's scores are its scores alone.
  gt = ground_truth()
  other = lambda x: represent(x)[:, ::-1] * np.array([1.0, -2.0, 0.5, 3.0])
  kwargs = {"metrics": ("downstream", "fairness"), "downstream_predictors":
            ("logistic_regression",),
            "sizes": {"num_train": 40, "num_eval": 30, "represent_batch_size": 16}}
  both = dis.member_scores(lambda x: np.stack([represent(x), other(x)]), 2, ground_truth=gt,
                           seed=7, **kwargs)
  for member, fn in zip(both, (represent, other)):
    alone = dis.scores(represent=fn, ground_truth=gt, rng=7, **kwargs)
    assert member.as_dict() == alone.as_dict()
  assert both[0].as_dict() != both[1].as_dict()


def test_boosted_trees_are_sklearns_on_small_many_class_samples():
  # 50 points of dSprites-sized factors (up to 40 classes) with tied codes: where DCI's
  # faster replay of the trees (gbt) has split differently from sklearn's.
  sizes = np.array((3, 6, 40, 32, 32))

  def codes(f):
    z = f / sizes
    z[:, 0] += 0.5 * np.sin(1.3 * f @ np.arange(1.0, 6))
    z[:, -1] += z[:, -2]
    return z

  rng = np.random.default_rng(5)
  rng.integers(0, 2, 1)
  f, f_test = (np.stack([rng.integers(0, s, n) for s in sizes], 1) for n in (50, 200))
  train, test = downstream.accuracies("boosted_trees", codes(f), f, codes(f_test), f_test, 0)
  for k in range(5):
    model = ensemble.GradientBoostingClassifier(random_state=0).fit(codes(f), f[:, k])
    assert train[k] == np.mean(model.predict(codes(f)) == f[:, k])
    assert test[k] == np.mean(model.predict(codes(f_test)) == f_test[:, k])
