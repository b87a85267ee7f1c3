"""`load_task`: the registry of tasks, their options, and sources that grain and the pipeline take."""

import grain
import numpy as np
import pytest

from lra import data
from lra.data import listops, pipeline


def test_unknown_task_lists_the_valid_names():
  with pytest.raises(ValueError) as error:
    data.load_task("cifar", data_dir="/nonexistent", max_length=8)
  for name in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
    assert name in str(error.value)
  assert data.names() == ["listops", "text", "retrieval", "image", "pathfinder", "pathx", "lm"]


def test_unknown_option_lists_the_task_options():
  with pytest.raises(ValueError, match=r"no option\(s\) \['vocab'\].*\['parentheses'\]"):
    data.load_task("listops", data_dir="/nonexistent", max_length=8, vocab="x")


def test_sources_feed_grain_and_the_pipeline(tmp_path):
  listops.generate(tmp_path, num_train=12, num_val=3, num_test=3, seed=0, min_length=10,
                   max_length=40)
  task = data.load_task("listops", data_dir=str(tmp_path), max_length=40)
  source = task.splits["train"]
  assert np.array_equal(grain.MapDataset.source(source)[5]["inputs"], source[5]["inputs"])
  batch = next(pipeline.make_batches(source, global_batch_size=4, seed=0, shuffle=True,
                                     repeat=True))
  assert batch["inputs"].shape == (4, 40) and batch["targets"].shape == (4,)
  assert np.all(batch["inputs"] < task.vocab_size) and np.all(batch["targets"] < task.num_classes)
