"""The attention benchmark end to end on tiny sizes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rfa_jax
from benchmarks import attention as benchmark

FORMS = ("softmax", "rfa", "softmax causal", "rfa causal token scan", "rfa causal chunked C=32",
         "rfa gated chunked C=32", "rfa positive features", "rfa + window 32",
         "rfa causal chunked C=32 + window 32", "rfa gated chunked C=32 + window 32",
         "rfa causal chunked C=32 parallel", "rfa gated chunked C=32 parallel",
         "rfa packed (4 sequences a row)", "rfa causal chunked C=32 packed",
         "rfa gated chunked C=32 packed", "rfa bidirectional gated C=32")


DECODERS = ("rfa_decode", "rfa_positive_decode", "rfa_window_decode", "softmax_decode")


@pytest.mark.slow
def test_quick_run_writes_every_row(tmp_path):
  benchmark.main(["--quick", "--lengths", "64", "--chunk-sizes", "32", "--repeats", "1",
                  "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  measured = {(r["label"], r["length"], r["mode"]) for r in results["rows"]}
  assert measured == {(form, 64, mode) for form in FORMS for mode in ("fwd", "fwd_bwd")}
  assert all(r["median_s"] > 0 and r["memory_bytes"] > 0 for r in results["rows"])
  assert {r["form"] for r in results["decode"]} == set(DECODERS)
  assert [c["item"] for c in results["checks"]] == ["a", "b", "b", "b", "c", "d"]
  assert all(c["status"] in ("PASS", "MISS") for c in results["checks"])
  assert results["bf16"]["max_relative_error"] < 0.03
  assert results["peak_flops_per_s"] > 0 and results["machine"]["jax_version"]
  assert [r["form"] for r in results["redraw"]] == ["redraw_gram_schmidt", "redraw_qr"]
  for name in FORMS + DECODERS + ("Targets", "rfa_gated_packed / rfa_gated_chunked: time",
                                  "rfa_gated_parallel / rfa_gated_chunked: time",
                                  "rfa_bidirectional / rfa_gated_chunked: time"):
    assert f"| {name} |" in table or name in table
  assert not list(tmp_path.glob("*.tmp"))


def test_computation_over_the_memory_budget_is_recorded_not_run():
  args = benchmark.parse_args(["--memory-budget-gib", "1e-9"])
  x = jnp.ones((64, 64))
  row = benchmark.measure(jax.jit(lambda x: x @ x), (x,), 2 * 64**3, args)
  assert "skipped" in row and "median_s" not in row and row["memory_bytes"] > 0
  assert benchmark.cell(row, "median_s", 1e3, ".2f").startswith("not run")


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_forms_are_exact_attention(causal):
  """jax.nn.dot_product_attention (XLA here) against the explicit reference: outputs and the
  gradients that fwd_bwd measures."""
  form = next(f for f in benchmark.attention_forms([16])
              if f.name == ("softmax_causal" if causal else "softmax"))
  sizes = benchmark.Sizes(2, 2, 8, 4, 8)
  q, k, v, cotangent, gate = benchmark.make_inputs(jax.random.PRNGKey(0), 24, sizes, jnp.float32)
  reference = lambda q, k, v, g, w: rfa_jax.softmax_attention(q, k, v, causal=causal)
  expected_form = benchmark.Form("reference", "reference", None, reference)
  inputs = (q, k, v, cotangent, gate, None)
  np.testing.assert_allclose(benchmark.forward(form)(*inputs),
                             benchmark.forward(expected_form)(*inputs), atol=1e-5)
  for g, g_ref in zip(benchmark.forward_backward(form)(*inputs),
                      benchmark.forward_backward(expected_form)(*inputs)):
    np.testing.assert_allclose(g, g_ref, atol=1e-5)


def test_failures_are_recorded_not_raised():
  args = benchmark.parse_args([])

  def fails(x):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 64.00GiB")

  row = benchmark.measure(jax.jit(fails), (jnp.ones(3),), 1.0, args)
  assert row["skipped"].startswith("out of memory") and "median_s" not in row
  assert benchmark.cell(row, "median_s", 1e3, ".2f") == "OOM"
  assert benchmark.failure(ValueError("bad shape\nmore")) == "error: ValueError: bad shape"


def test_token_scan_limit_and_deadline_skip_measurements():
  args = benchmark.parse_args(["--quick", "--lengths", "32", "--chunk-sizes", "16",
                               "--scan-max-length", "16"])
  sizes = benchmark.Sizes(args.batch, args.heads, args.head_dim, args.num_features,
                          rfa_jax.feature_dim(args.num_features))
  rows = benchmark.attention_rows(args, sizes, deadline=0.0)
  scans = [r for r in rows if r["form"] == "rfa_causal_scan"]
  assert scans and all(r["skipped"].startswith("token scan runs to") for r in scans)
  assert all(r["skipped"] == "time budget spent" for r in rows if r not in scans)
  assert not any("implementation" in r for r in rows)  # nothing ran
