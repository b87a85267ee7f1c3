"""benchmarks.profile: XLA op times of one harness training step from a profiler trace."""

import json

from benchmarks import profile

TINY = ["model.num_layers=1", "model.emb_dim=16", "model.num_heads=2", "model.qkv_dim=16",
        "model.mlp_dim=16"]


def test_op_times_of_a_tiny_step_are_saved(tmp_path):
  rows = profile.main(["--attentions", "rfa_gaussian", "--lengths", "16", "--batch-size", "8",
                       "--steps", "2", "--top", "3", "--out", str(tmp_path), "--override", *TINY])
  (row,) = rows
  assert row["wall_ms"] > 0 and row["op_ms"] > 0
  assert row["ops_ms"] and all(ms >= 0 for ms in row["ops_ms"].values())
  assert not any(kind[-1].isdigit() for kind in row["ops_ms"])  # summed by kind
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["rows"][0]["ops_ms"] == row["ops_ms"]
  assert "rfa_gaussian, L=16" in (tmp_path / "results.md").read_text()
