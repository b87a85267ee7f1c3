"""One-shot accelerator check: every speed and memory figure of the project on one GPU, side by side
in one run, with the targets of the GPU comparison, saved as it goes.

    scripts/gpu_check.sh --out DIR [--quick] [--time-budget-s 420] [--skip-torch]

The run is a sequence of steps, each in a process of its own, so that each starts with the device's
memory free (PyTorch and JAX each keep what they allocate), a training run's peak memory is its own,
and a crash ends one step only. In order:
1. `torch_targets`: flash-linear-attention's `chunk_linear_attn` (normalised) and `chunk_simple_gla`
   (head-wise gates) at key dimension 64 and PyTorch's `scaled_dot_product_attention` (non-causal,
   causal), bf16 forward+backward at the target length (16K); only where `import torch` works and
   CUDA is present (`fla` too for its kernels).
2. `kernel_targets`: the bf16 matmul peak, then softmax (`jax.nn.dot_product_attention`, cuDNN where
   it compiles), RFA non-causal, causal chunked and gated chunked at the same shapes.
3. `harness`: `benchmarks.harness` in LRA Table 2's protocol (text-task model, batch 32, bf16), 4K
   first, then 1K to 16K: softmax, rfa_gaussian, rfa_arccos, linear, performer; then short
   sequences as on the CPU (`benchmarks/results/short_sequences`: the ListOps `small` model, batch
   32, float32, 128 and 512 tokens): softmax, rfa_gaussian, rfa_arccos, linear.
4. `kernels_bfloat16`: the rest of `benchmarks.attention` in bf16 (every form and length, forward and
   forward+backward), decoding, and the bf16 error of chunked causal RFA.
5. `torch_rest`: the other PyTorch rows (other lengths, forward only, key dimension 128).
6. `training_<attention>`: a short `lra.train.train_and_evaluate` on generated ListOps in bf16, one
   process per attention (softmax, rfa_gaussian).
7. `kernels_float32`: the float32 matmul peak and rows, at the highest matmul precision (no TF32).
A step stops starting measurements at its deadline and records the rest as not run; a measurement
that fails or runs out of memory is recorded and the step goes on; a step that fails is recorded and
the run goes on. The first two steps may use up to DEADLINES of --time-budget-s; the later ones
share what is left in proportion to their measurement counts, weighted by the seconds a measurement
took in the first steps (compile, autotune, warm-up and timed calls). DIR/results.json (every raw
figure) and then DIR/results.md are rewritten after every measurement, atomically: a kill at any
moment leaves what was measured. `--quick`: the same steps at tiny sizes on any backend, for CI.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax

import rfa_jax
from benchmarks import attention as kernels
from benchmarks import harness
from lra.records import markdown_table, max_rss_bytes, write_json_atomically, write_text_atomically

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARNESS_TARGET_LENGTH = 4096
CAUSAL_PREFIXES = ("softmax_causal", "rfa_causal", "rfa_gated")  # forms compared with causal softmax
TARGET_FORMS = ("softmax", "rfa", "rfa_causal_chunked", "rfa_gated_chunked")
# Cumulative shares of --time-budget-s by which the target steps stop starting measurements.
DEADLINES = dict(torch_targets=0.2, kernel_targets=0.4)
# Measurements a step is counted as, beyond its rows: a harness cell compiles a train step of the
# text model's 4 layers; a training run compiles train and eval steps and runs 200 steps.
HARNESS_CELL_WEIGHT, TRAINING_RUN_WEIGHT = 4, 8
GRACE_S = 60.0  # how long a step may run past its deadline (a measurement under way) before a kill
MATMUL_WARMUP_S = 1.0


@dataclasses.dataclass
class Sizes:
  """Everything a run measures, full or --quick. The first length, chunk size and key dimension
  are the targets'; lengths are measured in the order given and shown sorted."""
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
  short_attentions: tuple = ("softmax", "rfa_gaussian", "rfa_arccos", "linear")
  short_lengths: tuple = (128, 512)
  short_steps: int = 20
  short_overrides: tuple = ("model.num_layers=2", "model.emb_dim=64", "model.num_heads=4",
                            "model.qkv_dim=64", "model.mlp_dim=128")
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
    short_attentions=("softmax", "rfa_gaussian", "rfa_arccos"), short_lengths=(16,), short_steps=1,
    short_overrides=("model.num_layers=1", "model.emb_dim=16", "model.num_heads=2",
                     "model.qkv_dim=16", "model.mlp_dim=16"),
    torch_lengths=(64,), fla_key_dims=(16,), training_attentions=("rfa_gaussian",),
    training={"num_train_steps": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2,
              "num_eval_batches": 1, "warmup_steps": 1, "max_length": 32, "batch_size": 8,
              "model.num_layers": 1, "model.emb_dim": 16, "model.num_heads": 2,
              "model.qkv_dim": 16, "model.mlp_dim": 16,
              "task_options.generate_train": 16, "task_options.generate_eval": 8,
              "task_options.min_length": 8, "task_options.max_length": 32})


# Results: one JSON file that every step updates.

def load(out: pathlib.Path) -> dict:
  return json.loads((out / "results.json").read_text())


def save(out: pathlib.Path, results: dict):
  """results.json, then results.md (with the targets as measured so far), each atomically."""
  results["targets"] = targets(results)
  write_json_atomically(out / "results.json", results)
  try:
    text = markdown(results)
  except Exception as error:  # noqa: BLE001 - the JSON holds every figure; the tables are a view
    text = f"# GPU check\n\nThe tables could not be written ({kernels.failure(error)}).\n"
  write_text_atomically(out / "results.md", text)


def sizes_of(results: dict) -> Sizes:
  return Sizes(**results["sizes"])


# PyTorch steps (JAX stays on the CPU in their process).

def torch_rows(sizes: Sizes, targets_only: bool) -> list[dict]:
  """The PyTorch rows of one step: the targets' (bf16 forward+backward at the first length and key
  dimension), or every other one."""
  rows = []
  for length in sizes.torch_lengths:
    for form in ("fla_linear_attn", "fla_simple_gla", "torch_sdpa"):
      variants = ([dict(causal=False), dict(causal=True)] if form == "torch_sdpa"
                  else [dict(key_dim=d) for d in sizes.fla_key_dims])
      for variant in variants:
        for mode in ("fwd_bwd", "fwd"):
          target = (length == sizes.torch_lengths[0] and mode == "fwd_bwd"
                    and variant.get("key_dim", sizes.fla_key_dims[0]) == sizes.fla_key_dims[0])
          if target == targets_only:
            rows.append(dict(form=form, length=length, mode=mode, **variant))
  return rows


def torch_step(out: pathlib.Path, results: dict, targets_only: bool, deadline: float):
  """Times PyTorch's SDPA and flash-linear-attention's chunk kernels at the kernel benchmark's
  shapes (bf16, [batch, length, heads, dim]) into results["torch"], saving after every row."""
  info = results.setdefault("torch", {})
  info.setdefault("rows", [])
  try:
    import torch
  except ImportError as error:
    info["skipped"] = f"PyTorch is not importable ({error})"
    return
  info["torch_version"] = torch.__version__
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
  if not torch.cuda.is_available():
    info["skipped"] = "PyTorch sees no CUDA device"
    return
  info["device"] = torch.cuda.get_device_name(0)
  torch.backends.cuda.matmul.allow_tf32 = False  # float32 products (fla's gates) in full precision
  torch.backends.cudnn.allow_tf32 = False
  torch.set_float32_matmul_precision("highest")
  info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
  torch.manual_seed(0)
  sizes = sizes_of(results)
  for row in torch_rows(sizes, targets_only):
    if row["form"] not in kernels_by_name:
      row["skipped"] = info["fla_skipped"]
    elif time.time() > deadline:
      row["skipped"] = "time budget spent"
    else:
      row.update(_torch_measure(torch, row["form"], kernels_by_name[row["form"]], row["length"],
                                row["mode"], sizes, row.get("causal", False), row.get("key_dim")))
    info["rows"].append(row)
    save(out, results)
    print(f"torch L={row['length']:>6} {row['form']} {row['mode']}: "
          + (f"{row['median_s'] * 1e3:.2f} ms" if "median_s" in row else row["skipped"]),
          flush=True)


def _torch_measure(torch, name, kernel, length, mode, sizes: Sizes, causal=False, key_dim=None):
  """Median CUDA-event time of `repeats` calls after one warm-up call outside the timing (Triton
  compiles and autotunes there), peak allocated bytes over one call, and analytic FLOPs (as in
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
  except Exception as error:  # noqa: BLE001 - recorded per measurement (out of memory included)
    torch.cuda.empty_cache()
    return dict(skipped=kernels.failure(error), flops=flops)
  median = statistics.median(times)
  return dict(median_s=median, times_s=times, warmup_s=warmup, peak_bytes=peak, flops=flops,
              flops_per_s=flops / median)


# JAX steps.

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


def is_target(sizes: Sizes, form, length: int, mode: str) -> bool:
  """The target rows: bf16-step forms at the first length, forward+backward, first chunk size."""
  return (form.name in TARGET_FORMS and length == sizes.lengths[0] and mode == "fwd_bwd"
          and form.chunk_size in (None, sizes.chunk_sizes[0]))


def machine_step(out: pathlib.Path, results: dict, quick: bool):
  """Records the machine and the memory budget; stops a full run without a GPU."""
  results["machine"] = kernels.machine_info()
  memory_limit = kernels.device_memory().get("bytes_limit")
  fraction = results["args"]["memory_fraction"]
  results["memory_budget_gib"] = fraction * memory_limit / 2**30 if memory_limit else 16.0
  save(out, results)
  platform = results["machine"]["platform"]
  if platform != "gpu" and not quick:
    raise SystemExit(f"no GPU: JAX runs on {platform} ({results['machine']['device_kind']}); the "
                     "full check is for one GPU. Use --quick for the tiny run on any backend.")


def kernel_step(out: pathlib.Path, results: dict, dtype: str, targets_only: bool,
                deadline: float):
  """The matmul peak in `dtype` (after a warm-up of MATMUL_WARMUP_S), then the kernel rows (the
  targets' or the others), decoding and the bf16 error; saved after every measurement. float32
  runs at the highest matmul precision."""
  sizes = sizes_of(results)
  precision = "highest" if dtype == "float32" else None
  jax.config.update("jax_default_matmul_precision", precision)
  args, shape = kernel_args(sizes, dtype, results["memory_budget_gib"])
  part = results.setdefault("kernels", {}).setdefault(dtype, dict(
      dtype=dtype, args=vars(args), sizes=shape._asdict(), rows=[], decode=[],
      matmul_precision=precision or "default"))
  if "matmul_peak" not in part:
    part["matmul_peak"] = kernels.matmul_peak(sizes.matmul_size, sizes.repeats, dtype,
                                              warmup_s=MATMUL_WARMUP_S)
    save(out, results)

  def on_row(row, rows):
    peak = part["matmul_peak"]["flops_per_s"]
    if "flops_per_s" in row:
      row["peak_fraction"] = row["flops_per_s"] / peak
    rows.append(row)
    save(out, results)

  monotonic_deadline = time.monotonic() + deadline - time.time()
  select = lambda form, length, mode: is_target(sizes, form, length, mode) == targets_only
  kernels.attention_rows(args, shape, monotonic_deadline, select,
                         on_row=lambda row: on_row(row, part["rows"]))
  if targets_only:
    return
  if time.time() < deadline:
    kernels.decode_rows(args, shape, on_row=lambda row: on_row(row, part["decode"]))
  if dtype == "bfloat16" and time.time() < deadline:  # the draw is float32 whatever the inputs
    part["redraw"] = []
    kernels.redraw_rows(args, shape, on_row=lambda row: on_row(row, part["redraw"]))
  if dtype == "bfloat16" and time.time() < deadline:
    results["bf16_error"] = kernels.bf16_error(*kernel_args(sizes, dtype,
                                                            results["memory_budget_gib"]))
    save(out, results)


def harness_step(out: pathlib.Path, results: dict, deadline: float):
  """benchmarks.harness's cells, saved after every length (its cells are timed in turn): LRA
  Table 2's protocol (`harness`), then the short sequences (`harness_short`)."""
  sizes = sizes_of(results)
  parts = (
      ("harness", sizes.harness_attentions, sizes.harness_lengths, sizes.harness_batch,
       sizes.harness_steps, "bfloat16", sizes.harness_overrides),
      ("harness_short", sizes.short_attentions, sizes.short_lengths, sizes.harness_batch,
       sizes.short_steps, "float32", sizes.short_overrides))
  for key, attentions, lengths, batch, steps, dtype, overrides in parts:
    args = harness.parse_args([
        "--attentions", *attentions, "--lengths", *map(str, lengths), "--batch-size", str(batch),
        "--steps", str(steps), "--memory-budget-gib", str(results["memory_budget_gib"]),
        "--dtype", dtype, "--override", *overrides])
    results[key] = dict(args=vars(args), rows=[])

    def on_row(rows, key=key):
      results[key]["rows"] = rows
      save(out, results)

    harness.run(args, time.monotonic() + deadline - time.time(), on_row)


def training_step(out: pathlib.Path, results: dict, attention: str, workdir: pathlib.Path,
                  deadline: float):
  """One train_and_evaluate on ListOps generated into `workdir`; this process's device peak is the
  run's own."""
  from lra import config_lib, train  # the training stack (grain, tensorboardX) loads only here
  runs = results.setdefault("training", [])
  if time.time() > deadline:
    runs.append(dict(attention=attention, skipped="time budget spent"))
    return
  sizes = sizes_of(results)
  config = config_lib.load(str(ROOT / "configs" / "listops.py"), attention)
  config.dtype, config.data_dir = "bfloat16", str(workdir / "listops")
  for key, value in sizes.training.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  start = time.perf_counter()
  run = train.train_and_evaluate(config, workdir / attention)
  record = dict(attention=attention, wall_s=time.perf_counter() - start,
                steps=config.num_train_steps, max_length=config.max_length,
                batch_size=config.batch_size,
                **{key: run.get(key) for key in (
                    "steps_per_sec", "peak_memory_bytes", "peak_memory_source",
                    "compiled_train_step_bytes", "test_accuracy", "test_loss", "num_parameters")})
  runs.append(record)
  base = runs[0].get("steps_per_sec")
  for entry in runs:
    if base and entry.get("steps_per_sec"):
      entry["speedup"] = entry["steps_per_sec"] / base  # against the first (softmax)
  save(out, results)
  print(f"training {attention}: {record['steps_per_sec']} steps/s", flush=True)


def run_step(name: str, out: pathlib.Path, quick: bool, deadline: float, scratch: str):
  """One step in this process (the child's side of `launch`)."""
  results = load(out)
  if name in ("torch_targets", "torch_rest"):
    torch_step(out, results, name == "torch_targets", deadline)
  elif name == "kernel_targets":
    machine_step(out, results, quick)
    kernel_step(out, results, "bfloat16", True, deadline)
  elif name.startswith("kernels_"):
    kernel_step(out, results, name.removeprefix("kernels_"), False, deadline)
  elif name == "harness":
    harness_step(out, results, deadline)
  elif name.startswith("training_"):
    training_step(out, results, name.removeprefix("training_"), pathlib.Path(scratch), deadline)
  else:
    raise ValueError(f"unknown step {name!r}")
  save(out, results)


# The parent: plans the steps, gives each its deadline, launches it in a process of its own.

def step_names(sizes: Sizes, skip_torch: bool) -> list[str]:
  torch = [] if skip_torch else ["torch_targets"]
  names = torch + ["kernel_targets", "harness", "kernels_bfloat16"]
  names += [] if skip_torch else ["torch_rest"]
  names += [f"training_{attention}" for attention in sizes.training_attentions]
  return names + [f"kernels_{dtype}" for dtype in sizes.kernel_dtypes if dtype != "bfloat16"]


def measurement_count(name: str, sizes: Sizes) -> float:
  """How many measurements step `name` makes (harness cells and training runs weighted)."""
  forms = len(kernels.attention_forms(list(sizes.chunk_sizes)))
  if name.startswith("torch_"):
    return len(torch_rows(sizes, name == "torch_targets"))
  if name == "kernel_targets":
    return len(TARGET_FORMS)
  if name.startswith("kernels_"):
    rows = 2 * forms * len(sizes.lengths) + 4 + 1 + 2  # + decoding, + bf16 error, + redraws
    return rows - len(TARGET_FORMS) if name == "kernels_bfloat16" else rows
  if name == "harness":  # a short-sequence cell compiles the small model: counted as one
    return (HARNESS_CELL_WEIGHT * len(sizes.harness_attentions) * len(sizes.harness_lengths)
            + len(sizes.short_attentions) * len(sizes.short_lengths))
  return TRAINING_RUN_WEIGHT


def seconds_per_measurement(rows: list[dict]) -> float | None:
  """Mean seconds a measured row took (compile, warm-up, timed calls), or None."""
  costs = [r.get("compile_s", 0.0) + r.get("warmup_s", 0.0) + sum(r.get("times_s", []))
           for r in rows if "median_s" in r]
  return statistics.mean(costs) if costs else None


def step_deadline(name: str, remaining: list[str], results: dict, start: float,
                  budget: float) -> float:
  """When step `name` (the first of `remaining`) stops starting measurements (time.time()). The
  target steps: by their DEADLINES share of the budget. The others: the time left, shared among
  `remaining` in proportion to measurement counts times the seconds a measurement took in the
  target steps (PyTorch's for PyTorch steps, JAX's for the others)."""
  end = start + budget
  if name in DEADLINES:
    return min(start + DEADLINES[name] * budget, end)
  sizes = sizes_of(results)
  torch_unit = seconds_per_measurement(results.get("torch", {}).get("rows", []))
  jax_unit = seconds_per_measurement(results.get("kernels", {}).get("bfloat16", {})
                                     .get("rows", [])) or 1.0
  cost = lambda step: measurement_count(step, sizes) * (
      (torch_unit or jax_unit) if step.startswith("torch_") else jax_unit)
  share = cost(name) / sum(cost(step) for step in remaining)
  now = time.time()
  return now + share * max(end - now, 0.0)


def launch(name: str, args, deadline: float, scratch: str) -> dict:
  """Runs step `name` in a child process (its output goes to ours); returns its status record."""
  command = [sys.executable, "-m", "benchmarks.gpu_check", "--step", name, "--out", args.out,
             "--deadline", repr(deadline), "--scratch", scratch] + (["--quick"] if args.quick else [])
  env = dict(os.environ, JAX_PLATFORMS="cpu") if name.startswith("torch_") else None
  begin = time.time()
  try:
    completed = subprocess.run(command, cwd=ROOT, env=env,
                               timeout=max(deadline - begin, 0.0) + GRACE_S)
    status = "done" if completed.returncode == 0 else f"failed (exit {completed.returncode})"
  except subprocess.TimeoutExpired:
    status = f"stopped {GRACE_S:.0f} s after its deadline"
  return dict(status=status, seconds=time.time() - begin, share_s=max(deadline - begin, 0.0))


def main(argv=None) -> dict:
  args = parse_args(argv)
  out = pathlib.Path(args.out)
  if args.step:
    run_step(args.step, out, args.quick, args.deadline, args.scratch)
    return load(out)
  out.mkdir(parents=True, exist_ok=True)
  sizes = QUICK if args.quick else FULL
  start = time.time()
  names = step_names(sizes, args.skip_torch)
  results = dict(args=vars(args), sizes=dataclasses.asdict(sizes), time_budget_s=args.time_budget_s,
                 steps={name: dict(status="not started") for name in names})
  if args.skip_torch:
    results["torch"] = dict(skipped="--skip-torch", rows=[])
  save(out, results)
  with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
    for index, name in enumerate(names):
      results = load(out)
      deadline = step_deadline(name, names[index:], results, start, args.time_budget_s)
      results["steps"][name] = dict(status="running", share_s=max(deadline - time.time(), 0.0))
      save(out, results)
      print(f"gpu_check: step {name}, {results['steps'][name]['share_s']:.0f} s", flush=True)
      record = launch(name, args, deadline, scratch)
      results = load(out)
      results["steps"][name] = record
      results.update(wall_s=time.time() - start, max_rss_bytes=max_rss_bytes())
      save(out, results)
      platform = results.get("machine", {}).get("platform", "gpu")
      if name == "kernel_targets" and platform != "gpu" and not args.quick:
        raise SystemExit(f"no GPU: JAX runs on {platform}; the full check is for one GPU. Use "
                         "--quick for the tiny run on any backend.")
  print((out / "results.md").read_text(), flush=True)
  return results



# Targets and the report, from whatever has been measured so far.

def _row(rows, form, length, mode="fwd_bwd"):
  """The measurement of `form`; chunked forms: the fastest chunk size (forward+backward)."""
  if form in ("rfa_causal_chunked", "rfa_gated_chunked") and mode == "fwd_bwd":
    return kernels.best_chunked(rows, form, length)
  return next((r for r in rows if r["form"] == form and r["length"] == length
               and r["mode"] == mode), None)


def _torch_row(torch_rows, form, length, key_dim):
  return next((r for r in torch_rows if r["form"] == form and r["length"] == length
               and r["mode"] == "fwd_bwd" and r.get("key_dim") == key_dim), None)


def targets(results: dict) -> list[dict]:
  """The three targets (bf16) at the first length (harness: 4K, or its longest length). The harness
  speed target is 5x against XLA's softmax (LRA Table 2's protocol) and 2x against cuDNN's; its
  memory target (0.2x) was set against a softmax that materialises the logits, so against cuDNN's
  fused attention the ratio is reported only."""
  sizes = sizes_of(results)
  bf16 = results.get("kernels", {}).get("bfloat16", {}).get("rows", [])
  torch_rows = results.get("torch", {}).get("rows", [])
  n, n_torch, key_dim = sizes.lengths[0], sizes.torch_lengths[0], sizes.fla_key_dims[0]
  softmax = _row(bf16, "softmax", n)
  implementation = (softmax or {}).get("implementation", "?")
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
  harness_rows = results.get("harness", {}).get("rows", [])
  m = kernels.nearest_length(list(sizes.harness_lengths), HARNESS_TARGET_LENGTH)
  cell = lambda name: next((r for r in harness_rows if r["attention"] == name
                            and r["length"] == m), {})
  rfa_row, fused = cell("rfa_gaussian"), cell("softmax").get("implementation", "?")
  checks += [
      ("3", f"harness at L={m} (bf16, batch {sizes.harness_batch}): rfa_gaussian steps/s / "
            f"softmax's ({fused})", rfa_row.get("speedup"), ">=", 2.0 if fused == "cudnn" else 5.0),
      ("3", f"harness at L={m}: rfa_gaussian memory / softmax's ({fused})",
       rfa_row.get("memory_ratio"), "<=", None if fused == "cudnn" else 0.2),
  ]
  return [dict(item=item, description=text, value=value, op=op, target=target,
               status="reported" if target is None else kernels.status(value, op, target))
          for item, text, value, op, target in checks]


def format_target(check: dict) -> str:
  if check["target"] is not None:
    return kernels.format_check(check)
  value = "n/a" if check["value"] is None else f"{check['value']:.2f}x"
  return f"({check['item']}) {check['description']}: {value} (reported, no target)"


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
      base = _row(rows, "softmax_causal" if form.startswith(CAUSAL_PREFIXES) else "softmax", n)
      value = kernels.ratio(base, mine, "median_s")
      cells.append("-" if value is None else f"{value:.2f}")
    lines.append([label, *cells])
  out.append(kernels.length_section(f"{dtype}: forward+backward speed-up over softmax (x)",
                                    lengths, lines))
  out += [f"{dtype}: {table}" for table in kernels.paired_tables(rows, lengths)]
  implementations = sorted({f"{r['implementation']} ({r.get('implementation_reason', '?')})"
                            for r in rows if r.get("implementation")})
  peak = part.get("matmul_peak")
  peak_text = (f"{peak['flops_per_s'] / 1e12:.1f} TFLOP/s ({peak['size']}^3, after "
               f"{peak['warmed_s']:.1f} s of warm-up)" if peak else "not measured")
  out.insert(0, f"{dtype} at matmul precision {part['matmul_precision']}; matmul peak "
                f"{peak_text}; softmax: {', '.join(implementations) or '-'}.\n")
  if part.get("redraw"):
    out.append(kernels.redraw_table(part["redraw"]))
  if part["decode"]:
    out.append("\n".join([
        f"### {dtype}: decoding ({part['decode'][0]['tokens']} tokens)", "",
        *markdown_table(["form", "time per token (us)", "compiled memory (MiB)"],
                        [[r["form"], kernels.cell(r, "per_token_s", 1e6, ".2f"),
                          kernels.cell(r, "memory_bytes", 2**-20, ".1f")]
                         for r in part["decode"]])]) + "\n")
  return out


def torch_table(torch: dict, bf16: list) -> str:
  if not torch.get("rows"):
    return f"PyTorch comparisons not run: {torch.get('skipped', 'not started')}\n"
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
    if r.get("steps_per_sec") is None:
      lines.append([r["attention"], f"not run: {r.get('skipped', 'no timed interval')[:60]}",
                    "-", "-", "-"])
      continue
    memory = r.get("peak_memory_bytes")
    lines.append([r["attention"], f"{r['steps_per_sec']:.2f} ({r.get('speedup', 1.0):.2f}x)",
                  f"{memory / 2**20:.0f} ({r['peak_memory_source']})" if memory else "-",
                  f"{r['test_loss']:.3f}", f"{r['test_accuracy']:.3f}"])
  return "\n".join(markdown_table(["attention", "steps/s (x the first)",
                                   "peak memory of its own process (MiB)", "test loss",
                                   "test accuracy"], lines)) + "\n"


def markdown(results: dict) -> str:
  """results.md: the steps' status, the targets, then a section per part measured so far."""
  machine, sizes = results.get("machine", {}), results["sizes"]
  steps = [[name, step["status"], f"{step['seconds']:.0f}" if "seconds" in step else "-",
            f"{step['share_s']:.0f}" if "share_s" in step else "-"]
           for name, step in results["steps"].items()]
  sections = [
      f"# GPU check: {machine.get('device_kind', 'device not yet known')}", "",
      (f"jax {machine['jax_version']} ({machine['platform']}, {machine['device_count']} device(s)), "
       f"Python {machine['python']}. " if machine else "")
      + f"Kernel shapes: batch {sizes['batch']}, {sizes['heads']} heads, head_dim "
      f"{sizes['head_dim']}, {sizes['num_features']} random features (feature dim "
      f"{rfa_jax.feature_dim(sizes['num_features'])}), chunk {list(sizes['chunk_sizes'])}. Medians "
      f"of up to {sizes['repeats']} runs after a warm-up; every ratio is between measurements of "
      "this run.", "",
      *markdown_table(["step", "status", "seconds", "share (s)"], steps), "",
      "## Targets", "", *(f"- {format_target(c)}" for c in results["targets"]), "",
  ]
  if results.get("kernels"):
    sections += ["## Kernels (benchmarks.attention)", ""]
    for part in results["kernels"].values():
      sections += kernel_tables(part)
  if "bf16_error" in results:
    error = results["bf16_error"]
    sections += [f"bf16 inputs, chunked causal RFA (C={error['chunk_size']}) at "
                 f"L={error['length']}: max relative error {error['max_relative_error']:.3%} "
                 "against float32 inputs at the highest matmul precision.", ""]
  sections += ["## PyTorch at the same shapes (bf16)", "",
               torch_table(results.get("torch", {}),
                           results.get("kernels", {}).get("bfloat16", {}).get("rows", []))]
  if results.get("harness", {}).get("rows"):
    rows = results["harness"]["rows"]
    lengths = sorted({r["length"] for r in rows})
    sections += [f"## Harness (LRA Table 2 protocol, bf16, batch {sizes['harness_batch']})", "",
                 harness.markdown(rows, lengths, "softmax")]
  if results.get("harness_short", {}).get("rows"):
    rows = results["harness_short"]["rows"]
    lengths = sorted({r["length"] for r in rows})
    sections += [f"## Short sequences (the ListOps `small` model, float32, batch "
                 f"{sizes['harness_batch']})", "", harness.markdown(rows, lengths, "softmax"),
                 harness.ratio_line(rows, "rfa_gaussian", "rfa_arccos"), ""]
  if results.get("training"):
    training = sizes["training"]
    sections += [f"## Training on generated ListOps (bf16, length {training['max_length']}, "
                 f"{training['num_train_steps']} steps; each run in its own process)", "",
                 training_table(results["training"])]
  return "\n".join(sections) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True,
                      help="folder for results.json and results.md (rewritten as they come)")
  parser.add_argument("--quick", action="store_true", help="tiny sizes on any backend (CI)")
  parser.add_argument("--time-budget-s", type=float, default=420.0,
                      help="the steps share it; the last one may end up to a minute after it")
  parser.add_argument("--memory-fraction", type=float, default=0.9,
                      help="skip computations whose compiled memory exceeds this share of the "
                           "device's memory")
  parser.add_argument("--skip-torch", action="store_true", help="no PyTorch comparisons")
  parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


if __name__ == "__main__":
  main()
