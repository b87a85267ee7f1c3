"""One-shot accelerator check: every speed and memory figure of the project on one GPU, side by side
in one run, with the targets of the accelerator issue.

    scripts/gpu_check.sh [--quick] [--out DIR] [--time-budget-s 480]

Parts, in this order (each stops starting new measurements when its share of --time-budget-s is
spent, and records the rest as not run; a measurement that runs out of memory or fails is recorded
and the run goes on):
1. PyTorch on the same shapes, in a subprocess that runs before JAX takes the device (the JAX
   process keeps what it allocates): flash-linear-attention's Triton chunk kernels
   (`chunk_linear_attn`, normalised, and `chunk_simple_gla`, head-wise gates) and
   `scaled_dot_product_attention`; only where `import torch, fla` works and CUDA is present.
2. The kernel benchmark (`benchmarks.attention`) in bfloat16 and float32: softmax through
   `jax.nn.dot_product_attention` (cuDNN where it compiles), RFA non-causal, causal chunked, gated
   chunked and the token scan up to --scan-max-length; forward and forward+backward; time, achieved
   TFLOP/s (analytic FLOPs, see `benchmarks.attention`) against the same run's matmul peak in that
   dtype,
   XLA's compiled memory and the device's peak bytes in use; the decoding benchmark.
3. The harness benchmark (`benchmarks.harness`) in LRA Table 2's protocol (text-task model, batch 32) in
   bfloat16: softmax, rfa_gaussian, rfa_arccos, linear and performer. (Gated RFA is causal only; the
   Table 2 encoder is bidirectional, so it has no gated row.)
4. A short real training run (`lra.train.train_and_evaluate`) on generated ListOps in bfloat16, for
   softmax and rfa_gaussian: steps/s, peak memory, loss.
Writes results.json (every raw figure) and results.md to --out (default
benchmarks/results/gpu/<device kind>/), atomically. `--quick`: the same code paths at tiny sizes on
any backend, for CI.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax.numpy as jnp

import rfa_jax
from benchmarks import attention as kernels
from benchmarks import harness
from lra import config_lib
from lra.records import markdown_table, max_rss_bytes, write_json_atomically, write_results

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGET_LENGTH, HARNESS_TARGET_LENGTH = 16384, 4096
CAUSAL_FORMS = ("softmax_causal", "rfa_causal_scan", "rfa_causal_chunked", "rfa_gated_chunked")
# Cumulative shares of the time budget at which each part stops starting new measurements.
DEADLINES = dict(torch=0.20, bfloat16=0.45, float32=0.57, harness=0.80, training=0.90)


@dataclasses.dataclass
class Sizes:
  """Everything a run measures, full or --quick. Lengths are measured in the order given (the
  targets' lengths first, so that a spent time budget cuts the others) and shown sorted."""
  lengths: list
  kernel_dtypes: tuple = ("bfloat16", "float32")
  batch: int = 8
  heads: int = 8
  head_dim: int = 64
  num_features: int = 64
  chunk_sizes: tuple = (64,)
  scan_max_length: int = 4096
  repeats: int = 5
  max_seconds: float = 2.0
  decode_tokens: int = 2048
  bf16_length: int = 4096
  matmul_size: int = 8192
  harness_attentions: tuple = ("softmax", "rfa_gaussian", "rfa_arccos", "linear", "performer")
  harness_lengths: tuple = (4096, 1024, 2048, 3072, 8192, 16384)
  harness_batch: int = 32
  harness_steps: int = 3
  harness_overrides: tuple = ()
  torch_lengths: tuple = (16384, 4096, 1024)
  fla_key_dims: tuple = (64, 128)
  training_attentions: tuple = ("softmax", "rfa_gaussian")
  training: dict = dataclasses.field(default_factory=lambda: {
      "num_train_steps": 200, "log_every": 50, "eval_every": 200, "checkpoint_every": 200,
      "num_eval_batches": 4, "warmup_steps": 50, "max_length": 2000,
      "task_options.generate_train": 4000, "task_options.generate_eval": 200,
      "task_options.min_length": 500, "task_options.max_length": 2000})


FULL = Sizes(lengths=[16384, 1024, 2048, 4096, 8192, 32768])
QUICK = Sizes(
    lengths=[64], kernel_dtypes=("bfloat16",), batch=1, heads=2, head_dim=16, num_features=8,
    chunk_sizes=(16,),
    scan_max_length=64, repeats=1, max_seconds=1.0, decode_tokens=16, bf16_length=64,
    matmul_size=128, harness_attentions=("softmax", "rfa_gaussian"), harness_lengths=(64,),
    harness_batch=8, harness_steps=1,
    harness_overrides=("model.num_layers=1", "model.emb_dim=16", "model.num_heads=2",
                       "model.qkv_dim=16", "model.mlp_dim=16"),
    torch_lengths=(64,), fla_key_dims=(16,), training_attentions=("rfa_gaussian",),
    training={"num_train_steps": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2,
              "num_eval_batches": 1, "warmup_steps": 1, "max_length": 32, "batch_size": 8,
              "model.num_layers": 1, "model.emb_dim": 16, "model.num_heads": 2,
              "model.qkv_dim": 16, "model.mlp_dim": 16,
              "task_options.generate_train": 16, "task_options.generate_eval": 8,
              "task_options.min_length": 8, "task_options.max_length": 32})


# Part 1: PyTorch, in its own process.

def torch_part(sizes: Sizes, path: pathlib.Path, deadline: float):
  """Times PyTorch's SDPA and flash-linear-attention's chunk kernels at the kernel benchmark's
  shapes (bf16, [batch, length, heads, dim]); writes {"rows": [...], ...} to `path` after every
  row, or {"skipped": reason}."""
  try:
    import torch
  except ImportError as error:
    info = dict(skipped=f"PyTorch is not importable ({error})")
  else:
    info = (None if torch.cuda.is_available() else
            dict(skipped="PyTorch sees no CUDA device", torch_version=torch.__version__))
  if info is not None:
    write_json_atomically(path, info)
    return info
  info = dict(torch_version=torch.__version__, device=torch.cuda.get_device_name(0), rows=[])
  kernels_by_name = {"torch_sdpa": None}
  try:
    import fla
    from fla.ops.linear_attn import chunk_linear_attn
    from fla.ops.simple_gla import chunk_simple_gla
    info["fla_version"] = getattr(fla, "__version__", "unknown")
    kernels_by_name.update(fla_linear_attn=chunk_linear_attn, fla_simple_gla=chunk_simple_gla)
  except Exception as error:  # noqa: BLE001 - FLA is optional; SDPA still runs
    info["fla_skipped"] = (f"flash-linear-attention is not importable "
                           f"({type(error).__name__}: {error})")
  torch.manual_seed(0)
  for length in sizes.torch_lengths:
    for name, kernel in kernels_by_name.items():
      variants = ([dict(causal=False), dict(causal=True)] if name == "torch_sdpa"
                  else [dict(key_dim=d) for d in sizes.fla_key_dims])
      for variant in variants:
        for mode in ("fwd", "fwd_bwd"):
          row = dict(form=name, length=length, mode=mode, **variant)
          if time.monotonic() > deadline:
            row["skipped"] = "time budget spent"
          else:
            row.update(_torch_measure(torch, name, kernel, length, mode, sizes, **variant))
          info["rows"].append(row)
          write_json_atomically(path, info)
          print(f"torch L={length:>6} {name} {variant} {mode}: "
                + (f"{row['median_s'] * 1e3:.2f} ms" if "median_s" in row else row["skipped"]),
                flush=True)
  return info


def _torch_measure(torch, name, kernel, length, mode, sizes: Sizes, causal=False, key_dim=None):
  """Median CUDA-event time of `repeats` calls after one warm-up call (Triton compiles and
  autotunes there), peak allocated bytes over one call, and analytic FLOPs (as in
  benchmarks.attention)."""
  b, h, d = sizes.batch, sizes.heads, sizes.head_dim
  shape = (b, length, h, d)
  device, dtype = "cuda", torch.bfloat16
  grad = mode == "fwd_bwd"
  tokens = b * length * h
  if name == "torch_sdpa":  # its own layout, [batch, heads, length, dim]
    shape = (b, h, length, d)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype).requires_grad_(grad)
               for _ in range(3))
    call = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    flops = 4.0 * tokens * length * d * (0.5 if causal else 1.0)
  else:
    q, k = (torch.rand((b, length, h, key_dim), device=device, dtype=dtype).requires_grad_(grad)
            for _ in range(2))
    v = torch.randn(shape, device=device, dtype=dtype).requires_grad_(grad)
    if name == "fla_linear_attn":
      call = lambda: kernel(q, k, v, normalize=True)[0]
    else:
      gate = torch.nn.functional.logsigmoid(torch.randn((b, length, h), device=device))
      call = lambda: kernel(q, k, v, g=gate)[0]
    flops = 4.0 * tokens * key_dim * d + 2.0 * tokens * 64 * (key_dim + d)  # chunk 64
  flops *= 3 if grad else 1
  cotangent = torch.randn(shape, device=device, dtype=dtype)

  def step():
    out = call()
    if grad:
      out.backward(cotangent)
      for x in (q, k, v):
        x.grad = None
    return out

  try:
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    times = []
    for _ in range(sizes.repeats):
      begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
      begin.record()
      step()
      end.record()
      end.synchronize()
      times.append(begin.elapsed_time(end) / 1e3)
  except torch.cuda.OutOfMemoryError as error:
    torch.cuda.empty_cache()
    return dict(skipped=kernels.failure(error), flops=flops)
  except Exception as error:  # noqa: BLE001 - recorded per measurement
    return dict(skipped=kernels.failure(error), flops=flops)
  median = statistics.median(times)
  return dict(median_s=median, times_s=times, warmup_s=warmup, peak_bytes=peak, flops=flops,
              flops_per_s=flops / median)


def run_torch_subprocess(sizes: Sizes, quick: bool, deadline: float) -> dict:
  """Part 1 in a child process (JAX on the CPU there, so it never takes the GPU)."""
  with tempfile.TemporaryDirectory() as scratch:
    path = pathlib.Path(scratch) / "torch.json"
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--torch-part", str(path),
               "--time-budget-s", str(max(deadline - time.monotonic(), 1.0))]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
      completed = subprocess.run(command + (["--quick"] if quick else []), cwd=ROOT, env=env,
                                 timeout=max(deadline - time.monotonic(), 1.0) + 20,
                                 capture_output=True, text=True)
      print(completed.stdout, end="", flush=True)
      problem = (None if completed.returncode == 0 else
                 f"exit {completed.returncode}: {completed.stderr.strip().splitlines()[-1:]}")
    except subprocess.TimeoutExpired:
      problem = "time budget spent (subprocess stopped)"
    result = json.loads(path.read_text()) if path.exists() else {}
  if problem:
    result["problem"] = problem
    if not result.get("rows"):
      result.setdefault("skipped", problem)
  return result


# Parts 2-4.

def kernel_args(sizes: Sizes, dtype: str, memory_budget_gib: float):
  """benchmarks.attention's arguments and sizes for this run."""
  argv = ["--lengths", *map(str, sizes.lengths), "--batch", str(sizes.batch),
          "--heads", str(sizes.heads), "--head-dim", str(sizes.head_dim),
          "--num-features", str(sizes.num_features),
          "--chunk-sizes", *map(str, sizes.chunk_sizes), "--repeats", str(sizes.repeats),
          "--max-seconds", str(sizes.max_seconds), "--decode-tokens", str(sizes.decode_tokens),
          "--bf16-length", str(sizes.bf16_length), "--dtype", dtype,
          "--memory-budget-gib", str(memory_budget_gib),
          "--scan-max-length", str(sizes.scan_max_length)]
  args = kernels.parse_args(argv)
  return args, kernels.Sizes(args.batch, args.heads, args.head_dim, args.num_features,
                             rfa_jax.feature_dim(args.num_features))


def kernel_part(sizes: Sizes, dtype: str, deadline: float, memory_budget_gib: float) -> dict:
  args, shape = kernel_args(sizes, dtype, memory_budget_gib)
  peak = kernels.matmul_peak(sizes.matmul_size, sizes.repeats, jnp.dtype(dtype))
  rows = kernels.attention_rows(args, shape, deadline)
  decode = kernels.decode_rows(args, shape) if time.monotonic() < deadline else []
  for row in rows + decode:
    if "flops_per_s" in row:
      row["peak_fraction"] = row["flops_per_s"] / peak["flops_per_s"]
  return dict(dtype=dtype, args=vars(args), sizes=shape._asdict(), matmul_peak=peak, rows=rows,
              decode=decode)


def harness_part(sizes: Sizes, deadline: float, memory_budget_gib: float) -> dict:
  args = harness.parse_args([
      "--attentions", *sizes.harness_attentions, "--lengths", *map(str, sizes.harness_lengths),
      "--batch-size", str(sizes.harness_batch), "--steps", str(sizes.harness_steps),
      "--memory-budget-gib", str(memory_budget_gib), "--dtype", "bfloat16",
      "--override", *sizes.harness_overrides])
  return dict(args=vars(args), rows=harness.run(args, deadline))


def training_part(sizes: Sizes, deadline: float) -> list[dict]:
  """train_and_evaluate on generated ListOps (a fresh temporary data dir and workdir per run)."""
  runs = []
  with tempfile.TemporaryDirectory() as scratch:
    for attention in sizes.training_attentions:
      if time.monotonic() > deadline:
        runs.append(dict(attention=attention, skipped="time budget spent"))
        continue
      config = config_lib.load(str(ROOT / "configs" / "listops.py"), attention)
      config.dtype, config.data_dir = "bfloat16", str(pathlib.Path(scratch) / "listops")
      for key, value in sizes.training.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
          node = node[parent]
        node[leaf] = value
      from lra import train  # the training loop and its checkpointing stack load only here
      start = time.perf_counter()
      try:
        results = train.train_and_evaluate(config, pathlib.Path(scratch) / attention)
      except Exception as error:  # noqa: BLE001 - recorded; the other run still goes
        runs.append(dict(attention=attention, skipped=kernels.failure(error)))
        continue
      runs.append(dict(attention=attention, wall_s=time.perf_counter() - start,
                       steps=config.num_train_steps, max_length=config.max_length,
                       batch_size=config.batch_size,
                       **{key: results.get(key) for key in (
                           "steps_per_sec", "peak_memory_bytes", "peak_memory_source",
                           "compiled_train_step_bytes", "test_accuracy", "test_loss",
                           "num_parameters")}))
      print(f"training {attention}: {runs[-1]['steps_per_sec']} steps/s", flush=True)
  base = runs[0].get("steps_per_sec")
  for run in runs:
    if base and run.get("steps_per_sec"):
      run["speedup"] = run["steps_per_sec"] / base  # against the first (softmax)
  return runs


# Targets and the report.

def _row(rows, form, length, mode="fwd_bwd"):
  """The measurement of `form`; chunked forms: the fastest chunk size (forward+backward)."""
  if form in ("rfa_causal_chunked", "rfa_gated_chunked") and mode == "fwd_bwd":
    return kernels.best_chunked(rows, form, length)
  return next((r for r in rows if r["form"] == form and r["length"] == length
               and r["mode"] == mode), None)


def _torch_row(torch_rows, form, length, key_dim):
  return next((r for r in torch_rows if r["form"] == form and r["length"] == length
               and r["mode"] == "fwd_bwd" and r.get("key_dim") == key_dim), None)


def targets(results: dict, sizes: Sizes) -> list[dict]:
  """The issue's three targets (bf16) at 16K (harness: 4K), or at the longest length measured."""
  bf16 = results["kernels"].get("bfloat16", {}).get("rows", [])
  torch_rows = results["torch"].get("rows", [])
  n = kernels.nearest_length(sizes.lengths, TARGET_LENGTH)
  n_torch = kernels.nearest_length(list(sizes.torch_lengths), TARGET_LENGTH)
  key_dim = sizes.fla_key_dims[0]
  softmax = _row(bf16, "softmax", n)
  implementation = softmax.get("implementation", "?") if softmax else "?"
  against_fla = lambda form, fla_form: kernels.ratio(
      _row(bf16, form, n_torch), _torch_row(torch_rows, fla_form, n_torch, key_dim), "median_s")
  checks = [
      ("1", f"non-causal RFA fwd+bwd at L={n}: softmax ({implementation}) time / RFA time",
       kernels.ratio(softmax, _row(bf16, "rfa", n), "median_s"), ">=", 10.0),
      ("2", f"causal chunked RFA fwd+bwd at L={n_torch}: RFA time / FLA chunk_linear_attn "
            f"(key dim {key_dim})", against_fla("rfa_causal_chunked", "fla_linear_attn"),
       "<=", 2.0),
      ("2", f"gated chunked RFA fwd+bwd at L={n_torch}: RFA time / FLA chunk_simple_gla "
            f"(key dim {key_dim})", against_fla("rfa_gated_chunked", "fla_simple_gla"),
       "<=", 2.0),
  ]
  harness_rows = results["harness"].get("rows", [])
  m = kernels.nearest_length(list(sizes.harness_lengths), HARNESS_TARGET_LENGTH)
  rfa_row = next((r for r in harness_rows if r["attention"] == "rfa_gaussian" and r["length"] == m),
                 {})
  checks += [
      ("3", f"harness at L={m} (bf16, batch {sizes.harness_batch}): rfa_gaussian steps/s / "
            "softmax's",
       rfa_row.get("speedup"), ">=", 5.0),
      ("3", f"harness at L={m}: rfa_gaussian memory / softmax's", rfa_row.get("memory_ratio"),
       "<=", 0.2),
  ]
  return [dict(item=item, description=text, value=value, op=op, target=target,
               status=kernels.status(value, op, target))
          for item, text, value, op, target in checks]


def kernel_tables(part: dict) -> list[str]:
  rows, lengths = part["rows"], sorted(part["args"]["lengths"])
  dtype = part["dtype"]
  tables = [
      (f"{dtype}: forward+backward time (ms)", "fwd_bwd", "median_s", 1e3, ".2f"),
      (f"{dtype}: forward time (ms)", "fwd", "median_s", 1e3, ".2f"),
      (f"{dtype}: forward+backward achieved TFLOP/s", "fwd_bwd", "flops_per_s", 1e-12, ".1f"),
      (f"{dtype}: forward+backward fraction of the {dtype} matmul peak (%)", "fwd_bwd",
       "peak_fraction", 100, ".1f"),
      (f"{dtype}: forward+backward compiled memory (MiB)", "fwd_bwd", "memory_bytes", 2**-20,
       ".1f"),
      (f"{dtype}: forward compiled memory (MiB)", "fwd", "memory_bytes", 2**-20, ".1f"),
  ]
  out = [kernels.length_table(rows, lengths, *table) for table in tables]
  lines = []
  for label, form in dict.fromkeys((r["label"], r["form"]) for r in rows):
    cells = []
    for n in lengths:
      mine = next((r for r in rows if r["label"] == label and r["length"] == n
                   and r["mode"] == "fwd_bwd"), None)
      base = _row(rows, "softmax_causal" if form in CAUSAL_FORMS else "softmax", n)
      value = kernels.ratio(base, mine, "median_s")
      cells.append("-" if value is None else f"{value:.2f}")
    lines.append([label, *cells])
  out.append(kernels.length_section(f"{dtype}: forward+backward speed-up over softmax (x)",
                                    lengths, lines))
  implementations = sorted({r.get("implementation") for r in rows if r.get("implementation")})
  peak = part["matmul_peak"]
  out.insert(0, f"{dtype} matmul peak ({peak['size']}^3): {peak['flops_per_s'] / 1e12:.1f} "
                f"TFLOP/s; softmax implementation: {', '.join(implementations) or '-'}.\n")
  if part["decode"]:
    out.append("\n".join([
        f"### {dtype}: decoding ({part['decode'][0]['tokens']} tokens)", "",
        *markdown_table(["form", "time per token (us)", "compiled memory (MiB)"],
                        [[r["form"], kernels.cell(r, "per_token_s", 1e6, ".2f"),
                          kernels.cell(r, "memory_bytes", 2**-20, ".1f")]
                         for r in part["decode"]])]) + "\n")
  return out


def torch_table(torch: dict, bf16: list) -> str:
  if "rows" not in torch:
    return f"PyTorch comparisons not run: {torch.get('skipped', torch.get('problem', '?'))}\n"
  lines = [f"torch {torch.get('torch_version')}, flash-linear-attention "
           f"{torch.get('fla_version', 'absent: ' + torch.get('fla_skipped', '?'))}", ""]
  counterpart = {"torch_sdpa": lambda r: "softmax_causal" if r.get("causal") else "softmax",
                 "fla_linear_attn": lambda r: "rfa_causal_chunked",
                 "fla_simple_gla": lambda r: "rfa_gated_chunked"}
  table = []
  for r in sorted(torch["rows"], key=lambda r: (r["form"], r["length"])):
    form = counterpart[r["form"]](r)
    mine = _row(bf16, form, r["length"], r["mode"])
    value = kernels.ratio(mine, r, "median_s")
    variant = f"causal={r['causal']}" if "causal" in r else f"key dim {r['key_dim']}"
    table.append(
        [f"{r['form']} ({variant})", str(r["length"]), r["mode"]]
        + ([f"{r['median_s'] * 1e3:.2f}", f"{r['flops_per_s'] / 1e12:.1f}",
            f"{r['peak_bytes'] / 2**20:.1f}"] if "median_s" in r else [r["skipped"][:40], "-", "-"])
        + [f"{kernels.cell(mine, 'median_s', 1e3, '.2f')} ({form})",
           "-" if value is None else f"{value:.2f}"])
  lines += markdown_table(["kernel", "L", "mode", "torch time (ms)", "TFLOP/s", "peak MiB",
                           "JAX counterpart (ms)", "JAX / torch"], table)
  return "\n".join(lines) + "\n"


def training_table(runs: list) -> str:
  lines = []
  for r in runs:
    if "skipped" in r or r.get("steps_per_sec") is None:
      lines.append([r["attention"], f"not run: {r.get('skipped', 'no timed interval')[:60]}",
                    "-", "-", "-"])
      continue
    memory = r.get("peak_memory_bytes")
    lines.append([r["attention"], f"{r['steps_per_sec']:.2f} ({r.get('speedup', 1.0):.2f}x)",
                  f"{memory / 2**20:.0f} ({r['peak_memory_source']})" if memory else "-",
                  f"{r['test_loss']:.3f}", f"{r['test_accuracy']:.3f}"])
  return "\n".join(markdown_table(["attention", "steps/s (x the first)", "peak memory (MiB)",
                                    "test loss", "test accuracy"], lines)) + "\n"


def markdown(results: dict) -> str:
  machine = results["machine"]
  sizes = results["sizes"]
  training = results["training"]
  first = next((r for r in training if "steps" in r), None)
  sections = [
      f"# GPU check: {machine['device_kind']}", "",
      f"jax {machine['jax_version']} ({machine['platform']}, {machine['device_count']} device(s)), "
      f"Python {machine['python']}; {results['wall_s'] / 60:.1f} minutes ("
      + ", ".join(f"{name} {value:.0f} s" for name, value in results["part_seconds"].items())
      + f"). Kernel shapes: batch "
      f"{sizes['batch']}, {sizes['heads']} heads, head_dim {sizes['head_dim']}, "
      f"{sizes['num_features']} random features (feature dim "
      f"{rfa_jax.feature_dim(sizes['num_features'])}), chunk {list(sizes['chunk_sizes'])}. Medians "
      f"of up to {sizes['repeats']} runs after a warm-up; every ratio is between measurements of "
      "this run.", "",
      "## Targets", "", *(f"- {kernels.format_check(c)}" for c in results["targets"]), "",
      "## Kernels (benchmarks.attention)", "",
  ]
  for part in results["kernels"].values():
    sections += kernel_tables(part)
  error = results["bf16_error"]
  sections += [f"bf16 inputs, chunked causal RFA (C={error['chunk_size']}) at L={error['length']}: "
               f"max relative error {error['max_relative_error']:.3%} against float32 inputs.", ""]
  sections += ["## PyTorch at the same shapes (bf16)", "",
               torch_table(results["torch"],
                           results["kernels"].get("bfloat16", {}).get("rows", [])),
               f"## Harness (LRA Table 2 protocol, bf16, batch {sizes['harness_batch']})", "",
               harness.markdown(results["harness"]["rows"], sorted(sizes["harness_lengths"]),
                                "softmax"),
               f"## Training on generated ListOps (bf16; speed-up against "
               f"{training[0]['attention'] if training else '-'}"
               + (f", length {first['max_length']}, batch {first['batch_size']}, "
                  f"{first['steps']} steps)" if first else ")"), "",
               training_table(training)]
  return "\n".join(sections) + "\n"


def device_directory(device_kind: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", device_kind).strip("_") or "device"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes on any backend (CI)")
  parser.add_argument("--out", default=None,
                      help="default: benchmarks/results/gpu/<device kind>/")
  parser.add_argument("--time-budget-s", type=float, default=420.0,
                      help="the parts share it (see DEADLINES); the last training run may end "
                           "up to a minute after it")
  parser.add_argument("--memory-fraction", type=float, default=0.9,
                      help="skip computations whose compiled memory exceeds this share of the "
                           "device's memory")
  parser.add_argument("--skip-torch", action="store_true", help="no PyTorch comparisons")
  parser.add_argument("--torch-part", default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  sizes = QUICK if args.quick else FULL
  start = time.monotonic()
  deadline = {part: start + share * args.time_budget_s for part, share in DEADLINES.items()}
  if args.torch_part:
    return torch_part(sizes, pathlib.Path(args.torch_part), start + args.time_budget_s)
  seconds = {}

  def timed(name, function, *function_args):
    begin = time.monotonic()
    value = function(*function_args)
    seconds[name] = time.monotonic() - begin
    return value

  torch_results = (dict(skipped="--skip-torch") if args.skip_torch else
                   timed("torch", run_torch_subprocess, sizes, args.quick, deadline["torch"]))
  machine = kernels.machine_info()  # JAX takes the device from here on
  if machine["platform"] != "gpu" and not args.quick:
    raise SystemExit(f"no GPU: JAX runs on {machine['platform']} ({machine['device_kind']}); "
                     "the full check is for one GPU. Use --quick for the tiny run on any backend.")
  memory_limit = kernels.device_memory().get("bytes_limit")
  budget_gib = args.memory_fraction * memory_limit / 2**30 if memory_limit else 16.0
  results = dict(machine=machine, sizes=dataclasses.asdict(sizes), torch=torch_results,
                 memory_budget_gib=budget_gib, time_budget_s=args.time_budget_s)
  results["kernels"] = {dtype: timed(dtype, kernel_part, sizes, dtype, deadline[dtype], budget_gib)
                        for dtype in sizes.kernel_dtypes}
  results["bf16_error"] = kernels.bf16_error(*kernel_args(sizes, "bfloat16", budget_gib))
  results["harness"] = timed("harness", harness_part, sizes, deadline["harness"], budget_gib)
  results["training"] = timed("training", training_part, sizes, deadline["training"])
  results["targets"] = targets(results, sizes)
  results.update(wall_s=time.monotonic() - start, part_seconds=seconds,
                 max_rss_bytes=max_rss_bytes(), device_memory=kernels.device_memory())
  write_results(args.out or ROOT / "benchmarks" / "results" / "gpu"
                / device_directory(machine["device_kind"]), results, markdown(results))
  return results


if __name__ == "__main__":
  main()
