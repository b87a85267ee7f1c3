"""scripts/gpu_check.sh --quick end to end (tiny sizes, CPU), and its time budget and refusals."""

import json
import pathlib
import subprocess
import sys

import pytest

import fixtures
from benchmarks import gpu_check

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORMS = {"softmax", "rfa", "softmax_causal", "rfa_causal_scan", "rfa_causal_chunked",
         "rfa_gated_chunked", "rfa_positive", "rfa_window", "rfa_causal_window", "rfa_gated_window"}


def run_script(*args, timeout=600):
  env = fixtures.subprocess_env(1, PYTHON=sys.executable)
  completed = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=timeout)
  assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
  return completed.stdout


@pytest.mark.slow
def test_quick_check_runs_every_part(tmp_path):
  output = run_script("--quick", "--out", str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  kernels = results["kernels"]["bfloat16"]
  assert {r["form"] for r in kernels["rows"]} == FORMS
  assert all(r["median_s"] > 0 and r["memory_bytes"] > 0 and r["dtype"] == "bfloat16"
             for r in kernels["rows"])
  softmax = [r for r in kernels["rows"] if r["form"].startswith("softmax")]
  assert {r["implementation"] for r in softmax} == {"xla"}
  assert all("peak_fraction" in r for r in kernels["rows"])
  assert {r["form"] for r in kernels["decode"]} == {"rfa_decode", "rfa_positive_decode",
                                                    "rfa_window_decode", "softmax_decode"}
  assert "rows" in results["torch"] or results["torch"]["skipped"]
  harness = {r["attention"]: r for r in results["harness"]["rows"]}
  assert harness["rfa_gaussian"]["steps_per_sec"] > 0 and "speedup" in harness["rfa_gaussian"]
  (training,) = results["training"]
  assert training["steps_per_sec"] > 0 and training["test_loss"] > 0
  assert [c["item"] for c in results["targets"]] == ["1", "2", "2", "3", "3"]
  assert all(c["status"] in ("PASS", "MISS", "N/A") for c in results["targets"])
  assert set(results["part_seconds"]) == {"torch", "bfloat16", "harness", "training"}
  for check in results["targets"]:
    assert check["description"] in table and check["description"] in output
  for section in ("## Targets", "## Kernels", "## PyTorch", "## Harness", "## Training"):
    assert section in table


@pytest.mark.slow
def test_spent_time_budget_records_measurements_as_not_run(tmp_path):
  results = gpu_check.main(["--quick", "--skip-torch", "--time-budget-s", "0",
                            "--out", str(tmp_path)])
  rows = results["kernels"]["bfloat16"]["rows"]
  assert rows and all(r["skipped"] == "time budget spent" for r in rows)
  assert all(r["skipped"] == "time budget spent" for r in results["harness"]["rows"])
  assert results["training"][0]["skipped"] == "time budget spent"
  assert all(c["status"] == "N/A" for c in results["targets"])
  assert "not run" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_full_check_needs_a_gpu():
  with pytest.raises(SystemExit, match="no GPU"):
    gpu_check.main(["--skip-torch"])


def test_device_directory_is_a_plain_name():
  assert gpu_check.device_directory("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
  assert gpu_check.device_directory("  ") == "device"


def test_pytorch_rows_meet_their_jax_counterparts():
  """Targets and table from given rows: RFA's chunked forms against FLA's kernels at the same
  length, key dimension and mode."""
  jax_rows = [dict(form=form, label=form, chunk_size=16, length=64, mode="fwd_bwd", median_s=time)
              for form, time in (("rfa_causal_chunked", 2e-3), ("rfa_gated_chunked", 3e-3),
                                 ("softmax_causal", 4e-3))]
  torch_rows = [
      dict(form="fla_linear_attn", key_dim=16, length=64, mode="fwd_bwd", median_s=1e-3,
           flops_per_s=1e12, peak_bytes=2**20),
      dict(form="fla_simple_gla", key_dim=16, length=64, mode="fwd_bwd", median_s=1e-3,
           flops_per_s=1e12, peak_bytes=2**20),
      dict(form="torch_sdpa", causal=True, length=64, mode="fwd_bwd",
           skipped="out of memory: RESOURCE_EXHAUSTED")]
  results = dict(kernels={"bfloat16": dict(rows=jax_rows)}, torch=dict(rows=torch_rows),
                 harness=dict(rows=[]))
  fla = [c for c in gpu_check.targets(results, gpu_check.QUICK) if c["item"] == "2"]
  assert [(c["value"], c["status"]) for c in fla] == [(2.0, "PASS"), (3.0, "MISS")]
  table = gpu_check.torch_table(dict(results["torch"], torch_version="2.9"), jax_rows)
  assert "| fla_linear_attn (key dim 16) | 64 | fwd_bwd | 1.00 | 1.0 | 1.0 | 2.00" in table
  assert "out of memory" in table
