"""End-to-end harness runs on tiny generated ListOps: outputs, resume after a kill, device counts."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fixtures
from fixtures import records
from lra import parallelism, run_record, train
from lra.data import listops

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = {
    **fixtures.TINY_MODEL,
    "num_train_steps": 8, "eval_every": 4, "checkpoint_every": 2, "log_every": 2,
    "batch_size": 8, "max_length": 48, "warmup_steps": 2, "learning_rate": 0.05,
    "model.dropout_rate": 0.1,
    "task_options.generate_train": 96, "task_options.generate_eval": 20,
    "task_options.min_length": 16, "task_options.max_length": 48,
}


def tiny_config(data_dir, attention="rfa_gaussian", **overrides):
  return fixtures.tiny_config("listops", attention, **{**TINY, "data_dir": str(data_dir), **overrides})


def cli_args(config_overrides):
  return [f"--config.{key}={value}" for key, value in config_overrides.items()]


def run_cli(workdir, data_dir, devices=8, env_extra=None, wait=True, **overrides):
  env = fixtures.subprocess_env(devices, **(env_extra or {}))
  command = [sys.executable, "-m", "lra.train",
             f"--config={ROOT / 'configs' / 'listops.py'}:rfa_gaussian", f"--workdir={workdir}",
             *cli_args({**TINY, "data_dir": data_dir, **overrides})]
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  if not wait:
    return process
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  return output


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """One uninterrupted run on 8 devices that the other tests compare with."""
  root = tmp_path_factory.mktemp("reference")
  results = train.train_and_evaluate(tiny_config(root / "data"), root / "work")
  return root, results


def test_run_writes_the_workdir_contract(reference_run):
  root, results = reference_run
  work = root / "work"
  for key in ("test_accuracy", "test_loss", "num_test_examples", "best_step", "steps_per_sec",
              "peak_memory_bytes", "config"):
    assert results[key] is not None, key
  assert results["num_test_examples"] == 20
  assert json.loads((work / "results.json").read_text())["test_loss"] == results["test_loss"]
  logged = records(work)
  assert {r["split"] for r in logged} == {"train", "validation", "test"}
  assert [r["step"] for r in logged if r["split"] == "train"] == [2, 4, 6, 8]
  for record in logged:
    assert np.isfinite(record["loss"]) and 0 <= record["accuracy"] <= 1
  assert list((work / "tensorboard").glob("events.out.tfevents.*"))
  assert (work / "checkpoints" / "latest" / "8").is_dir()
  assert (work / "checkpoints" / "best" / str(results["best_step"])).is_dir()
  assert results["config"]["attention"] == "rfa_gaussian"
  assert sorted(p.name for p in (root / "data").iterdir())  # the generated ListOps files


def test_rerunning_a_finished_run_keeps_its_results(reference_run):
  root, results = reference_run
  before = (root / "work" / "metrics.jsonl").read_text()
  again = train.train_and_evaluate(tiny_config(root / "data"), root / "work")
  assert again == results
  assert (root / "work" / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_resume_after_kill_ends_with_the_uninterrupted_metrics(reference_run, tmp_path):
  root, results = reference_run
  process = run_cli(tmp_path, root / "data", wait=False)
  latest = tmp_path / "checkpoints" / "latest"
  deadline = time.time() + 300
  while not (latest.is_dir() and any(p.name.isdigit() and int(p.name) >= 4 for p in
                                     latest.iterdir())):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (tmp_path / "results.json").exists()
  run_cli(tmp_path, root / "data")
  resumed = json.loads((tmp_path / "results.json").read_text())
  assert resumed["test_loss"] == results["test_loss"]
  assert resumed["test_accuracy"] == results["test_accuracy"]
  assert records(tmp_path) == records(root / "work")


@pytest.mark.slow
def test_one_device_gives_the_eight_device_results(reference_run, tmp_path):
  root, results = reference_run
  run_cli(tmp_path, root / "data", devices=1)
  single = json.loads((tmp_path / "results.json").read_text())
  assert single["num_devices"] == 1
  np.testing.assert_allclose(single["test_loss"], results["test_loss"], rtol=1e-4)
  for a, b in zip(records(tmp_path), records(root / "work")):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)


@pytest.mark.slow
def test_two_processes_as_two_hosts_give_the_single_host_results(reference_run, tmp_path):
  root, results = reference_run
  port = 20000 + os.getpid() % 20000
  processes = [
      run_cli(tmp_path, root / "data", devices=4, wait=False, env_extra={
          "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": str(index)})
      for index in range(2)]
  for process in processes:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
  multi = json.loads((tmp_path / "results.json").read_text())
  assert multi["num_processes"] == 2 and multi["num_devices"] == 8
  np.testing.assert_allclose(multi["test_loss"], results["test_loss"], rtol=1e-4)
  assert multi["num_test_examples"] == results["num_test_examples"]


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(reference_run, tmp_path,
                                                                   monkeypatch):
  root, _ = reference_run
  schedule = train.learning_rate_schedule
  monkeypatch.setattr(train, "learning_rate_schedule", lambda config: lambda step: jnp.where(
      step >= 4, jnp.nan, schedule(config)(step)))  # the update after step 4 makes the model NaN
  with pytest.raises(train.TrainingDiverged, match="loss is nan by step 6"):
    train.train_and_evaluate(tiny_config(root / "data"), tmp_path)
  latest = tmp_path / "checkpoints" / "latest"
  assert sorted(p.name for p in latest.iterdir() if p.name.isdigit()) == ["4"]
  assert not (tmp_path / "results.json").exists()


def test_results_say_where_the_data_came_from(reference_run):
  root, results = reference_run
  assert results["data"]["generated"] is True
  assert results["data"]["generator"]["num_train"] == TINY["task_options.generate_train"]
  assert [f["path"] for f in results["data"]["files"]] == [
      str(root / "data" / "listops-1000" / name) for name in listops.SPLIT_FILES.values()]
  assert "GENERATED (seed 0" in run_record.describe_data(results["data"], brief=True)


@pytest.fixture(scope="module")
def short_run(reference_run, tmp_path_factory):
  """A finished 2-step run that the re-run tests below try to continue."""
  root, _ = reference_run
  work = tmp_path_factory.mktemp("short") / "work"
  train.train_and_evaluate(tiny_config(root / "data", num_train_steps=2), work)
  return work


def _snapshot(work):
  return {p: p.stat().st_mtime_ns for p in work.rglob("*")}


@pytest.mark.parametrize("overrides, differing", [
    ({"model.emb_dim": 32, "model.qkv_dim": 32}, ["model.emb_dim: 16 in the workdir, 32 now",
                                                  "model.qkv_dim: 16 in the workdir, 32 now"]),
    ({"attention": "softmax"}, ["attention: 'rfa_gaussian' in the workdir, 'softmax' now"]),
    ({"learning_rate": 0.01}, ["learning_rate: 0.05 in the workdir, 0.01 now"]),
    ({"task_options.generate_seed": 3}, ["task_options.generate_seed: 0 in the workdir, 3 now"]),
])
def test_rerun_with_a_different_configuration_stops_before_any_work(reference_run, short_run,
                                                                     overrides, differing):
  root, _ = reference_run
  before = _snapshot(short_run)
  with pytest.raises(run_record.ConfigMismatch) as error:
    train.train_and_evaluate(tiny_config(root / "data", num_train_steps=2, **overrides), short_run)
  message = str(error.value)
  for line in differing:
    assert line in message
  assert "new --workdir" in message and "num_train_steps" not in message
  assert _snapshot(short_run) == before


def _with(config: dict, key: str, value) -> dict:
  """`config` with the dotted `key` set to `value`."""
  head, _, rest = key.partition(".")
  return {**config, head: _with(config.get(head, {}), rest, value) if rest else value}


def test_a_key_added_since_the_workdir_started_matches_its_earlier_behaviour(tmp_path):
  started = {"task": "lm", "task_options": {"stateful": True}}
  run_record.check_config(tmp_path, started)
  for key, value in run_record.ADDED_KEYS.items():
    now = _with(started, key, value)
    run_record.check_config(tmp_path, now)  # what the code did before the key existed
    with pytest.raises(run_record.ConfigMismatch, match=f"{key}: {value!r} in the workdir, 2 now"):
      run_record.check_config(tmp_path, _with(now, key, 2))


def test_microbatches_must_split_each_devices_rows(tmp_path):
  mesh = parallelism.data_mesh()
  parallelism.check_batch_size(32, mesh, microbatches=4)
  with pytest.raises(ValueError, match=r"2 rows per device, not divisible into microbatches=4; "
                     r"set --config.batch_size to a multiple of 32 or --config.microbatches to a "
                     r"divisor of 2"):
    train.train_and_evaluate(tiny_config(tmp_path / "data", batch_size=16, microbatches=4),
                             tmp_path / "work")
  assert not (tmp_path / "work" / "run.json").exists()
  with pytest.raises(ValueError, match="microbatches=0; expected 1"):
    parallelism.check_batch_size(32, mesh, microbatches=0)


def test_rerun_on_other_data_stops(reference_run, short_run, tmp_path):
  root, _ = reference_run
  before = _snapshot(short_run)
  other = tmp_path / "other"
  fixtures.write_listops(other)
  with pytest.raises(run_record.ConfigMismatch, match="different data set"):
    train.train_and_evaluate(tiny_config(other, num_train_steps=2), short_run)
  moved = tmp_path / "moved"  # the same files in another place are the same data
  (moved / "listops-1000").mkdir(parents=True)
  for path in (root / "data" / "listops-1000").iterdir():
    (moved / "listops-1000" / path.name).write_bytes(path.read_bytes())
  results = json.loads((short_run / "results.json").read_text())
  assert train.train_and_evaluate(tiny_config(moved, num_train_steps=2), short_run) == results
  assert _snapshot(short_run) == before


@pytest.mark.slow
def test_rerun_may_train_on_and_change_logging_and_evaluation_frequency(reference_run, tmp_path):
  root, results = reference_run
  work = tmp_path / "work"
  train.train_and_evaluate(tiny_config(root / "data", num_train_steps=4), work)
  train.train_and_evaluate(tiny_config(root / "data", num_train_steps=8, log_every=2, eval_every=4,
                                       checkpoint_every=4), work)
  assert records(work) == records(root / "work")
  assert json.loads((work / "results.step4.json").read_text())["best_step"] == 4


def test_weight_decay_spares_only_rfa_sigma(tmp_path):
  config = tiny_config(tmp_path)
  model = train.build_model(config, vocab_size=20, num_classes=10, dual=False, has_padding=True,
                            rngs=train.model_rngs(0))
  _, params, _ = nnx.split(model, nnx.Param, ...)
  mask = jax.tree_util.tree_flatten_with_path(train.weight_decay_mask(params))[0]
  spared = [jax.tree_util.keystr(path) for path, decayed in mask if not decayed]
  assert len(spared) == 1 and "sigma" in spared[0] and len(mask) > 10
