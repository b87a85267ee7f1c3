"""Batches: examples (not batches) shuffled per epoch, exact resumption, each example evaluated once,
disjoint per-process shards."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lra.data import pipeline


class Numbers:
  """Example i: inputs [i, i, i], targets i."""

  def __init__(self, size):
    self.size = size

  def __len__(self):
    return self.size

  def __getitem__(self, index):
    return {"inputs": np.full(3, index, np.int32), "targets": np.asarray(index, np.int32)}


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _train(size=64, batch=8, seed=0, **kwargs):
  return pipeline.make_batches(Numbers(size), global_batch_size=batch, seed=seed, shuffle=True,
                               repeat=True, **kwargs)


def test_examples_are_shuffled_and_regrouped_every_epoch():
  batches = [b["targets"].tolist() for b in _take(_train(), 24)]
  epochs = [batches[i:i + 8] for i in range(0, 24, 8)]
  for epoch in epochs:
    assert sorted(sum(epoch, [])) == list(range(64))  # each epoch: every example once
  groups = [{frozenset(b) for b in epoch} for epoch in epochs]
  assert groups[0] != groups[1] and groups[1] != groups[2]  # batches are not reshuffled units
  assert sum(epochs[0], []) != list(range(64))
  first = _take(_train(), 1)[0]
  assert first["inputs"].shape == (8, 3) and first["inputs"].dtype == np.int32
  assert first["targets"].dtype == np.int32 and first["weights"].tolist() == [1.0] * 8


def test_order_is_set_by_the_seed():
  same = [[b["targets"].tolist() for b in _take(_train(seed=s), 3)] for s in (1, 1, 2)]
  assert same[0] == same[1] != same[2]


def test_resumes_exactly_from_a_saved_state():
  iterator = _train(size=20, batch=4)
  _take(iterator, 5)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 3)
  resumed = _train(size=20, batch=4)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 3)):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_refuses_a_state_from_other_settings():
  state = _train(size=20, batch=4).get_state()
  with pytest.raises(ValueError, match="cannot resume"):
    _train(size=20, batch=8).set_state(state)


def _evaluation(size, batch, process_index=0, process_count=1):
  return list(pipeline.make_batches(Numbers(size), global_batch_size=batch, seed=0, shuffle=False,
                                    repeat=False, drop_remainder=False,
                                    process_index=process_index, process_count=process_count))


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_evaluation_covers_every_example_once(process_count):
  per_process = [_evaluation(21, 8, p, process_count) for p in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1  # same number of steps everywhere
  real = []
  for batches in per_process:
    for batch in batches:
      assert batch["inputs"].shape == (8 // process_count, 3)
      real += batch["targets"][batch["weights"] == 1].tolist()
  assert sorted(real) == list(range(21))
  assert sum(b["weights"].sum() for batches in per_process for b in batches) == 21


def test_padded_evaluation_batch_split_over_eight_devices_counts_each_example_once():
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  total, count = 0.0, 0.0
  for batch in _evaluation(21, 16):
    weights = jax.device_put(batch["weights"], sharding)
    targets = jax.device_put(batch["targets"], sharding)
    total += float(jnp.sum(targets * weights))
    count += float(jnp.sum(weights))
  assert (count, total) == (21, sum(range(21)))


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_read_disjoint_rows_of_the_same_global_batches(process_count):
  single = [b["targets"] for b in _take(_train(size=30, batch=8), 10)]
  shards = [[b["targets"] for b in _take(_train(size=30, batch=8, process_index=p,
                                                process_count=process_count), 10)]
            for p in range(process_count)]
  for step, global_batch in enumerate(single):
    rows = [shard[step] for shard in shards]
    assert all(len(r) == 8 // process_count for r in rows)
    assert np.array_equal(np.concatenate(rows), global_batch)
  per_process = [set(np.concatenate(shard[:3]).tolist()) for shard in shards]
  assert all(a.isdisjoint(b) for i, a in enumerate(per_process) for b in per_process[i + 1:])


def test_batch_size_must_split_over_processes():
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    _train(batch=8, process_count=3)
