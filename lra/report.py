"""Tables and plots of every training run under a folder:

    python -m lra.report ROOT [--out=DIR] [--benchmark=benchmarks/results/harness/results.json ...]

A workdir is any folder under ROOT (at any depth) with `results.json` and/or `metrics.jsonl`, as
`lra.train` writes them; its task, attention, seed, configuration and data come from results.json,
else from run.json, else (task, attention and seed only) from a <task>/<attention>/seed<k> path.
`results.json` files of `benchmarks.harness` under ROOT, and those given by `--benchmark`, feed the speed
table. Writes to DIR (default ROOT):

- `report.md`: test accuracy in the layout of LRA's Table 1 (mechanisms by tasks and their average,
  mean ± sample std over seeds, the number of seeds; "–" where no run finished); test bits per byte of
  language-model runs; the training speed and memory of the runs relative to softmax; the benchmark's
  steps/s and peak memory per length relative to softmax in the layout of LRA's Table 2; each table
  followed by where its numbers came from (data, device, steps, configuration, commit);
- `report.csv`: the cells of those tables, one per line; `runs.csv`: one line per workdir;
- `curves_<task>.png`: validation accuracy (bits per byte for `lm`) against step and against training
  time; `accuracy_vs_speed.png`: LRA's Figure 3 view, test metric against training steps/s with marker
  area proportional to peak memory.

Tables and plots use numpy and matplotlib; the attention registry (jax, flax) is imported only for
its option defaults, which name each run's row. Nothing runs on a device.
"""

import csv
import dataclasses
import hashlib
import json
import math
import pathlib
import re

import matplotlib
import numpy as np
from absl import app, flags

matplotlib.use("Agg")
from matplotlib.lines import Line2D  # noqa: E402 (after the backend is chosen)
from matplotlib import pyplot as plt  # noqa: E402

from lra import attention as attention_registry
from lra.records import git_commit, markdown_table
from lra.run_record import describe_data, flatten, short_id, with_added_keys

LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
NOT_AVERAGED = ("pathx",)  # LRA's Table 1 average leaves Path-X out (every model failed it)
LM_TASKS = ("lm",)
BASELINE = "softmax"
MISSING = "–"
RUN_RECORD = "run.json"
CSV_FIELDS = ("table", "attention", "task", "length", "metric", "mean", "std", "count", "seeds")
RUN_FIELDS = ("task", "attention", "seed", "finished", "test_accuracy", "test_bits_per_byte",
              "best_validation", "best_step", "last_step", "num_train_steps", "steps_per_sec",
              "peak_memory_bytes", "num_devices", "identity_from", "workdir")


@dataclasses.dataclass
class Run:
  """One workdir: `results` is None while the run is unfinished; `rows` are its metrics.jsonl;
  `config` and `data` come from results.json, else from run.json (what lra.train records at the
  start)."""
  path: pathlib.Path
  task: str
  attention: str
  seed: int | None
  results: dict | None
  rows: list[dict]
  config: dict
  data: dict | None
  identity_from: str  # "results.json", "run.json" or "path"

  @property
  def finished(self) -> bool:
    return self.results is not None

  @property
  def is_lm(self) -> bool:
    return self.task in LM_TASKS or "test_bits_per_byte" in (self.results or {})

  @property
  def metric(self) -> str:
    """The validation/test metric of the task's metrics rows."""
    return "bits_per_byte" if self.is_lm else "accuracy"

  @property
  def last_step(self) -> int | None:
    return max((row["step"] for row in self.rows), default=None)


# ------------------------------------------------------------------ reading


def _read_json(path):
  try:
    return json.loads(pathlib.Path(path).read_text())
  except (OSError, ValueError):
    return None


def read_metrics(path) -> list[dict]:
  """metrics.jsonl rows; a torn last line of a killed run is dropped."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and "step" in row:
      rows.append(row)
  return rows


def is_benchmark(payload) -> bool:
  """An `benchmarks.harness` results.json (rows of attention x length), not a training run's."""
  return isinstance(payload, dict) and "rows" in payload and "config" not in payload


def _identity_from_path(path: pathlib.Path):
  """(task, attention, seed) from the sweep's layout <task>/<attention>/seed<k>, or None."""
  match = re.fullmatch(r"seed(-?\d+)", path.name)
  if not match or len(path.parts) < 3:
    return None
  return path.parent.parent.name, path.parent.name, int(match.group(1))


def variant(config: dict) -> str:
  """A run's row name: its attention, with the attention options that differ from the registry's
  defaults, stateful LM training and packed documents, e.g. "rfa_gaussian (gated=True, window=32)"."""
  name = config.get("attention")
  try:
    defaults = attention_registry.default_options(name)
  except ValueError:  # a mechanism this checkout does not have
    defaults = {}
  options = (config.get("model") or {}).get("attention_options") or {}
  changed = [f"{key}={value}" for key, value in sorted(options.items())
             if key in defaults and value != defaults[key]]
  task_options = config.get("task_options") or {}
  if task_options.get("stateful"):
    stateful = ["stateful"]
    if task_options.get("stream_segments"):
      stateful.append(f"stream_segments={task_options['stream_segments']}")
    if task_options.get("stream_sets", 1) > 1:
      stateful.append(f"stream_sets={task_options['stream_sets']}")
    changed.append(", ".join(stateful))
  if task_options.get("pack_documents"):
    changed.append("packed documents")
  return f"{name} ({', '.join(changed)})" if changed else name


def find_runs(root) -> tuple[list[Run], list[str]]:
  """Every workdir under `root`, and notes on folders that could not be read."""
  root = pathlib.Path(root)
  folders = sorted({p.parent for name in ("results.json", "metrics.jsonl")
                    for p in root.rglob(name) if "checkpoints" not in p.relative_to(root).parts})
  runs, notes = [], []
  for folder in folders:
    results = _read_json(folder / "results.json") if (folder / "results.json").exists() else None
    if is_benchmark(results):
      continue
    record = _read_json(folder / RUN_RECORD) or {}
    source, payload = next(((name, p) for name, p in (("results.json", results or {}),
                                                        (RUN_RECORD, record))
                            if "task" in (p.get("config") or {})), ("path", {}))
    config = payload.get("config") or {}
    identity = ((config["task"], variant(config), config.get("seed")) if config
                else _identity_from_path(folder))
    if identity is None:
      notes.append(f"{folder}: no config in results.json or {RUN_RECORD}, and not a "
                   "<task>/<attention>/seed<k> folder; left out")
      continue
    runs.append(Run(folder, *identity, results=results, rows=read_metrics(folder / "metrics.jsonl"),
                    config=config, data=(results or {}).get("data") or record.get("data"),
                    identity_from=source))
  return runs, notes


def find_benchmarks(root, extra=()) -> list[tuple[pathlib.Path, dict]]:
  """`benchmarks.harness` results under `root` and at the paths in `extra` (each read once)."""
  paths = [p for p in sorted(pathlib.Path(root).rglob("results.json"))
           if is_benchmark(_read_json(p))]
  for path in map(pathlib.Path, extra):
    payload = _read_json(path)
    if not is_benchmark(payload):
      raise ValueError(f"--benchmark={path}: expected the results.json that benchmarks.harness writes "
                       "(with a `rows` list)")
    paths.append(path)
  unique = {p.resolve(): p for p in paths}
  return [(path, _read_json(path)) for path in unique.values()]


# ------------------------------------------------------------------ statistics


@dataclasses.dataclass
class Cell:
  """Mean and sample standard deviation (None for one value) of one table cell."""
  values: list[float]
  seeds: list

  @property
  def count(self) -> int:
    return len(self.values)

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  @property
  def std(self) -> float | None:
    return float(np.std(self.values, ddof=1)) if self.count > 1 else None


def _task_order(tasks) -> list[str]:
  tasks = set(tasks)
  return [t for t in LRA_TASKS if t in tasks] + sorted(tasks - set(LRA_TASKS))


def _attention_order(names) -> list[str]:
  names = set(names)
  return [n for n in (BASELINE,) if n in names] + sorted(names - {BASELINE})


def cells(runs, key: str) -> dict[tuple[str, str], Cell]:
  """(attention, task) -> the finished runs' `results[key]` over seeds."""
  table = {}
  for run in runs:
    value = (run.results or {}).get(key)
    if value is None:
      continue
    cell = table.setdefault((run.attention, run.task), Cell([], []))
    cell.values.append(float(value))
    cell.seeds.append(run.seed)
  return table


def average_row(table, attention, tasks) -> float | None:
  """The mean over `tasks` (less NOT_AVERAGED) of the row's cell means; None if a cell is missing."""
  averaged = [t for t in tasks if t not in NOT_AVERAGED]
  if not averaged or any((attention, t) not in table for t in averaged):
    return None
  return float(np.mean([table[(attention, t)].mean for t in averaged]))


# ------------------------------------------------------------------ provenance


def _device(results) -> str:
  kind = next((results[k] for k in ("device_kind", "device", "platform") if results.get(k)), None)
  count = results.get("num_devices")
  processes = results.get("num_processes")
  text = (f"{count} × {kind}" if kind
          else f"{count} device{'s' if count != 1 else ''} (kind not recorded in results.json)")
  return text + (f", {processes} processes" if processes and processes > 1 else "")


def _commit(results):
  return next((results[k] for k in ("git_commit", "commit") if results.get(k)), None)


def differing_keys(configs) -> list[str]:
  """Config keys whose values differ between runs, besides the attention, its options and seed. A
  run started before a key of `run_record.ADDED_KEYS` existed counts as having its old-behaviour
  value, as a re-run of its workdir does."""
  flats = [flatten(c) for c in configs]
  keys = set().union(*flats) if flats else set()
  flats = [with_added_keys(f, keys) for f in flats]
  ignored = ("attention", "seed", "model.attention_options")
  return sorted(k for k in keys if not k.startswith(ignored)
                and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1)


def _distinct(values) -> str:
  counts = {}
  for value in values:
    counts[value] = counts.get(value, 0) + 1
  if len(counts) == 1:
    return str(next(iter(counts)))
  return "; ".join(f"{value} ({n} run{'s' if n > 1 else ''})" for value, n in counts.items())


def run_provenance(runs, tasks, commit_of_report) -> list[str]:
  """Markdown bullet lines: per task, the data, devices, steps, differing config keys, commits."""
  lines = []
  for task in tasks:
    finished = [r for r in runs if r.task == task and r.finished]
    if not finished:
      continue
    configs = [r.config for r in finished]
    steps = _distinct(c.get("num_train_steps") for c in configs)
    commits = [_commit(r.results) for r in finished]
    commit = (_distinct(short_id(c) if c else "not recorded" for c in commits) if any(commits)
              else f"not recorded in results.json; report's commit {short_id(commit_of_report)}")
    differ = differing_keys(configs)
    lines.append(
        f"- **{task}** ({len(finished)} run{'s' if len(finished) > 1 else ''}): data {_distinct(describe_data(r.data) for r in finished)}; "
        f"device {_distinct(_device(r.results) for r in finished)}; "
        f"{steps} training steps (batch {_distinct(c.get('batch_size') for c in configs)}, length "
        f"{_distinct(c.get('max_length') for c in configs)}); commit {commit}"
        + (f"; configs differ in {', '.join(differ)}" if differ else ""))
    seeds = [(r.attention, r.seed) for r in finished]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
    if repeated:
      lines.append(f"  - the same (attention, seed) in more than one workdir: {repeated}")
  return lines


# ------------------------------------------------------------------ tables


def _format(cell: Cell | None, scale=100.0, digits=2) -> str:
  if cell is None:
    return MISSING
  text = f"{cell.mean * scale:.{digits}f}"
  if cell.std is not None:
    text += f" ± {cell.std * scale:.{digits}f}"
  return text + f" ({cell.count})"


def _csv_rows(table_name, table, metric):
  for (attention, task), cell in sorted(table.items()):
    yield dict(table=table_name, attention=attention, task=task, length="", metric=metric,
               mean=cell.mean, std="" if cell.std is None else cell.std, count=cell.count,
               seeds=" ".join(map(str, cell.seeds)))


def accuracy_table(runs) -> tuple[list[str], list[dict]]:
  """LRA Table 1: test accuracy (%) by mechanism and task, and the average; markdown, CSV rows."""
  runs = [r for r in runs if not r.is_lm]
  table = cells(runs, "test_accuracy")
  tasks = _task_order(r.task for r in runs)
  attentions = _attention_order(r.attention for r in runs)
  rows, csv_rows = [], list(_csv_rows("accuracy", table, "test_accuracy"))
  for attention in attentions:
    average = average_row(table, attention, tasks)
    rows.append([attention] + [_format(table.get((attention, t))) for t in tasks]
                + [MISSING if average is None else f"{average * 100:.2f}"])
    if average is not None:
      csv_rows.append(dict(table="accuracy", attention=attention, task="avg", length="",
                           metric="test_accuracy", mean=average, std="", count="", seeds=""))
  lines = markdown_table(["attention"] + tasks + ["Avg"], rows)
  return lines, csv_rows


def lm_table(runs) -> tuple[list[str], list[dict]]:
  """Test and best-validation bits per byte of language-model runs (lower is better)."""
  runs = [r for r in runs if r.is_lm]
  test, validation = (cells(runs, "test_bits_per_byte"),
                      cells(runs, "best_validation_bits_per_byte"))
  tasks = _task_order(r.task for r in runs)
  rows = [[attention] + [_format(cells_.get((attention, t)), scale=1.0, digits=4)
                         for t in tasks for cells_ in (test, validation)]
          for attention in _attention_order(r.attention for r in runs)]
  header = ["attention"] + [f"{t} {split} bits/byte" for t in tasks
                            for split in ("test", "best validation")]
  csv_rows = (list(_csv_rows("lm", test, "test_bits_per_byte"))
              + list(_csv_rows("lm", validation, "best_validation_bits_per_byte")))
  return markdown_table(header, rows), csv_rows


def run_speed_table(runs) -> tuple[list[str], list[dict]]:
  """Training steps/s and peak memory (MiB) of the finished runs per task, with ratios to softmax."""
  speed, memory = cells(runs, "steps_per_sec"), cells(runs, "peak_memory_bytes")
  tasks = _task_order(r.task for r in runs if r.finished)
  rows = []
  for attention in _attention_order(r.attention for r in runs if r.finished):
    row = [attention]
    for task in tasks:
      for table, unit in ((speed, 1.0), (memory, 2.0**-20)):
        cell, base = table.get((attention, task)), table.get((BASELINE, task))
        if cell is None:
          row.append(MISSING)
          continue
        ratio = f" ({cell.mean / base.mean:.2f}×)" if base else ""
        row.append(f"{cell.mean * unit:.4g}{ratio}")
    rows.append(row)
  header = ["attention"] + [f"{t} {what}" for t in tasks
                            for what in ("steps/s", "peak memory MiB")]
  csv_rows = (list(_csv_rows("run_speed", speed, "steps_per_sec"))
              + list(_csv_rows("run_speed", memory, "peak_memory_bytes")))
  return markdown_table(header, rows), csv_rows


def benchmark_table(payload) -> tuple[list[str], list[dict]]:
  """LRA Table 2 from one benchmarks.harness results.json: steps/s and peak memory (GiB) per length, each
  with its ratio to the baseline (softmax) at the same length."""
  rows_in = payload["rows"]
  baseline = (payload.get("args") or {}).get("baseline", BASELINE)
  lengths = sorted({r["length"] for r in rows_in})
  by_key = {(r["attention"], r["length"]): r for r in rows_in}
  base = {n: by_key.get((baseline, n)) for n in lengths}
  rows, csv_rows = [], []
  for attention in dict.fromkeys(r["attention"] for r in rows_in):
    speed_cells, memory_cells = [], []
    for n in lengths:
      row, reference = by_key.get((attention, n)), base[n]
      if row is None:
        speed_cells.append(MISSING)
        memory_cells.append(MISSING)
        continue
      if "steps_per_sec" in row:
        ratio = (row["steps_per_sec"] / reference["steps_per_sec"]
                 if reference and "steps_per_sec" in reference else None)
        speed_cells.append(f"{row['steps_per_sec']:.3g}"
                           + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        csv_rows.append(dict(table="benchmark", attention=attention, task="", length=n,
                             metric="steps_per_sec", mean=row["steps_per_sec"], std="",
                             count=len(row.get("step_times") or []), seeds=""))
      else:
        speed_cells.append("skipped")
      memory_ratio = row["memory_bytes"] / reference["memory_bytes"] if reference else None
      memory_cells.append(f"{row['memory_bytes'] / 2**30:.2f}"
                          + (f" ({memory_ratio:.2f}×)" if memory_ratio is not None else ""))
      csv_rows.append(dict(table="benchmark", attention=attention, task="", length=n,
                           metric="memory_bytes", mean=row["memory_bytes"], std="", count=1,
                           seeds=""))
    rows.append([attention] + speed_cells + memory_cells)
  header = (["attention"] + [f"{n} steps/s (×{baseline})" for n in lengths]
            + [f"{n} memory GiB (×{baseline})" for n in lengths])
  return markdown_table(header, rows), csv_rows


def benchmark_provenance(path, payload, commit_of_report) -> list[str]:
  args = payload.get("args") or {}
  digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
  commit = _commit(payload)
  return [f"- `{path}` (sha256 {short_id(digest)}): benchmarks.harness, the text task's model on synthetic "
          f"tokens, batch {args.get('batch_size')}, median of {args.get('steps')} timed steps after a "
          f"warm-up; device {payload.get('device')} (device count {payload.get('device_count')}, "
          f"{payload.get('machine')}), jax {payload.get('jax_version')}; memory from XLA's compiled "
          "memory analysis; commit "
          + (short_id(commit) if commit else
             f"not recorded in the results; report's commit {short_id(commit_of_report)}")]


# ------------------------------------------------------------------ plots


def training_time(rows) -> tuple[dict[int, float], str]:
  """Seconds of training by step: the rows' `time` field if they have one, else the integral of the
  train rows' steps_per_sec (training only: compilation, evaluation and checkpoints left out)."""
  if rows and all("time" in r for r in rows):
    return {r["step"]: float(r["time"]) for r in rows}, "the metrics rows' `time`"
  times, elapsed, previous = {0: 0.0}, 0.0, 0
  for row in sorted((r for r in rows if r.get("split") == "train" and r.get("steps_per_sec")),
                    key=lambda r: r["step"]):
    elapsed += (row["step"] - previous) / row["steps_per_sec"]
    times[row["step"]], previous = elapsed, row["step"]
  return times, "steps/s of the train rows, integrated (compilation, evaluation and checkpoints excluded)"


def _time_at(times: dict[int, float], step: int) -> float | None:
  """Training time at `step`, linear between logged steps; None past the last one."""
  steps = sorted(times)
  if step > steps[-1]:
    return None
  return float(np.interp(step, steps, [times[s] for s in steps]))


def colours(attentions) -> dict:
  """One colour per mechanism, the same in every plot: tab20's ten dark hues, then its light ones."""
  cmap = plt.get_cmap("tab20")
  return {name: cmap((2 * i) % 20 + (2 * i // 20) % 2) for i, name in enumerate(attentions)}


def plot_curves(runs, task, path, palette) -> str:
  """Validation metric against step and against training time, one line per run, the mechanisms
  named in a legend below both plots in the tables' order; returns how time was measured."""
  runs = [r for r in runs if r.task == task]
  legend_rows = math.ceil(len({r.attention for r in runs}) / 2)
  figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4 + 0.25 * legend_rows),
                                            layout="constrained")
  labelled, how = set(), set()
  for run in sorted(runs, key=lambda r: (r.attention, str(r.seed))):
    validation = sorted((r for r in run.rows if r.get("split") == "validation"
                         and r.get(run.metric) is not None), key=lambda r: r["step"])
    if not validation:
      continue
    times, source = training_time(run.rows)
    how.add(source)
    steps = [r["step"] for r in validation]
    values = [r[run.metric] * (1 if run.is_lm else 100) for r in validation]
    labelled.add(run.attention)
    style = dict(color=palette[run.attention], marker=".", linestyle="-" if run.finished else ":")
    by_step.plot(steps, values, **style)
    timed = [(t, v) for t, v in ((_time_at(times, s), v) for s, v in zip(steps, values))
             if t is not None]
    if timed:
      by_time.plot(*zip(*timed), **style)
  ylabel = ("validation bits per byte" if any(r.is_lm for r in runs)
            else "validation accuracy (%)")
  by_step.set(xlabel="step", ylabel=ylabel, title=f"{task}: against step")
  by_time.set(xlabel="training time (s)", ylabel=ylabel, title=f"{task}: against training time")
  if labelled:
    handles = [Line2D([], [], color=palette[name], marker=".", label=name)
               for name in _attention_order(labelled)]
    figure.legend(handles=handles, loc="outside lower center", ncol=2, fontsize="small",
                  frameon=False)
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return "; ".join(sorted(how))


def plot_accuracy_vs_speed(runs, path, palette) -> bool:
  """LRA Figure 3 per task: mean test metric against mean training steps/s, marker area
  proportional to mean peak memory; each marker carries its mechanism's number in the legend below.
  False (and no file) when no finished run has all three."""
  points = {}
  for run in runs:
    results = run.results or {}
    metric = results.get("test_bits_per_byte" if run.is_lm else "test_accuracy")
    speed, memory = results.get("steps_per_sec"), results.get("peak_memory_bytes")
    if None in (metric, speed, memory):
      continue
    points.setdefault(run.task, {}).setdefault(run.attention, []).append((metric, speed, memory))
  if not points:
    return False
  tasks = _task_order(points)
  names = _attention_order(a for task in points.values() for a in task)
  numbers = {name: i for i, name in enumerate(names, 1)}
  largest = max(m for task in points.values() for values in task.values() for _, _, m in values)
  columns = min(len(tasks), 3)
  legend_columns = 2 if columns > 1 else 1
  rows = math.ceil(len(tasks) / columns)
  figure, axes = plt.subplots(
      rows, columns, squeeze=False, layout="constrained",
      figsize=(5 * columns, 4 * rows + 0.25 * math.ceil(len(numbers) / legend_columns)))
  for axis, task in zip(axes.flat, tasks):
    lm = task in LM_TASKS or any(r.is_lm for r in runs if r.task == task)
    for attention, values in sorted(points[task].items()):
      metric, speed, memory = (float(np.mean(column)) for column in zip(*values))
      metric = metric if lm else metric * 100
      axis.scatter(speed, metric, s=1500 * memory / largest, color=palette[attention], alpha=0.6,
                   edgecolors="black", linewidths=0.5)
      axis.annotate(str(numbers[attention]), (speed, metric), fontsize="small", ha="center",
                    va="center")
    axis.margins(0.25)
    axis.set(xscale="log", xlabel="training steps/s",
             ylabel="test bits per byte" if lm else "test accuracy (%)",
             title=f"{task} (area: peak memory)")
  for axis in list(axes.flat)[len(tasks):]:
    axis.set_visible(False)
  handles = [Line2D([], [], marker="o", linestyle="", color=palette[name], alpha=0.6,
                    markeredgecolor="black", label=f"{number}  {name}")
             for name, number in numbers.items()]
  figure.legend(handles=handles, loc="outside lower center", ncol=legend_columns,
                fontsize="small", frameon=False)
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return True


# ------------------------------------------------------------------ the report


def _write_csv(path, rows, fields):
  tmp = pathlib.Path(path).with_suffix(".csv.tmp")
  with tmp.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  tmp.replace(path)


def _run_row(run: Run) -> dict:
  results = run.results or {}
  best = results.get("best_validation_bits_per_byte" if run.is_lm else "best_validation_accuracy")
  return dict(task=run.task, attention=run.attention, seed=run.seed, finished=run.finished,
              test_accuracy=results.get("test_accuracy"),
              test_bits_per_byte=results.get("test_bits_per_byte"), best_validation=best,
              best_step=results.get("best_step"), last_step=run.last_step,
              num_train_steps=run.config.get("num_train_steps"),
              steps_per_sec=results.get("steps_per_sec"),
              peak_memory_bytes=results.get("peak_memory_bytes"),
              num_devices=results.get("num_devices"), identity_from=run.identity_from,
              workdir=str(run.path))


def write_report(root, out=None, benchmarks=()) -> dict[str, pathlib.Path]:
  """Reads every workdir under `root` and writes the report into `out` (default `root`); returns
  the paths written by name."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise ValueError(f"ROOT={root}: expected a folder of workdirs (e.g. the sweep's --root)")
  out = pathlib.Path(out or root)
  out.mkdir(parents=True, exist_ok=True)
  runs, notes = find_runs(root)
  benchmark_results = find_benchmarks(root, benchmarks)
  commit = git_commit() or "unknown (not a git checkout)"
  written = {}
  md = [f"# Report of {root}", "",
        f"{sum(r.finished for r in runs)} finished and {sum(not r.finished for r in runs)} "
        f"unfinished runs; report written at commit {short_id(commit)}.", ""]
  csv_rows = []

  classification = [r for r in runs if not r.is_lm]
  if any(r.finished for r in classification):
    lines, rows = accuracy_table(classification)
    md += ["## Test accuracy (%) (LRA Table 1 layout)", "",
           "Mean ± sample standard deviation over seeds (number of seeds); test accuracy of each "
           "run's best-validation checkpoint. Avg: the mean over the row's tasks "
           f"({', '.join(NOT_AVERAGED)} left out, as in LRA), only where every task has a run.",
           "", *lines, "", "Where the numbers came from:", "",
           *run_provenance(classification, _task_order(r.task for r in classification), commit), ""]
    csv_rows += rows
  lm_runs = [r for r in runs if r.is_lm]
  if any(r.finished for r in lm_runs):
    lines, rows = lm_table(lm_runs)
    md += ["## Language modelling: bits per byte (lower is better)", "", *lines, "",
           "Where the numbers came from:", "",
           *run_provenance(lm_runs, _task_order(r.task for r in lm_runs), commit), ""]
    csv_rows += rows
  if any(r.finished for r in runs):
    lines, rows = run_speed_table(runs)
    md += ["## Training speed and memory of these runs", "",
           f"Median training steps/s and peak memory per run, averaged over seeds; in brackets "
           f"the ratio to {BASELINE} on the same task. Peak memory: the device's peak where the "
           "backend reports one, else XLA's compiled memory of the train step.", "", *lines, ""]
    csv_rows += rows
  for path, payload in benchmark_results:
    lines, rows = benchmark_table(payload)
    md += ["## Speed and memory by length (LRA Table 2 layout)", "",
           "Training steps/s and peak memory in GiB at each sequence length; in brackets the "
           "ratio to the baseline at the same length.", "", *lines, "",
           "Where the numbers came from:", "", *benchmark_provenance(path, payload, commit), ""]
    csv_rows += rows

  unfinished = [r for r in runs if not r.finished]
  if unfinished:
    md += ["## Unfinished runs (no results.json; not in the tables)", ""]
    md += [f"- {r.task} {r.attention} seed{r.seed}: last logged step {r.last_step}, `{r.path}`"
           for r in unfinished]
    md.append("")
  from_path = [r for r in runs if r.identity_from == "path"]
  if from_path:
    notes.append(f"task, attention and seed of {len(from_path)} workdir(s) without a config in "
                 f"results.json or {RUN_RECORD} were read from their <task>/<attention>/seed<k> path")

  figures, timing = [], set()
  palette = colours(_attention_order(r.attention for r in runs))
  for task in _task_order(r.task for r in runs):
    path = out / f"curves_{task}.png"
    timing.add(plot_curves(runs, task, path, palette))
    written[path.stem] = path
    figures.append(f"![{task} learning curves]({path.name})")
  if figures:
    figures.append("Learning curves: one line per run, dotted while unfinished. Training time: "
                   + "; ".join(sorted(t for t in timing if t)) + ".")
  if plot_accuracy_vs_speed(runs, out / "accuracy_vs_speed.png", palette):
    written["accuracy_vs_speed"] = out / "accuracy_vs_speed.png"
    figures.append("![test metric against training speed; marker area: peak memory]"
                   "(accuracy_vs_speed.png)")
  if figures:
    md += ["## Plots", "", *(line for figure in figures for line in (figure, ""))]
  if notes:
    md += ["## Notes", "", *[f"- {note}" for note in notes], ""]

  _write_csv(out / "report.csv", csv_rows, CSV_FIELDS)
  _write_csv(out / "runs.csv", [_run_row(r) for r in runs], RUN_FIELDS)
  tmp = out / "report.md.tmp"
  tmp.write_text("\n".join(md).rstrip() + "\n")
  tmp.replace(out / "report.md")
  written.update(report=out / "report.md", csv=out / "report.csv", runs=out / "runs.csv")
  return written


_OUT = flags.DEFINE_string("out", None, "Folder for the report (default: ROOT).")
_BENCHMARK = flags.DEFINE_multi_string("benchmark", [], "An benchmarks.harness results.json for the "
                                       "speed table (repeatable); those under ROOT are read anyway.")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("expected one ROOT folder: python -m lra.report ROOT [--out=DIR]")
  try:
    written = write_report(argv[1], _OUT.value, _BENCHMARK.value)
  except ValueError as error:
    raise SystemExit(f"lra.report: {error}") from None
  print(f"wrote {written['report']}, {written['csv']}, {written['runs']} and "
        f"{sum(p.suffix == '.png' for p in written.values())} plots")


if __name__ == "__main__":
  app.run(main)
