"""Every task trains from tiny files in its official format, and every registered attention
mechanism takes training steps on every kind of task input, in float32 and bfloat16."""

import contextlib
import json
import pathlib

import jax
import numpy as np
import pytest

import fixtures
from lra import attention, parallelism, train
from lra.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
# Tokens per example (per document for retrieval); the image tasks have one token per pixel.
LENGTHS = {"listops": 32, "text": 32, "retrieval": 32, "image": 32 * 32, "pathfinder": 32 * 32,
           "pathx": 128 * 128}
NUM_CIFAR10 = 10  # mocked examples per split: 9 train, 1 validation, 10 test
WRITERS = {
    "listops": fixtures.write_listops,  # 2 examples per split
    "text": fixtures.write_aclimdb,  # 18 train, 2 validation, 20 test
    "retrieval": fixtures.write_aan,  # 3 pairs per split
    "image": lambda data_dir: None,  # tensorflow-datasets, mocked
    "pathfinder": lambda data_dir: fixtures.write_pathfinder(data_dir, 32, num_images=20,
                                                             empty=None),  # 16, 2, 2
    "pathx": lambda data_dir: fixtures.write_pathfinder(data_dir, 128, num_images=10,
                                                        empty=None),  # 8, 1, 1
}
NUM_TEST = {"listops": 2, "text": 20, "retrieval": 3, "image": NUM_CIFAR10, "pathfinder": 2,
            "pathx": 1}
TINY = {
    "batch_size": 8, "num_train_steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1,
    "warmup_steps": 1,
}
# Options that give every structured path (several blocks, chunks, landmarks) at 33 tokens
# (32 + CLS, which no block size divides); the defaults otherwise.
SMALL_OPTIONS = {
    "bigbird": dict(block_size=4, num_random_blocks=2),
    "linformer": dict(low_rank_features=8),
    "local": dict(block_size=8),
    "longformer": dict(window=8),
    "nystromformer": dict(num_landmarks=8),
    "performer": dict(num_features=16),
    "reformer": dict(num_hashes=2, num_buckets=4, chunk_size=4),
    "rfa_arccos": dict(num_features=16),
    "rfa_gaussian": dict(num_features=16),
    "sinkhorn": dict(block_size=8),
    "sliding_window": dict(window=8),
    "sparse": dict(block_size=8, summary_size=3),
}


def tiny_config(task, name, **overrides):
  """The task's config with a one-layer 16-wide model, 2 steps and `name`'s small options;
  `overrides`: dotted keys to values."""
  settings = {**TINY, **{f"model.attention_options.{key}": value
                         for key, value in SMALL_OPTIONS.get(name, {}).items()},
              "max_length": LENGTHS[task], **overrides}
  config = fixtures.tiny_config(task, name, **settings)
  if task == "text":
    config.task_options.source = "aclimdb"
  return config


def reading(task):
  """The context in which the task's data can be read."""
  return fixtures.mock_tfds(NUM_CIFAR10) if task == "image" else contextlib.nullcontext()


@pytest.fixture(scope="module", autouse=True)
def cheap_compilation():
  """XLA's least optimising compilation: every test compiles new steps and runs them a few times.
  Nothing compiled this way outlives the module."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
  jax.clear_caches()


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
  """Each task's tiny data set, written once."""
  dirs = {task: tmp_path_factory.mktemp(task) for task in TASKS}
  for task, data_dir in dirs.items():
    WRITERS[task](data_dir)
  return dirs


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_task_trains_and_tests_from_its_files(task, data_dirs, tmp_path):
  config = tiny_config(task, "rfa_gaussian", data_dir=str(data_dirs[task]))
  with reading(task):
    train.train_and_evaluate(config, tmp_path)
  results = json.loads((tmp_path / "results.json").read_text())
  assert np.isfinite(results["test_loss"]) and 0 <= results["test_accuracy"] <= 1
  assert results["num_test_examples"] == NUM_TEST[task]
  assert results["best_step"] == 2 and results["config"]["task"] == task


# The grid's rows are the two kinds of input a mechanism meets through the registry's one call
# `module(x, mask)`: short padded token sequences (ListOps, in bfloat16; text and each retrieval
# tower have the same shape) and 1024 tokens without padding (image, in float32; Pathfinder-32 and
# Path-X's model at 1024 tokens have the same shape). Each task's own model and reader train end to
# end above.
GRID_DATA = {"listops": ("listops", LENGTHS["listops"]), "image": ("image", LENGTHS["image"])}
GRID_DTYPES = {"listops": "bfloat16"}


@pytest.fixture(scope="module", params=GRID_DATA)
def task_inputs(request, data_dirs):
  """(task, tokens per example, the TaskData read, two global training batches of 8), read once
  per task."""
  task = request.param
  data_task, length = GRID_DATA[task]
  with reading(data_task):
    data = train.load_data(tiny_config(data_task, "softmax", data_dir=str(data_dirs[data_task])))
    batches = pipeline.make_batches(data.splits["train"], global_batch_size=8, seed=0,
                                    shuffle=True, repeat=True)
    local_batches = [next(batches) for _ in range(2)]
  mesh = parallelism.data_mesh()
  return task, length, data, [parallelism.global_batch(b, mesh) for b in local_batches]


@pytest.mark.parametrize("name", attention.names())
def test_every_attention_trains_on_every_kind_of_input(task_inputs, name):
  """Two steps of every mechanism; in bfloat16 (ListOps) parameters, gradients' updates and the
  optimiser state stay float32."""
  task, length, data, batches = task_inputs
  config = tiny_config(task, name, max_length=length, dtype=GRID_DTYPES.get(task, "float32"))
  state, steps = train.init_training(
      config, parallelism.data_mesh(), vocab_size=data.vocab_size, num_classes=data.num_classes,
      dual=data.dual, has_padding=data.has_padding)
  initial = jax.device_get(state["params"])
  losses = []
  for batch in batches:
    state, metrics = steps.train(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  before = jax.tree_util.tree_flatten_with_path(initial)[0]
  after = jax.tree.leaves(jax.device_get(state["params"]))
  unchanged = [jax.tree_util.keystr(path) for (path, old), new in zip(before, after)
               if np.array_equal(old, new)]
  assert not unchanged, f"parameters that did not train: {unchanged}"
  floating = [x for x in jax.tree.leaves((state["params"], state["opt_state"]))
              if np.issubdtype(x.dtype, np.floating)]
  assert all(x.dtype == np.float32 for x in floating)
