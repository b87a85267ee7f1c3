"""Grids of training runs, one after another:

    python -m lra.sweep --tasks=listops,text --attentions=all|softmax,rfa_gaussian [--preset=small]
        [--seeds=0,1,2] [--root=runs] [-- --config.key=value ...]

Each (task, attention, seed) is `python -m lra.train --config=configs/<task>.py:<attention>[,<preset>]
--workdir=ROOT/<task>/<attention>/seed<k> --config.seed=<k> <overrides>` in its own process, so that a
crash or an out-of-memory kill of one run does not end the sweep. Its output goes to `train.log` in
its workdir. A run whose workdir has `results.json` (written last by `lra.train`) is finished and
skipped; any other is started, which resumes an interrupted one from its latest checkpoint. A failed run
leaves `sweep_error.json` (exit code, the last lines of its output) in its workdir and the sweep goes on;
it exits non-zero at the end if any run failed. Re-running the same command finishes the grid.
"""

import ctypes
import dataclasses
import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from absl import app, flags

from lra import attention as attention_registry
from lra import config_lib
from lra.records import write_json_atomically

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
ERROR_FILE = "sweep_error.json"
LOG_FILE = "train.log"
ERROR_LINES = 20

_TASKS = flags.DEFINE_list("tasks", None, "Tasks: names of the config files in configs/.")
_ATTENTIONS = flags.DEFINE_list("attentions", None, "Registered attention names, or `all`.")
_PRESET = flags.DEFINE_string("preset", None, "Preset(s) of the task configs, e.g. `small`.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each is one run per task and attention.")
_ROOT = flags.DEFINE_string("root", "runs", "Workdirs are ROOT/<task>/<attention>/seed<k>.")


@dataclasses.dataclass(frozen=True)
class Run:
  """One cell of the grid."""
  task: str
  attention: str
  seed: int
  workdir: pathlib.Path
  command: tuple[str, ...]

  @property
  def name(self) -> str:
    return f"{self.task} {self.attention} seed{self.seed}"


def task_names(configs=CONFIGS) -> list[str]:
  """The tasks that have a config file."""
  return sorted(p.stem for p in pathlib.Path(configs).glob("*.py") if not p.stem.startswith("_"))


def _config_keys(config, prefix="") -> set[str]:
  keys = set()
  for key, value in config.items():
    keys.add(prefix + key)
    if hasattr(value, "items"):
      keys |= _config_keys(value, prefix + key + ".")
  return keys


def check_overrides(overrides, config, task: str):
  """ValueError unless every override is `--name[=value]` and every `--config.<key>` exists."""
  for override in overrides:
    match = re.fullmatch(r"--([\w.-]+)(=.*)?", override, re.DOTALL)
    if not match:
      raise ValueError(f"override {override!r}: expected --config.key=value after `--`")
    name = match.group(1)
    if name in ("config", "workdir", "config.seed"):
      raise ValueError(f"override {override!r}: the sweep sets --{name} itself "
                       "(use --tasks, --attentions, --preset, --seeds, --root)")
    if name.startswith("config.") and name[len("config."):] not in _config_keys(config):
      raise ValueError(f"override {override!r}: configs/{task}.py has no key "
                       f"{name[len('config.'):]!r}")


def plan(tasks, attentions, seeds, *, preset=None, root="runs", overrides=(),
         configs=CONFIGS) -> list[Run]:
  """The grid's runs in order (task, then attention, then seed), after checking every argument and
  loading every config, so that a typo stops the sweep before its first run."""
  available = task_names(configs)
  if not tasks or any(task not in available for task in tasks):
    raise ValueError(f"--tasks={','.join(tasks or [])}: expected a comma-separated list of "
                     f"{', '.join(available)} (the config files in {configs})")
  registered = attention_registry.names()
  if attentions == ["all"]:
    attentions = registered
  if not attentions or any(name not in registered for name in attentions):
    raise ValueError(f"--attentions={','.join(attentions or [])}: expected `all` or a "
                     f"comma-separated list of {', '.join(registered)}")
  try:
    seeds = [int(seed) for seed in seeds]
  except (TypeError, ValueError):
    raise ValueError(f"--seeds={','.join(map(str, seeds))}: expected a comma-separated list of "
                     "integers") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds={','.join(map(str, seeds))}: expected one or more distinct integers")
  runs = []
  for task in tasks:
    for name in attentions:
      arg = name + (f",{preset}" if preset else "")
      path = pathlib.Path(configs) / f"{task}.py"
      try:
        config = config_lib.load(str(path), arg)
      except ValueError as error:
        raise ValueError(f"--preset={preset}: {path}:{arg}: {error}") from None
      check_overrides(overrides, config, task)
      for seed in seeds:
        workdir = pathlib.Path(root) / task / name / f"seed{seed}"
        command = (sys.executable, "-m", "lra.train", f"--config={path}:{arg}",
                   f"--workdir={workdir}", f"--config.seed={seed}", *overrides)
        runs.append(Run(task, name, seed, workdir, command))
  return runs


def is_finished(workdir) -> bool:
  return (pathlib.Path(workdir) / "results.json").exists()


def _die_with_parent(parent: int):
  """In the child before exec (Linux): SIGKILL when the sweep (pid `parent`) dies, so that a killed
  sweep leaves no run writing into a workdir that the next sweep resumes. A sweep that died between
  the fork and this call sent no signal: the child, already adopted by another process, stops."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
      os.kill(os.getpid(), signal.SIGKILL)


def _output_tail(log_path, offset: int) -> list[str]:
  """The last lines written to the log after `offset` (progress-bar redraws split into lines)."""
  with open(log_path, "rb") as f:
    f.seek(offset)
    text = f.read().decode(errors="replace")
  return [line for line in re.split(r"[\r\n]+", text) if line.strip()][-ERROR_LINES:]


def execute(run: Run) -> dict:
  """Runs `run.command` with its output appended to the workdir's log; returns the outcome
  {"status": "finished" | "failed", "seconds", ...}; a failure is also written to sweep_error.json."""
  run.workdir.mkdir(parents=True, exist_ok=True)
  log_path = run.workdir / LOG_FILE
  with log_path.open("ab") as log:
    offset = log.tell()
    header = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(run.command)}\n"
    log.write((("\n" if offset else "") + header).encode())  # a killed run may end mid-line
    log.flush()
    start = time.perf_counter()
    process = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL,
                               preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    try:
      returncode = process.wait()
    finally:
      if process.poll() is None:  # the sweep itself is stopping
        process.terminate()
        try:
          process.wait(timeout=30)
        except subprocess.TimeoutExpired:
          process.kill()
  seconds = time.perf_counter() - start
  error_path = run.workdir / ERROR_FILE
  if returncode == 0 and is_finished(run.workdir):
    error_path.unlink(missing_ok=True)
    return dict(status="finished", seconds=seconds)
  error = dict(task=run.task, attention=run.attention, seed=run.seed, command=list(run.command),
               returncode=returncode, seconds=seconds, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               log=str(log_path), output_tail=_output_tail(log_path, offset))
  if returncode == 0:
    error["reason"] = "exited 0 without writing results.json"
  write_json_atomically(error_path, error)
  return dict(status="failed", seconds=seconds, error=error, error_path=error_path)


def _result_summary(workdir) -> str:
  results = json.loads((pathlib.Path(workdir) / "results.json").read_text())
  for key, name in (("test_bits_per_byte", "test bits per byte"), ("test_accuracy", "test accuracy")):
    if isinstance(results.get(key), (int, float)):
      return f"{name} {results[key]:.4f}"
  return "results.json has no test metric"


def _exit_description(returncode: int) -> str:
  if returncode < 0:
    return f"killed by {signal.Signals(-returncode).name}"
  return f"exit code {returncode}"


def sweep(runs: list[Run], out=print) -> list[dict]:
  """Runs the grid, printing one line per run as it starts and ends; returns each run's outcome."""
  outcomes = []
  for index, run in enumerate(runs, 1):
    prefix = f"[{index}/{len(runs)}] {run.name}:"
    if is_finished(run.workdir):
      out(f"{prefix} skipped (finished earlier: {_result_summary(run.workdir)})")
      outcomes.append(dict(run=run, status="skipped", seconds=0.0))
      continue
    verb = "resuming" if (run.workdir / "checkpoints" / "latest").is_dir() else "running"
    out(f"{prefix} {verb} in {run.workdir} (output: {run.workdir / LOG_FILE})")
    outcome = dict(run=run, **execute(run))
    if outcome["status"] == "finished":
      out(f"{prefix} finished in {outcome['seconds']:.1f} s, {_result_summary(run.workdir)}")
    else:
      error = outcome["error"]
      last = error["output_tail"][-1] if error["output_tail"] else error.get("reason", "")
      out(f"{prefix} failed in {outcome['seconds']:.1f} s "
          f"({error.get('reason') or _exit_description(error['returncode'])}): {last}")
    outcomes.append(outcome)
  return outcomes


def summary(outcomes, root) -> str:
  counts = {status: sum(o["status"] == status for o in outcomes)
            for status in ("skipped", "finished", "failed")}
  lines = [f"sweep: {len(outcomes)} runs, " + ", ".join(f"{n} {s}" for s, n in counts.items())
           + f" in {sum(o['seconds'] for o in outcomes):.1f} s"]
  for outcome in outcomes:
    if outcome["status"] == "failed":
      lines.append(f"  failed: {outcome['run'].name}: see {outcome['error_path']}")
  if counts["failed"]:
    lines.append("Re-running the same command retries the failed runs and skips the finished ones.")
  lines.append(f"Tables and plots: python -m lra.report {root}")
  return "\n".join(lines)


def main(argv):
  overrides = argv[1:]
  try:
    runs = plan(_TASKS.value, _ATTENTIONS.value, _SEEDS.value, preset=_PRESET.value,
                root=_ROOT.value, overrides=overrides)
  except ValueError as error:
    sys.exit(f"lra.sweep: {error}")
  grid = {name: ",".join(map(str, dict.fromkeys(getattr(r, name) for r in runs)))
          for name in ("task", "attention", "seed")}
  print(f"sweep: {len(runs)} runs under {_ROOT.value}: tasks {grid['task']}; attentions "
        f"{grid['attention']}; seeds {grid['seed']}", flush=True)
  signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops the run too, as Ctrl-C does
  try:
    outcomes = sweep(runs, out=lambda line: print(line, flush=True))
  except KeyboardInterrupt:
    print("sweep stopped; re-running the same command resumes it.", flush=True)
    return 130
  print(summary(outcomes, _ROOT.value), flush=True)
  return 1 if any(o["status"] == "failed" for o in outcomes) else 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["tasks", "attentions"])
  app.run(main)
