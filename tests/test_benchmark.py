"""The attention benchmark end to end on tiny sizes."""

import json

import jax
import jax.numpy as jnp

from rfa_jax import benchmark

FORMS = ("softmax", "rfa", "softmax causal", "rfa causal token scan", "rfa causal chunked C=32",
         "rfa gated chunked C=32")


def test_quick_run_writes_every_row(tmp_path):
  benchmark.main(["--quick", "--lengths", "64", "128", "--chunk-sizes", "32", "--repeats", "1",
                  "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  measured = {(r["label"], r["length"], r["mode"]) for r in results["rows"]}
  assert measured == {(form, n, mode) for form in FORMS for n in (64, 128)
                      for mode in ("fwd", "fwd_bwd")}
  assert all(r["median_s"] > 0 and r["memory_bytes"] > 0 for r in results["rows"])
  assert {r["form"] for r in results["decode"]} == {"rfa_decode", "softmax_decode"}
  assert [c["item"] for c in results["checks"]] == ["a", "b", "b", "b", "c", "d"]
  assert all(c["status"] in ("PASS", "MISS") for c in results["checks"])
  assert results["bf16"]["max_relative_error"] < 0.03
  assert results["peak_flops_per_s"] > 0 and results["machine"]["jax_version"]
  for name in FORMS + ("rfa_decode", "softmax_decode", "Targets"):
    assert f"| {name} |" in table or name in table
  assert not list(tmp_path.glob("*.tmp"))


def test_computation_over_the_memory_budget_is_recorded_not_run():
  args = benchmark.parse_args(["--memory-budget-gib", "1e-9"])
  x = jnp.ones((64, 64))
  row = benchmark.measure(jax.jit(lambda x: x @ x), (x,), 2 * 64**3, args)
  assert "skipped" in row and "median_s" not in row and row["memory_bytes"] > 0
  assert benchmark.cell(row, "median_s", 1e3, ".2f").startswith("not run")
