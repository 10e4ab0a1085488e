"""Batches as a pure function of (seed, step); binarization; evaluation coverage."""
import jax.numpy as jnp
import numpy as np
import pytest

from vaelab.data import binarize as binarize_lib
from vaelab.data import pipeline
from vaelab.data.base import InMemorySource
from vaelab.train.step import example_keys


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
