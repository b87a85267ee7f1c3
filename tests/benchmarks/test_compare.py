"""benchmarks.compare: the library at another commit beside the checkout's, in one process."""

import json
import sys

import pytest

from benchmarks import compare


def test_a_commit_against_the_checkout(tmp_path):
  """HEAD's library against the checkout's: both import side by side, and time and memory ratios
  are reported per form and length."""
  compare.main(["--base", "HEAD", "--lengths", "64", "--forms", "rfa", "rfa gated chunked",
                "rfa packed (4 interleaved ids)", "--heads", "2", "--head-dim", "8", "--num-features", "8", "--repeats", "3",
                "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  assert [(r["form"], r["length"]) for r in results["rows"]] == [
      ("rfa", 64), ("rfa gated chunked", 64), ("rfa packed (4 interleaved ids)", 64)]
  for row in results["rows"]:
    assert row["time_ratio"] > 0 and len(row["base"]["times_s"]) == 3
    assert row["memory_ratio"] == pytest.approx(1.0, abs=0.2)
  assert compare.BASE_NAME in sys.modules and "| rfa gated chunked | 64 |" in \
      (tmp_path / "results.md").read_text()


def test_an_unknown_commit_is_named(tmp_path):
  with pytest.raises(ValueError, match="git archive no-such-commit rfa_jax failed"):
    compare.main(["--base", "no-such-commit", "--lengths", "64", "--out", str(tmp_path)])


def test_a_form_the_base_lacks_is_named(tmp_path):
  """Bidirectional gating (commit 77acfde) against its parent, which has no reverse_gate."""
  with pytest.raises(ValueError, match="'rfa bidirectional gated' does not run on the base version"):
    compare.main(["--base", "77acfde^", "--lengths", "16", "--forms", "rfa bidirectional gated",
                  "--heads", "1", "--head-dim", "4", "--num-features", "4", "--repeats", "1"])
