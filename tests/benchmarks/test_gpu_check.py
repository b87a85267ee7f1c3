"""scripts/gpu_check.sh --quick end to end (tiny sizes, CPU), its time budget and refusals, results
saved as they come, and the imports each part needs."""

import dataclasses
import json
import pathlib
import subprocess
import sys
import time

import pytest

import fixtures
from benchmarks import gpu_check

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORMS = {"softmax", "rfa", "softmax_causal", "rfa_causal_scan", "rfa_causal_chunked",
         "rfa_gated_chunked", "rfa_positive", "rfa_window", "rfa_causal_window", "rfa_gated_window",
         "rfa_causal_parallel", "rfa_gated_parallel", "rfa_packed", "rfa_causal_packed",
         "rfa_gated_packed", "rfa_bidirectional"}
# What the GPU machine lacks (docs/gpu.md); .whl/ brings some of them for the harness and training.
ABSENT = ("ml_collections", "tensorflow_datasets", "grain", "tensorboardX", "fla")
BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in {blocked!r}:
      raise ModuleNotFoundError(f"{{name}} is blocked by the test", name=name)
sys.meta_path.insert(0, Blocker())
"""


def run_script(*args, timeout=600):
  env = fixtures.subprocess_env(1, PYTHON=sys.executable)
  completed = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=timeout)
  assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
  return completed.stdout


@pytest.mark.slow
def test_quick_check_runs_every_step(tmp_path):
  output = run_script("--quick", "--out", str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  table = (tmp_path / "results.md").read_text()
  assert list(results["steps"]) == ["torch_targets", "kernel_targets", "harness",
                                    "kernels_bfloat16", "torch_rest", "training_rfa_gaussian"]
  assert all(step["status"] == "done" for step in results["steps"].values())
  kernels = results["kernels"]["bfloat16"]
  assert {r["form"] for r in kernels["rows"]} == FORMS
  assert [r["form"] for r in kernels["rows"][:4]] == list(gpu_check.TARGET_FORMS)
  assert all(r["median_s"] > 0 and r["memory_bytes"] > 0 and r["dtype"] == "bfloat16"
             for r in kernels["rows"])
  softmax = [r for r in kernels["rows"] if r["form"].startswith("softmax")]
  assert {(r["implementation"], r["implementation_reason"]) for r in softmax} == {
      ("xla", "backend cpu")}
  assert all("peak_fraction" in r for r in kernels["rows"])
  assert kernels["matmul_peak"]["warmed_s"] >= gpu_check.MATMUL_WARMUP_S
  assert {r["form"] for r in kernels["decode"]} == {"rfa_decode", "rfa_positive_decode",
                                                    "rfa_window_decode", "softmax_decode"}
  assert [r["form"] for r in kernels["redraw"]] == ["redraw_gram_schmidt", "redraw_qr"]
  assert "Parallel / scanned state across chunks" in table and "Projection redraw" in table
  assert results["torch"]["rows"] or results["torch"]["skipped"]
  harness = {r["attention"]: r for r in results["harness"]["rows"]}
  assert harness["rfa_gaussian"]["steps_per_sec"] > 0 and "speedup" in harness["rfa_gaussian"]
  assert harness["softmax"]["implementation"] == "xla"
  short = {r["attention"]: r for r in results["harness_short"]["rows"]}
  assert set(short) == set(gpu_check.QUICK.short_attentions)
  assert all(r["steps_per_sec"] > 0 and r["dtype"] == "float32" for r in short.values())
  assert "Short sequences" in table and "rfa_gaussian / rfa_arccos steps/s: " in table
  (training,) = results["training"]
  assert training["steps_per_sec"] > 0 and training["test_loss"] > 0
  assert [c["item"] for c in results["targets"]] == ["1", "2", "2", "3", "3"]
  assert all(c["status"] in ("PASS", "MISS", "N/A") for c in results["targets"])
  for check in results["targets"]:
    assert check["description"] in table and check["description"] in output
  for section in ("## Targets", "## Kernels", "## PyTorch", "## Harness", "## Training"):
    assert section in table
  assert "gpu_check: step training_rfa_gaussian" in (tmp_path / "gpu_check.log").read_text()


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
def test_full_check_needs_a_gpu(tmp_path):
  with pytest.raises(SystemExit, match="no GPU"):
    gpu_check.main(["--skip-torch", "--out", str(tmp_path)])
  assert json.loads((tmp_path / "results.json").read_text())["machine"]["platform"] == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("modules, blocked", [
    (("benchmarks.attention", "benchmarks.harness", "benchmarks.gpu_check"), ABSENT),
    (("lra.train", "lra.data"), ("tensorflow_datasets", "grain", "tensorboardX"))])
def test_parts_import_without_what_they_do_not_need(modules, blocked):
  """The kernel benchmark and the PyTorch steps need only JAX, Flax and numpy; the harness and
  training need tensorflow-datasets only to read IMDb or CIFAR-10, grain only to read data and
  tensorboardX only to write event files."""
  code = BLOCKER.format(blocked=set(blocked)) + "\n".join(f"import {m}" for m in modules)
  completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, env=fixtures.subprocess_env(1), timeout=300)
  assert completed.returncode == 0, completed.stderr[-3000:]


def test_results_are_saved_before_anything_is_measured(tmp_path):
  """What a kill leaves: results.json, then results.md, from the first moment."""
  results = dict(args={}, sizes=dataclasses.asdict(gpu_check.QUICK),
                 steps={"kernel_targets": dict(status="running", share_s=1.0)})
  gpu_check.save(tmp_path, results)
  assert gpu_check.load(tmp_path)["targets"][0]["status"] == "N/A"
  assert "| kernel_targets | running | - | 1 |" in (tmp_path / "results.md").read_text()


def test_later_steps_share_the_time_by_measured_cost():
  """Each step's share: its measurement count times the seconds a measurement took in the target
  steps (compile, warm-up and timed calls; PyTorch's for PyTorch steps)."""
  timed = dict(median_s=1.0, compile_s=2.0, warmup_s=0.5, times_s=[0.5])  # 3 s a measurement
  results = dict(sizes=dataclasses.asdict(gpu_check.QUICK), kernels={"bfloat16": dict(rows=[timed])},
                 torch=dict(rows=[dict(timed, compile_s=0.0, warmup_s=9.0)]))  # 9.5 s
  torch_cost = 9.5 * gpu_check.measurement_count("torch_rest", gpu_check.QUICK)
  harness_cost = 3.0 * gpu_check.measurement_count("harness", gpu_check.QUICK)
  start = time.time()
  deadline = gpu_check.step_deadline("torch_rest", ["torch_rest", "harness"], results, start, 1e6)
  assert deadline - start == pytest.approx(torch_cost / (torch_cost + harness_cost) * 1e6, abs=10)
  assert gpu_check.step_deadline("kernel_targets", [], results, start, 100.0) == start + 40.0


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
  results = dict(sizes=dataclasses.asdict(gpu_check.QUICK),
                 kernels={"bfloat16": dict(rows=jax_rows)}, torch=dict(rows=torch_rows))
  fla = [c for c in gpu_check.targets(results) if c["item"] == "2"]
  assert [(c["value"], c["status"]) for c in fla] == [(2.0, "PASS"), (3.0, "MISS")]
  table = gpu_check.torch_table(dict(results["torch"], torch_version="2.9"), jax_rows)
  assert "| fla_linear_attn (key dim 16) | 64 | fwd_bwd | 1.00 | 1.0 | 1.0 | 2.00" in table
  assert "out of memory" in table


def test_pytorch_targets_come_first():
  targets = gpu_check.torch_rows(gpu_check.FULL, targets_only=True)
  assert {(r["form"], r["length"], r["mode"], r.get("key_dim")) for r in targets} == {
      ("fla_linear_attn", 16384, "fwd_bwd", 64), ("fla_simple_gla", 16384, "fwd_bwd", 64),
      ("torch_sdpa", 16384, "fwd_bwd", None)}
  rest = gpu_check.torch_rows(gpu_check.FULL, targets_only=False)
  assert len(targets) == 4 and not any(r in rest for r in targets)
