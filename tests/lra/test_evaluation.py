"""Evaluation over a large split on 8 devices: no cross-device collective in the step, and the same
totals as on one device."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from lra import config_lib, parallelism, train
from lra.data import sources

NUM_EXAMPLES, LENGTH = 3001, 256  # 376 batches of 8, the last one padded


@pytest.fixture(scope="module")
def setup():
  config = config_lib.load("configs/listops.py", "rfa_gaussian")
  config_lib.override(config, {"batch_size": 8, "max_length": LENGTH, "model.num_layers": 1,
                               "model.emb_dim": 16, "model.num_heads": 2, "model.qkv_dim": 16,
                               "model.mlp_dim": 16, "model.attention_options.num_features": 8})
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, LENGTH + 1, NUM_EXAMPLES)
  sequences = sources.Ragged([rng.integers(1, 16, n).astype(np.uint8) for n in lengths])
  source = sources.SequenceSource(sequences, {"inputs": np.arange(NUM_EXAMPLES)},
                                  rng.integers(0, 10, NUM_EXAMPLES), max_length=LENGTH, shift=0)
  model_args = dict(vocab_size=20, num_classes=10, dual=False, has_padding=True)
  return config, source, model_args


def _evaluate(setup, devices):
  config, source, model_args = setup
  mesh = Mesh(np.asarray(devices), (parallelism.DATA_AXIS,))
  state, steps = train.init_training(config, mesh, **model_args)
  return train.evaluate(steps, state, source, config, mesh)


def test_the_evaluation_step_has_no_cross_device_collective(setup):
  config, _, model_args = setup
  mesh = parallelism.data_mesh()
  state, steps = train.init_training(config, mesh, **model_args)
  batch = {"inputs": np.zeros((8, LENGTH), np.int32), "targets": np.zeros(8, np.int32),
           "weights": np.ones(8, np.float32)}
  hlo = steps.evaluate.lower(state, parallelism.global_batch(batch, mesh)).compile().as_text()
  for collective in ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all"):
    assert collective not in hlo


def test_a_large_split_on_eight_devices_matches_one_device(setup):
  assert jax.device_count() == 8
  eight = _evaluate(setup, jax.devices())
  one = _evaluate(setup, jax.devices()[:1])
  assert eight["num_examples"] == one["num_examples"] == NUM_EXAMPLES
  np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
  assert eight["accuracy"] == one["accuracy"]
