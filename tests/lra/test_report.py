"""lra.report on fake workdirs written here: tables, missing cells, seeds, provenance, CSV, plots."""

import csv
import itertools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lra import attention, report

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATED = {"files": [{"path": "data/listops-1000/basic_train.tsv", "bytes": 99, "sha256": "a" * 64}],
             "generated": True, "generator": {"generator": "lra.data.listops.generate", "seed": 0,
                                              "min_length": 16, "max_length": 128}}


def write_workdir(path, task, attention, seed, test_accuracy=None, *, validation=((4, 0.2), (8, 0.3)),
                  steps_per_sec=10.0, memory=2**20, data=GENERATED, finished=True, config=None,
                  record=True, **results):
  """A workdir as lra.train leaves it: run.json (if `record`), metrics.jsonl (train rows every 2
  steps at `steps_per_sec`, validation rows), and results.json when `finished`."""
  path.mkdir(parents=True)
  last = max(step for step, _ in validation)
  rows = [dict(step=s, split="train", loss=1.0, accuracy=0.1, steps_per_sec=steps_per_sec)
          for s in range(2, last + 1, 2)]
  metric = "bits_per_byte" if task == "lm" else "accuracy"
  rows += [dict(step=s, split="validation", loss=1.0, **{metric: value}) for s, value in validation]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  full_config = dict(task=task, attention=attention, seed=seed, num_train_steps=last,
                     batch_size=8, max_length=128, model=dict(num_layers=2, attention_options={}),
                     **(config or {}))
  if record:
    (path / "run.json").write_text(json.dumps(dict(config=full_config, data=data)))
  if finished:
    (path / "results.json").write_text(json.dumps(dict(
        test_accuracy=test_accuracy, test_loss=1.0, best_step=last, steps_per_sec=steps_per_sec,
        peak_memory_bytes=memory, num_devices=8, num_processes=1, data=data, config=full_config,
        **results)))
  return path


def table(markdown: str, heading: str) -> dict[str, dict[str, str]]:
  """The markdown table under `heading`: first column -> {column name: cell}."""
  lines = markdown.split(f"## {heading}", 1)[1].splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
  header = [c.strip() for c in rows[0].strip("|").split("|")]
  cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]
  return {row[0]: dict(zip(header[1:], row[1:])) for row in cells}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
  """listops: softmax over 3 seeds, rfa_gaussian over 2; text: softmax only; an unfinished linear
  run; a language-model run; a benchmark results.json; a folder that is not a workdir."""
  root = tmp_path_factory.mktemp("runs")
  for seed, accuracy in enumerate((0.30, 0.34, 0.38)):
    write_workdir(root / "listops" / "softmax" / f"seed{seed}", "listops", "softmax", seed,
                  accuracy, steps_per_sec=10.0, memory=4 * 2**20)
  for seed, accuracy in enumerate((0.17, 0.19)):
    write_workdir(root / "listops" / "rfa_gaussian" / f"seed{seed}", "listops", "rfa_gaussian",
                  seed, accuracy, steps_per_sec=20.0, memory=2**20, git_commit="abc123def4567890")
  write_workdir(root / "text" / "softmax" / "seed0", "text", "softmax", 0, 0.60,
                data={"files": [{"path": "data/imdb/train.tfrecord", "size": 1234,
                                 "sha256": "f" * 64}]}, config=dict(learning_rate=0.1))
  write_workdir(root / "text" / "softmax" / "seed1", "text", "softmax", 1, 0.62,
                data=None, config=dict(learning_rate=0.2))
  write_workdir(root / "listops" / "linear" / "seed0", "listops", "linear", 0,
                validation=((4, 0.1),), finished=False)
  write_workdir(root / "listops" / "local" / "seed2", "listops", "local", 2,
                validation=((4, 0.1), (6, 0.1)), finished=False, record=False)
  write_workdir(root / "lm" / "rfa_gaussian" / "seed0", "lm", "rfa_gaussian", 0, None,
                validation=((4, 3.0), (8, 2.5)), test_bits_per_byte=2.4,
                best_validation_bits_per_byte=2.5)
  (root / "bench").mkdir()
  (root / "bench" / "results.json").write_text(json.dumps(dict(
      rows=[dict(attention="softmax", length=1024, memory_bytes=2 * 2**30, steps_per_sec=1.0,
                 step_times=[1.0, 1.0]),
            dict(attention="softmax", length=2048, memory_bytes=8 * 2**30, steps_per_sec=0.25),
            dict(attention="rfa_gaussian", length=1024, memory_bytes=2**30, steps_per_sec=2.0),
            dict(attention="rfa_gaussian", length=2048, memory_bytes=2**30,
                 skipped="needs 1.0 GiB > --memory-budget-gib"),
            dict(attention="linear", length=1024, memory_bytes=2**30, steps_per_sec=4.0)],
      args=dict(batch_size=4, steps=2, baseline="softmax"), device="cpu:0", device_count=1,
      machine="x86_64", jax_version="0.10.2")))
  (root / "stray").mkdir()
  (root / "stray" / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
  out = root / "out"
  written = report.write_report(root, out)
  return root, out, written, (out / "report.md").read_text()


def test_accuracy_table_has_seed_means_stds_counts_and_marks_missing_cells(grid):
  *_, markdown = grid
  accuracy = table(markdown, "Test accuracy")
  assert list(accuracy) == ["softmax", "linear", "local", "rfa_gaussian"]
  assert accuracy["softmax"]["listops"] == "34.00 ± 4.00 (3)"
  assert accuracy["softmax"]["text"] == "61.00 ± 1.41 (2)"
  assert accuracy["softmax"]["Avg"] == "47.50"
  assert accuracy["rfa_gaussian"]["listops"] == "18.00 ± 1.41 (2)"
  assert accuracy["rfa_gaussian"]["text"] == report.MISSING
  assert accuracy["rfa_gaussian"]["Avg"] == report.MISSING
  assert set(accuracy["linear"].values()) == set(accuracy["local"].values()) == {report.MISSING}
  assert "lm" not in accuracy["softmax"]


def test_one_seed_has_no_std_and_average_leaves_pathx_out():
  cell = report.Cell([0.5], [0])
  assert report._format(cell) == "50.00 (1)" and cell.std is None
  table = {("softmax", "listops"): report.Cell([0.4], [0]),
           ("softmax", "pathx"): report.Cell([0.9], [0])}
  assert report.average_row(table, "softmax", ["listops", "pathx"]) == pytest.approx(0.4)
  assert report.average_row(table, "softmax", ["listops", "text"]) is None


def test_unfinished_runs_and_unreadable_folders_are_listed_not_counted(grid):
  root, _, _, markdown = grid
  unfinished = markdown.split("## Unfinished runs", 1)[1]
  assert "listops linear seed0: last logged step 4" in unfinished
  assert "listops local seed2: last logged step 6" in unfinished
  assert f"{root / 'stray'}: no config in results.json or run.json" in markdown
  assert "1 workdir(s) without a config in results.json or run.json were read from their" in markdown
  assert "bench" not in table(markdown, "Test accuracy")  # the benchmark is not a run


def test_language_model_runs_get_their_own_bits_per_byte_table(grid):
  *_, markdown = grid
  lm = table(markdown, "Language modelling")
  assert lm == {"rfa_gaussian": {"lm test bits/byte": "2.4000 (1)",
                                 "lm best validation bits/byte": "2.5000 (1)"}}


def test_speed_tables_give_ratios_to_softmax_and_mark_skipped_and_missing_lengths(grid):
  *_, markdown = grid
  runs = table(markdown, "Training speed and memory of these runs")
  assert runs["rfa_gaussian"]["listops steps/s"] == "20 (2.00×)"
  assert runs["rfa_gaussian"]["listops peak memory MiB"] == "1 (0.25×)"
  assert runs["rfa_gaussian"]["text steps/s"] == report.MISSING
  bench = table(markdown, "Speed and memory by length")
  assert bench["rfa_gaussian"]["1024 steps/s (×softmax)"] == "2 (2.00×)"
  assert bench["rfa_gaussian"]["2048 steps/s (×softmax)"] == "skipped"
  assert bench["rfa_gaussian"]["2048 memory GiB (×softmax)"] == "1.00 (0.12×)"
  assert bench["linear"]["2048 steps/s (×softmax)"] == report.MISSING
  assert bench["softmax"]["1024 memory GiB (×softmax)"] == "2.00 (1.00×)"


def test_every_table_states_its_provenance(grid):
  root, _, _, markdown = grid
  provenance = markdown.split("Where the numbers came from:")
  assert len(provenance) == 4  # accuracy, language modelling, benchmark
  accuracy = provenance[1]
  assert ("**listops** (5 runs): data GENERATED by lra.data.listops.generate (seed 0; "
          "max_length=128, min_length=16); data/listops-1000/basic_train.tsv (99 bytes, "
          "sha256 aaaaaaaaaaaa)") in accuracy
  assert "8 devices (kind not recorded in results.json)" in accuracy
  assert "8 training steps (batch 8, length 128)" in accuracy
  assert "abc123def456 (2 runs); not recorded (3 runs)" in accuracy
  assert "data/imdb/train.tfrecord (1234 bytes, sha256 ffffffffffff)" in accuracy
  assert "not recorded in results.json (1 run)" in accuracy
  assert "configs differ in learning_rate" in accuracy
  assert "report's commit" in provenance[2]
  assert f"`{root / 'bench' / 'results.json'}`" in provenance[3]
  assert "batch 4, median of 2 timed steps" in provenance[3]


def test_a_key_added_after_some_runs_differs_only_where_its_value_changes_what_they_did():
  old = {"seed": 0, "model": {"emb_dim": 8, "attention_options": {"window": 16}}}
  new = {"seed": 1, "microbatches": 1, "model": {"emb_dim": 8, "attention_options": {}}}
  assert report.differing_keys([old, new]) == []
  assert report.differing_keys([old, {**new, "microbatches": 4}]) == ["microbatches"]
  assert report.differing_keys([old, {**new, "model": {"emb_dim": 16}}]) == ["model.emb_dim"]


def test_csv_files_parse_and_hold_the_table_cells(grid):
  _, out, written, _ = grid
  with open(written["csv"], newline="") as f:
    rows = list(csv.DictReader(f))
  cell = next(r for r in rows if r["table"] == "accuracy" and r["attention"] == "softmax"
              and r["task"] == "listops")
  assert float(cell["mean"]) == pytest.approx(0.34)
  assert float(cell["std"]) == pytest.approx(0.04)
  assert (cell["count"], cell["seeds"]) == ("3", "0 1 2")
  average = next(r for r in rows if r["task"] == "avg" and r["attention"] == "softmax")
  assert float(average["mean"]) == pytest.approx(0.475)
  assert {r["table"] for r in rows} == {"accuracy", "lm", "run_speed", "benchmark"}
  assert not any(r["attention"] == "linear" and r["table"] == "accuracy" for r in rows)
  with open(written["runs"], newline="") as f:
    runs = list(csv.DictReader(f))
  assert len(runs) == 10
  linear = next(r for r in runs if r["attention"] == "linear")
  assert (linear["finished"], linear["identity_from"], linear["last_step"]) == ("False", "run.json",
                                                                              "4")
  local = next(r for r in runs if r["attention"] == "local")
  assert (local["seed"], local["identity_from"]) == ("2", "path")


def test_plots_are_written_nonempty_and_linked(grid):
  _, out, written, markdown = grid
  for name in ("curves_listops", "curves_text", "curves_lm", "accuracy_vs_speed"):
    path = out / f"{name}.png"
    assert written[name] == path and path.stat().st_size > 10_000
    with Image.open(path) as image:
      assert image.format == "PNG" and image.width > 400
      assert len(np.unique(np.asarray(image.convert("L")))) > 10  # drawn, not blank
    assert f"]({name}.png)" in markdown
  assert "Training time: steps/s of the train rows, integrated" in markdown
  assert markdown.count("Training time:") == 1


def drawn_figure(monkeypatch, plot, *args):
  """The figure `plot(*args)` draws, caught where the report closes it."""
  closed = []
  monkeypatch.setattr(report.plt, "close", closed.append)
  assert plot(*args) is not False
  (figure,) = closed
  return figure


def test_accuracy_vs_speed_numbers_each_mechanism_once_and_names_it_in_the_legend(grid, tmp_path,
                                                                                 monkeypatch):
  runs, _ = report.find_runs(grid[0])
  figure = drawn_figure(monkeypatch, report.plot_accuracy_vs_speed, runs, tmp_path / "plot.png",
                        report.colours(["softmax", "rfa_gaussian", "linear"]))
  (legend,) = figure.legends
  assert [t.get_text() for t in legend.get_texts()] == ["1  softmax", "2  rfa_gaussian"]
  marks = {axis.get_title(): sorted(t.get_text() for t in axis.texts)
           for axis in figure.axes if axis.get_visible()}
  assert marks == {"listops (area: peak memory)": ["1", "2"],
                   "text (area: peak memory)": ["1"], "lm (area: peak memory)": ["2"]}


def test_curves_name_each_mechanism_once_below_the_plots_in_the_tables_order(grid, tmp_path,
                                                                           monkeypatch):
  runs, _ = report.find_runs(grid[0])
  figure = drawn_figure(monkeypatch, report.plot_curves, runs, "listops", tmp_path / "curves.png",
                        report.colours(["softmax", "rfa_gaussian", "linear", "local"]))
  assert not any(axis.get_legend() for axis in figure.axes)  # nothing drawn over the curves
  (legend,) = figure.legends
  assert [t.get_text() for t in legend.get_texts()] == ["softmax", "linear", "local", "rfa_gaussian"]


def test_training_time_integrates_steps_per_second_or_uses_a_time_field():
  rows = [dict(step=10, split="train", steps_per_sec=10.0),
          dict(step=10, split="validation", accuracy=0.1),
          dict(step=20, split="train", steps_per_sec=5.0)]
  times, how = report.training_time(rows)
  assert times == {0: 0.0, 10: 1.0, 20: 3.0} and "integrated" in how
  assert report._time_at(times, 15) == pytest.approx(2.0)
  assert report._time_at(times, 30) is None
  timed = [dict(r, time=7.0 * i) for i, r in enumerate(rows)]
  assert report.training_time(timed) == ({10: 7.0, 20: 14.0}, "the metrics rows' `time`")


@pytest.mark.slow
def test_cli_writes_into_root_by_default_and_reads_a_benchmark_flag(tmp_path):
  write_workdir(tmp_path / "listops" / "softmax" / "seed0", "listops", "softmax", 0, 0.3)
  command = [sys.executable, "-m", "lra.report", str(tmp_path),
             f"--benchmark={ROOT / 'benchmarks' / 'results' / 'harness' / 'results.json'}"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  markdown = (tmp_path / "report.md").read_text()
  assert "| softmax | 30.00 (1) | 30.00 |" in markdown
  assert "## Speed and memory by length" in markdown
  bad = subprocess.run([sys.executable, "-m", "lra.report", str(tmp_path / "missing")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "expected a folder of workdirs" in bad.stderr


def test_a_benchmark_flag_must_name_a_benchmark_results_file(tmp_path):
  run = write_workdir(tmp_path / "a", "listops", "softmax", 0, 0.3)
  with pytest.raises(ValueError, match="--benchmark=.*expected the results.json that benchmarks.harness"):
    report.write_report(tmp_path, benchmarks=[run / "results.json"])


def test_runs_are_named_by_attention_and_the_options_that_differ_from_its_defaults():
  defaults = attention.default_options("rfa_gaussian")
  options = {**defaults, "window": 32, "feature_map": "positive"}
  assert report.variant(dict(attention="rfa_gaussian", model=dict(attention_options=defaults))) == \
      "rfa_gaussian"
  assert report.variant(dict(attention="rfa_gaussian", model=dict(attention_options=options),
                             task_options=dict(stateful=True, stream_segments=8))) == \
      "rfa_gaussian (feature_map=positive, window=32, stateful, stream_segments=8)"
  assert report.variant(dict(attention="softmax", model=dict(attention_options={}))) == "softmax"
  assert report.variant(dict(attention="softmax", model=dict(attention_options={}),
                             task_options=dict(pack_documents=True))) == "softmax (packed documents)"
