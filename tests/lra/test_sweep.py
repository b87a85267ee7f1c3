"""lra.sweep: the grid and its checks, skipping, failure records, and two tiny real runs through the
CLI, one killed and resumed."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import fixtures
from lra import attention, sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = {
    "num_train_steps": 16, "eval_every": 8, "checkpoint_every": 4, "log_every": 4,
    "batch_size": 8, "max_length": 48, "warmup_steps": 2,
    "model.num_layers": 1, "model.emb_dim": 16, "model.num_heads": 2, "model.qkv_dim": 16,
    "model.mlp_dim": 16, "model.dropout_rate": 0.0,
    "task_options.generate_train": 64, "task_options.generate_eval": 16,
    "task_options.min_length": 16, "task_options.max_length": 48,
}


def test_plan_orders_the_grid_and_builds_each_train_command(tmp_path):
  runs = sweep.plan(["listops", "text"], ["softmax", "rfa_gaussian"], ["0", "1"], root=tmp_path,
                    overrides=["--config.num_train_steps=7"])
  assert [r.name for r in runs[:4]] == ["listops softmax seed0", "listops softmax seed1",
                                        "listops rfa_gaussian seed0", "listops rfa_gaussian seed1"]
  assert len(runs) == 8 and runs[-1].name == "text rfa_gaussian seed1"
  run = runs[3]
  assert run.workdir == tmp_path / "listops" / "rfa_gaussian" / "seed1"
  assert run.command == (sys.executable, "-m", "lra.train",
                         f"--config={ROOT / 'configs' / 'listops.py'}:rfa_gaussian",
                         f"--workdir={run.workdir}", "--config.seed=1",
                         "--config.num_train_steps=7")
  everything = sweep.plan(["listops"], ["all"], ["3"], preset="small", root=tmp_path)
  assert [r.attention for r in everything] == attention.names()
  for run in everything:
    assert run.command[3].endswith(f"listops.py:{run.attention},small") and run.seed == 3


@pytest.mark.parametrize("arguments, message", [
    (dict(tasks=["listop"]), "--tasks=listop: expected a comma-separated list of .*listops"),
    (dict(attentions=["softmx"]), "--attentions=softmx: expected `all` or .*rfa_gaussian"),
    (dict(seeds=["one"]), "--seeds=one: expected a comma-separated list of integers"),
    (dict(seeds=["1", "1"]), "--seeds=1,1: expected one or more distinct integers"),
    (dict(preset="tiny"), "--preset=tiny: .*unknown preset 'tiny'.*this task has: gated, recommended, small"),
    (dict(tasks=["listops", "text"], preset="small"), "text.py:softmax,small: unknown preset"),
    (dict(overrides=["--config.nope=1"]), "configs/listops.py has no key 'nope'"),
    (dict(overrides=["--config.model.nope=1"]), "has no key 'model.nope'"),
    (dict(overrides=["--config.seed=4"]), "the sweep sets --config.seed itself"),
    (dict(overrides=["num_train_steps=4"]), "expected --config.key=value after `--`"),
])
def test_plan_rejects_bad_arguments_before_any_run(tmp_path, arguments, message):
  arguments = {"tasks": ["listops"], "attentions": ["softmax"], "seeds": ["0"], **arguments}
  with pytest.raises(ValueError, match=message):
    sweep.plan(arguments.pop("tasks"), arguments.pop("attentions"), arguments.pop("seeds"),
               root=tmp_path, **arguments)


def test_nested_config_overrides_are_accepted(tmp_path):
  runs = sweep.plan(["listops"], ["rfa_gaussian"], ["0"], root=tmp_path, overrides=[
      "--config.model.attention_options.num_features=8", "--config.task_options.min_length=4"])
  assert runs[0].command[-2:] == ("--config.model.attention_options.num_features=8",
                                  "--config.task_options.min_length=4")


WRITE_RESULTS = ("import json, pathlib; "
                 "pathlib.Path(WORKDIR, 'results.json').write_text('{\"test_bits_per_byte\": 1.25}')")


def fake_run(tmp_path, name, script):
  """A grid cell at tmp_path/name whose command is a Python one-liner (WORKDIR: its workdir)."""
  workdir = tmp_path / name
  return sweep.Run("listops", name, 0, workdir,
                   (sys.executable, "-c", script.replace("WORKDIR", repr(str(workdir)))))


@pytest.mark.slow
def test_sweep_skips_finished_runs_records_failures_and_goes_on(tmp_path):
  done = fake_run(tmp_path, "done", "")
  done.workdir.mkdir()
  (done.workdir / "results.json").write_text(json.dumps({"test_accuracy": 0.5}))
  crash = fake_run(tmp_path, "crash", "import sys; print('loading', flush=True); "
                                      "sys.exit('ValueError: the data is bad')")
  silent = fake_run(tmp_path, "silent", "")
  good = fake_run(tmp_path, "good", WRITE_RESULTS)
  lines = []
  outcomes = sweep.sweep([done, crash, silent, good], out=lines.append)
  assert [o["status"] for o in outcomes] == ["skipped", "failed", "failed", "finished"]
  assert lines[0] == "[1/4] listops done seed0: skipped (finished earlier: test accuracy 0.5000)"
  assert lines[2].startswith("[2/4] listops crash seed0: failed in ")
  assert lines[2].endswith("(exit code 1): ValueError: the data is bad")
  assert "(exited 0 without writing results.json)" in lines[4]
  assert lines[-1].startswith("[4/4] listops good seed0: finished in ")
  assert lines[-1].endswith("test bits per byte 1.2500")
  error = json.loads((crash.workdir / sweep.ERROR_FILE).read_text())
  assert error["returncode"] == 1 and error["command"] == list(crash.command)
  assert error["output_tail"][-2:] == ["loading", "ValueError: the data is bad"]
  assert (crash.workdir / sweep.LOG_FILE).read_text().startswith("=== ")
  text = sweep.summary(outcomes, tmp_path)
  assert text.splitlines()[0].startswith("sweep: 4 runs, 1 skipped, 1 finished, 2 failed in ")
  assert f"failed: listops crash seed0: see {crash.workdir / sweep.ERROR_FILE}" in text

  fixed = fake_run(tmp_path, "crash", WRITE_RESULTS)
  assert sweep.sweep([fixed], out=lines.append)[0]["status"] == "finished"
  assert not (crash.workdir / sweep.ERROR_FILE).exists()  # the stale record goes on success


def _children(pid):
  path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
  return [int(child) for child in path.read_text().split()] if path.exists() else []


def _sweep_cli(root, data_dir):
  command = [sys.executable, "-m", "lra.sweep", "--tasks=listops", "--attentions=softmax",
             "--seeds=0,1", f"--root={root}", "--",
             f"--config.data_dir={data_dir}", *(f"--config.{k}={v}" for k, v in TINY.items())]
  # One device; the later runs read the session's compilation cache (conftest): 4x less CPU.
  env = fixtures.subprocess_env(1)
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path("/proc/self/task").exists(), reason="reads /proc")
def test_a_killed_run_is_recorded_and_resumed_by_rerunning_the_sweep(tmp_path):
  data_dir, root = tmp_path / "data", tmp_path / "runs"  # the first run generates the data
  first, second = root / "listops" / "softmax" / "seed0", root / "listops" / "softmax" / "seed1"
  process = _sweep_cli(root, data_dir)
  latest = second / "checkpoints" / "latest"
  deadline = time.time() + 300
  while not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()
    time.sleep(0.02)
  (child,) = _children(process.pid)
  os.kill(child, signal.SIGKILL)  # the run of seed 1, mid-run, as an out-of-memory kill would
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 1, output
  assert output.startswith(f"sweep: 2 runs under {root}: tasks listops; attentions softmax; "
                           "seeds 0,1\n")
  assert not (second / "results.json").exists(), "seed 1 finished before it was killed"
  assert "[1/2] listops softmax seed0: finished in" in output
  assert "[2/2] listops softmax seed1: failed in" in output and "(killed by SIGKILL)" in output
  assert json.loads((second / sweep.ERROR_FILE).read_text())["returncode"] == -signal.SIGKILL
  first_results = (first / "results.json").read_text()

  process = _sweep_cli(root, data_dir)
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output
  assert "[1/2] listops softmax seed0: skipped (finished earlier: test accuracy" in output
  assert "[2/2] listops softmax seed1: resuming in" in output
  assert "sweep: 2 runs, 1 skipped, 1 finished, 0 failed" in output
  assert "Resuming from step" in (second / sweep.LOG_FILE).read_text()
  assert (first / "results.json").read_text() == first_results
  assert not (second / sweep.ERROR_FILE).exists()
  results = json.loads((second / "results.json").read_text())
  assert results["config"]["seed"] == 1 and results["config"]["num_train_steps"] == 16
  steps = [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["split"] == "train"]
  assert steps == [4, 8, 12, 16]  # the resumed run replaced the records past its checkpoint


def _is_gone(pid) -> bool:
  status = pathlib.Path(f"/proc/{pid}/status")
  try:
    return "State:\tZ" in status.read_text()
  except FileNotFoundError:
    return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_sweep_leaves_no_run_behind(tmp_path):
  script = ("import sys; from lra import sweep; sweep.sweep([sweep.Run('listops', 'slow', 0, "
            f"sweep.pathlib.Path({str(tmp_path)!r}), (sys.executable, '-c', "
            "'import time; time.sleep(120)'))])")
  process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
  deadline = time.time() + 120
  while not _children(process.pid):
    assert process.poll() is None and time.time() < deadline
    time.sleep(0.02)
  (child,) = _children(process.pid)
  process.kill()
  process.wait()
  deadline = time.time() + 10
  try:
    while not _is_gone(child):
      assert time.time() < deadline, "the run outlived the killed sweep"
      time.sleep(0.05)
  finally:
    if not _is_gone(child):
      os.kill(child, signal.SIGKILL)
