"""Batches as a pure function of (seed, step); the device path equal to the host path;
binarization; evaluation coverage."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab import spmd
from vaelab import spmd as binarize_lib
from vaelab.data import pipeline
from vaelab.data.base import InMemorySource, SubsetSource
from vaelab.errors import ConfigError
from vaelab.spmd import example_keys


def _source(n=50):
  img = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
  return InMemorySource("ids", img, label=np.arange(n))


def test_each_epoch_is_a_permutation_and_batches_cross_epochs():
  src = _source(50)
  b = pipeline.Batcher(src, 8, seed=3)
  seen = np.concatenate([b.indices(s) for s in range(25)])  # 200 examples = 4 epochs
  for e in range(4):
    assert sorted(seen[50 * e:50 * (e + 1)]) == list(range(50))
  assert not np.array_equal(seen[:50], seen[50:100])  # reshuffled each epoch


def test_batches_depend_only_on_seed_and_step():
  src = _source()
  a, b = pipeline.Batcher(src, 8, seed=1), pipeline.Batcher(src, 8, seed=1)
  for s in (0, 7, 3):  # a fresh batcher jumping straight to a step (as on resume)
    np.testing.assert_array_equal(a.indices(s), b.indices(s))
  assert not np.array_equal(pipeline.Batcher(src, 8, seed=2).indices(0), a.indices(0))
  batch = a.batch(2)
  np.testing.assert_array_equal(batch["label"], a.indices(2))
  np.testing.assert_allclose(batch["image"][:, 0, 0, 0], a.indices(2) / 255.0)
  np.testing.assert_array_equal(batch["index"], np.arange(8))


def test_processes_split_the_global_batch():
  src = _source()
  whole = pipeline.Batcher(src, 8, seed=0).batch(5)
  parts = [pipeline.Batcher(src, 8, seed=0, process_index=i, process_count=2).batch(5)
           for i in range(2)]
  for k in ("image", "label", "index"):
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_eval_batches_cover_the_split_once_with_a_mask():
  src = _source(23)
  batches = list(pipeline.eval_batches(src, 10))
  assert len(batches) == 3
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert mask.sum() == 23
  np.testing.assert_array_equal(labels[mask > 0], np.arange(23))


def test_prefetch_preserves_order_and_raises_errors():
  assert list(pipeline.prefetch(iter(range(10)))) == list(range(10))

  def broken():
    yield 1
    raise ValueError("bad batch")

  it = pipeline.prefetch(broken())
  assert next(it) == 1
  with pytest.raises(ValueError, match="bad batch"):
    next(it)


def test_binarize_modes():
  x = jnp.full((2000, 4, 4, 1), 0.3)
  keys = example_keys(0, 0, jnp.arange(2000))
  assert binarize_lib.binarize("none", x, keys) is x
  np.testing.assert_array_equal(binarize_lib.binarize("threshold", x, keys), 0.0)
  d = binarize_lib.binarize("dynamic", x, keys)
  assert set(np.unique(d)) <= {0.0, 1.0}
  assert abs(float(d.mean()) - 0.3) < 0.01  # E[pixel] = intensity
  # Fresh pixels for a different step, identical for the same keys.
  d2 = binarize_lib.binarize("dynamic", x, example_keys(0, 1, jnp.arange(2000)))
  assert not np.array_equal(d, d2)
  np.testing.assert_array_equal(d, binarize_lib.binarize("dynamic", x, keys))


def _assert_same(a: dict, b: dict):
  assert a.keys() == b.keys()
  for k in a:
    assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("kind", ["uint8", "float", "subset"])
def test_device_batches_are_the_host_batches_bitwise(kind):
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (37, 3, 3, 1), np.uint8)
  src = InMemorySource("ids", img if kind != "float" else img / 255.0, label=np.arange(37))
  if kind == "subset":
    src = SubsetSource(src, rng.permutation(37)[:29])
  mesh = spmd.make_mesh()
  form = pipeline.device_form(src, "device", 8)
  batcher = pipeline.Batcher(src, 8, seed=4)
  feed = pipeline.DeviceFeed([batcher], form, mesh)
  # 40 steps = 320 positions: epoch boundaries inside a step, at step starts, tables swapped.
  for s in list(range(40)) + [3, 100]:  # also a jump back (a resumed run starts anywhere)
    _assert_same(jax.device_get(feed.batch(s)), batcher.batch(s))
  evals = pipeline.DeviceEvalFeed(pipeline.device_form(src, "device"), len(src), 10, mesh)
  for a, b in zip(evals.batches(), pipeline.eval_batches(src, 10), strict=True):
    _assert_same(jax.device_get(a), b)


def test_members_batches_on_the_device_are_their_own():
  src = InMemorySource("ids", np.arange(20, dtype=np.uint8)[:, None, None, None],
                       label=np.arange(20))
  batchers = [pipeline.Batcher(src, 4, seed=s) for s in (0, 1, 0)]
  form, mesh = pipeline.device_form(src, "device", 4), spmd.make_mesh()
  stacked = pipeline.DeviceFeed(batchers, form, mesh, stacked=True)
  per_member = pipeline.DeviceFeed(batchers, form, mesh, per_member=True)
  for s in (0, 6, 11):
    both = jax.device_get(stacked.batch(s))
    batches = per_member.batch(s)
    assert batches[2] is batches[0] and batches[1] is not batches[0]  # made once per seed
    for m, (b, alone) in enumerate(zip(batchers, jax.device_get(batches))):
      _assert_same(alone, b.batch(s))
      _assert_same({k: v[m] for k, v in both.items()}, b.batch(s))


@pytest.mark.parametrize("family,binarize", [("ae", "none"), ("vae", "dynamic")])
def test_a_run_on_the_device_path_is_the_host_path_run_bitwise(npz_pair, family, binarize):
  """The device path compiles its gather into the train step (one program per step): the
  run's losses and parameters are still bitwise those of the host path's separate batches."""
  from conftest import tiny_config
  from vaelab.training import loop
  runs = []
  for placement in ("host", "device"):
    c = tiny_config(family, *npz_pair, num_train_steps=6, **{
        "data.placement": placement, "data.binarize": binarize})
    exp, state, _, history = loop.train(c, None, evaluate=False)
    assert (exp.train_form is None) == (placement == "host")
    runs.append((state.params, [h["train/loss"] for h in history if "train/loss" in h]))
  (p_host, l_host), (p_dev, l_dev) = runs
  assert l_host == l_dev and len(l_host) == 6
  for a, b in zip(jax.tree.leaves(p_host), jax.tree.leaves(p_dev), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_placement_falls_back_to_the_host_or_refuses_naming_why():
  src = InMemorySource("ids", np.zeros((5, 2, 2, 1), np.uint8))
  assert pipeline.device_form(src, "host", 4) is None
  assert pipeline.device_form(src, "auto", 8) is None  # a step would span > 2 epochs
  with pytest.raises(ConfigError, match="batch_size=8 is larger than the 5 examples"):
    pipeline.device_form(src, "device", 8)

  class NoForm:
    name = "stream"

    def __len__(self):
      return 10

  assert pipeline.device_form(NoForm(), "auto", 4) is None
  with pytest.raises(ConfigError, match="'stream' has no device form"):
    pipeline.device_form(NoForm(), "device", 4)
