"""The causal LM task: config checks, bits per byte, stateful segments (exactness, resume, devices)."""

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh

from fixtures import records, tiny_lm_config as tiny_config, write_corpus
from lra import config_lib, parallelism, train
from lra.checkpoints import CheckpointSlot
from lra.data import lm

ROOT = pathlib.Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "text.txt")


@pytest.fixture(scope="module")
def stateful_run(corpus, tmp_path_factory):
  """One uninterrupted stateful gated-RFA run on 8 devices."""
  work = tmp_path_factory.mktemp("stateful") / "work"
  return work, train.train_and_evaluate(tiny_config(corpus), work)


def test_config_keys_presets_and_their_checks():
  config = config_lib.load(str(ROOT / "configs" / "lm.py"), "rfa_gaussian,quick,gated,stateful")
  assert config.task == "lm" and config.task_options.source == "stdlib"
  assert config.task_options.stateful and config.model.attention_options.gated
  assert config.schedule == "cosine" and "chunk_size" in config.model.attention_options
  assert not config_lib.load(str(ROOT / "configs" / "lm.py"), "softmax").task_options.stateful
  with pytest.raises(ValueError, match=r"preset\(s\) \['stateful'\] need an RFA attention"):
    config_lib.load(str(ROOT / "configs" / "lm.py"), "softmax,stateful")


def test_stateful_needs_rfa(corpus, tmp_path):
  config = tiny_config(corpus, "softmax", **{"task_options.stateful": True})
  with pytest.raises(ValueError, match="stateful=True carries RFA's attention state.*'softmax'"):
    train.train_and_evaluate(config, tmp_path)


def test_attention_without_a_causal_form_says_so(corpus, tmp_path):
  with pytest.raises(NotImplementedError, match="no causal variant"):
    train.train_and_evaluate(tiny_config(corpus, "linformer"), tmp_path)


def test_stateful_run_reports_bits_per_byte(stateful_run):
  work, results = stateful_run
  assert results["test_bits_per_byte"] == pytest.approx(results["test_loss"] / math.log(2))
  assert results["best_validation_bits_per_byte"] == min(
      r["bits_per_byte"] for r in records(work) if r["split"] == "validation")
  assert results["unigram_test_bits_per_byte"] > 0 and results["data"]["source"] == "files"
  bounds = results["data"]["splits"]["test"]
  assert results["num_test_examples"] == bounds[1] - bounds[0] - 1  # every test byte but the first
  for record in records(work):
    assert record["bits_per_byte"] == pytest.approx(record["loss"] / math.log(2))
  assert not any(key.endswith("accuracy") and key.startswith("best") for key in results)


@pytest.mark.slow
def test_stateful_run_resumes_after_an_interruption(stateful_run, corpus, tmp_path, monkeypatch):
  work, results = stateful_run
  save = CheckpointSlot.save

  def save_then_die(self, step, state, metadata):
    save(self, step, state, metadata)
    if step == 4 and "data_state" in metadata:
      raise KeyboardInterrupt("killed after the checkpoint of step 4")

  monkeypatch.setattr(CheckpointSlot, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(tiny_config(corpus), tmp_path)
  monkeypatch.setattr(CheckpointSlot, "save", save)
  resumed = train.train_and_evaluate(tiny_config(corpus), tmp_path)
  assert records(tmp_path) == records(work)
  assert resumed["test_loss"] == results["test_loss"]


def test_one_device_gives_the_eight_device_stateful_results(stateful_run, corpus, tmp_path,
                                                            monkeypatch):
  work, results = stateful_run
  monkeypatch.setattr(parallelism, "data_mesh",
                      lambda: Mesh(np.asarray(jax.devices()[:1]), (parallelism.DATA_AXIS,)))
  single = train.train_and_evaluate(tiny_config(corpus), tmp_path)
  assert single["num_devices"] == 8  # the process still sees 8; the mesh holds one
  np.testing.assert_allclose(single["test_loss"], results["test_loss"], rtol=1e-5)
  for a, b in zip(records(tmp_path), records(work)):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)


@pytest.mark.parametrize("arg", ["rfa_gaussian,gated,stateful", "rfa_arccos,stateful"])
def test_stateful_evaluation_in_segments_equals_one_causal_pass(corpus, arg):
  config = tiny_config(corpus, arg, **{"model.dropout_rate": 0.0})
  task = train.load_data(config)
  mesh = parallelism.data_mesh()
  state, steps = train.init_training(config, mesh, **train.model_args(task))
  stream = task.splits["validation"]
  segments = train.evaluate(steps, state, task.eval_batches("validation", global_batch_size=8),
                            config, mesh)
  batches = task.eval_batches("validation", global_batch_size=8)
  assert batches.num_batches > 3  # several segments per row

  model = train.build_model(config, vocab_size=256,
                            rngs=train.model_rngs(config.seed))
  nnx.update(model, jax.device_get(state["params"]))
  model.eval()
  row = math.ceil((len(stream) - 1) / 8)
  inputs = np.zeros((8, row), np.int32)
  targets, weights = np.zeros_like(inputs), np.zeros((8, row), np.float32)
  for r in range(8):  # row r predicts bytes r * row + 1 .. (r + 1) * row, in one pass
    piece = stream[r * row:(r + 1) * row + 1]
    inputs[r, :len(piece) - 1], targets[r, :len(piece) - 1] = piece[:-1], piece[1:]
    weights[r, :len(piece) - 1] = 1
  logits = model({"inputs": jnp.asarray(inputs)})  # positions repeat every max_length bytes
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(targets))
  whole = float(jnp.sum(loss * weights) / weights.sum())
  assert segments["num_examples"] == len(stream) - 1 == weights.sum()
  np.testing.assert_allclose(segments["loss"], whole, rtol=2e-5)


def test_each_set_of_streams_continues_its_own_carried_state(corpus):
  """With stream_sets=2 step t continues set t mod 2 exactly as one carried state would, and leaves
  the other set's state as it was."""
  config = tiny_config(corpus, **{"model.dropout_rate": 0.0})
  task = train.load_data(config)
  mesh = parallelism.data_mesh()
  state, steps = train.init_training(config, mesh, **train.model_args(task))
  _, sets_steps = train.init_training(tiny_config(corpus, **{"model.dropout_rate": 0.0,
                                                             "task_options.stream_sets": 2}),
                                      mesh, **train.model_args(task))
  batches = task.train_batches(global_batch_size=8, seed=0)
  first, second = (parallelism.global_batch(next(batches), mesh) for _ in range(2))
  state, _ = steps.train(state, first)  # a carried state that is not zero; step 1
  other = jax.tree.map(lambda x: x if x.ndim == 0 else x + 1.0, state["carry"])
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  sets_state = {**copy(state), "carry": jax.tree.map(
      lambda a, b: a if a.ndim == 0 else jnp.stack([a, b], axis=1), other, state["carry"])}
  assert not second["reset"].any()
  expected, expected_metrics = steps.train(copy(state), second)
  got, metrics = sets_steps.train(sets_state, second)
  np.testing.assert_allclose(metrics["loss"], expected_metrics["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(expected["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b, kept in zip(jax.tree.leaves(got["carry"]), jax.tree.leaves(expected["carry"]),
                        jax.tree.leaves(other)):
    if a.ndim:
      assert a.shape[1] == 2
      np.testing.assert_allclose(a[:, 1], b, rtol=1e-5, atol=1e-7)
      np.testing.assert_array_equal(a[:, 0], kept)


@pytest.mark.parametrize("arg, options", [("rfa_gaussian,gated,stateful", {}),
                                           ("rfa_gaussian", {"model.attention_options.redraw": False})])
def test_microbatches_make_the_update_of_the_whole_batch(corpus, arg, options):
  """microbatches=2 runs each batch in two parts and adds their gradients: three steps give the
  losses, parameters, random streams and (stateful RFA-Gate) carried state of the whole batch at
  once, in less memory and with no collective but the gradients' all-reduce."""
  task = train.load_data(tiny_config(corpus))
  mesh = parallelism.data_mesh()
  runs = []
  for parts in (1, 2):
    config = tiny_config(corpus, arg, **{"model.dropout_rate": 0.0, "batch_size": 16,
                                         "microbatches": parts, **options})
    state, steps = train.init_training(config, mesh, **train.model_args(task))
    batches = task.train_batches(global_batch_size=16, seed=0)
    batch = parallelism.global_batch(next(batches), mesh)
    compiled = steps.train.lower(state, batch).compile()
    losses = []
    for _ in range(3):
      state, metrics = steps.train(state, batch)
      losses.append(float(metrics["loss"]))
      batch = parallelism.global_batch(next(batches), mesh)
    collectives = re.findall(r"(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)",
                             compiled.as_text())
    runs.append((losses, state, compiled.memory_analysis().temp_size_in_bytes, set(collectives)))
  (whole_losses, whole, whole_memory, whole_collectives), (losses, parts, memory, collectives) = runs
  np.testing.assert_allclose(losses, whole_losses, rtol=1e-6)
  raw = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  assert set(parts) == set(whole)
  for part in whole:
    for a, b in zip(jax.tree.leaves(parts[part]), jax.tree.leaves(whole[part]), strict=True):
      np.testing.assert_allclose(raw(a), raw(b), rtol=1e-5, atol=1e-6)
  assert memory < whole_memory
  assert collectives == whole_collectives == {"all-reduce"}


def test_eval_batches_cover_a_split_once_without_state(corpus):
  config = tiny_config(corpus, "softmax")
  task = train.load_data(config)
  mesh = parallelism.data_mesh()
  state, steps = train.init_training(config, mesh, **train.model_args(task))
  result = train.evaluate(steps, state, train.eval_source(task, "test", config), config, mesh)
  assert result["num_examples"] == len(task.splits["test"]) - 1
  assert result["bits_per_byte"] == pytest.approx(result["loss"] / math.log(2))
  assert isinstance(train.eval_source(task, "test", config), lm.LMBatches)


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
  """Three corpus files, each one document when packed."""
  folder = tmp_path_factory.mktemp("documents")
  paths = [write_corpus(folder / f"{i}.txt") for i in range(3)]
  for i, path in enumerate(paths):  # make them differ
    pathlib.Path(path).write_text(pathlib.Path(path).read_text()[i * 997:] + f"end {i}\n")
  return ",".join(paths)


@pytest.mark.parametrize("arg", ["softmax", "rfa_gaussian,recommended"])
def test_packed_documents_attend_within_each_document(documents, arg):
  """A packed row gives each document, at every position, what the document alone gives."""
  config = tiny_config(documents, arg, **{"task_options.stateful": False,
                                          "task_options.pack_documents": True})
  task = train.load_data(config)
  model = train.build_model(config, rngs=train.model_rngs(0), **train.model_args(task))
  model.eval()
  boundary = int(task.documents["train"][1]) - 5  # a segment with the first document boundary
  batches = task.eval_batches("train", global_batch_size=8)
  batch = batches.batch(boundary // config.max_length // 8)
  batch = {key: jnp.asarray(value) for key, value in batch.items()}
  row = boundary // config.max_length % 8
  assert batch["segment_ids"][row].max() == 2
  logits = model(batch)
  for seq in range(1, int(batch["segment_ids"][row].max()) + 1):
    (where,) = np.nonzero(np.asarray(batch["segment_ids"][row]) == seq)
    alone = model({"inputs": batch["inputs"][row:row + 1, where]})  # positions from 0
    np.testing.assert_allclose(logits[row, where], alone[0], atol=2e-5, rtol=1e-4)


def test_packed_training_reports_bits_per_byte(documents, tmp_path):
  config = tiny_config(documents, "rfa_gaussian,gated", **{"task_options.stateful": False,
                                                            "task_options.pack_documents": True})
  results = train.train_and_evaluate(config, tmp_path / "work")
  assert np.isfinite(results["test_bits_per_byte"]) and results["data"]["pack_documents"]
  assert results["data"]["documents"]["train"] == 3
  with pytest.raises(ValueError, match="pack_documents=True keeps attention within each document, "
                                       "which attention 'local' cannot"):
    train.train_and_evaluate(tiny_config(documents, "local", **{"task_options.pack_documents": True}),
                             tmp_path / "local")
