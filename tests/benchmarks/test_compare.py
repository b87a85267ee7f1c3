"""benchmarks.compare: form-by-form ratios of two code versions' kernel benchmark runs."""

import json

import pytest

from benchmarks import compare


def _run(folder, times, memory=100):
  folder.mkdir()
  rows = [dict(form="rfa", label="rfa", length=n, mode="fwd_bwd", median_s=t, memory_bytes=memory)
          for n, t in times.items()]
  rows.append(dict(form="softmax", label="softmax", length=64, mode="fwd_bwd", skipped="budget"))
  (folder / "results.json").write_text(json.dumps({"rows": rows}))
  return str(folder)


def test_ratios_use_the_median_of_the_runs_medians(tmp_path):
  base = [_run(tmp_path / "b0", {64: 1.0, 128: 2.0}), _run(tmp_path / "b1", {64: 3.0, 128: 2.0})]
  new = [_run(tmp_path / "n0", {64: 1.0, 256: 5.0}, memory=50)]
  compare.main(["--base", *base, "--new", *new, "--out", str(tmp_path / "out")])
  result = json.loads((tmp_path / "out" / "results.json").read_text())
  (row,) = result["rows"]  # only (rfa, 64, fwd_bwd) is in both; skipped rows are left out
  assert row["length"] == 64 and row["base"]["median_s"] == 2.0 and row["base"]["spread_s"] == 2.0
  assert row["time_ratio"] == 0.5 and row["memory_ratio"] == 0.5
  assert "| rfa | 64 | fwd_bwd | 2000.00 (2000.00) | 1000.00 (0.00) | 0.50 | 0.50 |" in \
      (tmp_path / "out" / "results.md").read_text()


def test_a_folder_without_results_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere/results.json does not exist"):
    compare.main(["--base", str(tmp_path / "nowhere"), "--new", str(tmp_path)])
