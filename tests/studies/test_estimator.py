"""The estimator study's quick mode: files written, and the effects it documents visible on a tiny grid."""

import json

import pytest

from studies import estimator as estimator_study


@pytest.mark.slow
def test_quick_study_writes_tables_that_show_the_sharp_attention_failure(tmp_path):
  estimator_study.main(["--quick", "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  assert "## Error against length" in (tmp_path / "results.md").read_text()
  grid = {(r["kind"], r["sigma"]): r for r in results["rows"]["grid"]}
  gaussian_1, gaussian_3 = grid["rfa_gaussian", 1.0], grid["rfa_gaussian", 3.0]
  # Sin/cos features: fine for near-uniform attention, useless and sign-flipping for sigma 3.
  assert gaussian_1["relative_error"] < 0.6 and gaussian_1["negative_fraction"] == 0
  assert gaussian_3["relative_error"] > 5 and gaussian_3["negative_fraction"] > 0.1
  # Positive features never give a non-positive denominator and stay within a few times the target.
  assert all(grid["positive", s]["floor_fraction"] == 0 for s in (1.0, 3.0))
  assert grid["positive", 3.0]["relative_error"] < gaussian_3["relative_error"] / 5
  # Arc-cosine attention does not depend on sigma (both kernel and features are 1-homogeneous).
  assert grid["rfa_arccos", 1.0]["relative_error"] == grid["rfa_arccos", 3.0]["relative_error"]
  assert grid["rfa_arccos", 3.0]["exact_entropy"] > 0.99
  sharp = results["rows"]["sharpness"]
  assert {r["kind"] for r in sharp} == {"rfa_gaussian", "positive"}
  assert all(r["exact_entropy"] < grid["rfa_gaussian", 3.0]["exact_entropy"] for r in sharp)
