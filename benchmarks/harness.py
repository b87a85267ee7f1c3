"""Training speed and memory of the harness per attention mechanism and length (the protocol of LRA's
Table 2: the text task's model, synthetic byte tokens, steps/s and peak memory, speed-up against
softmax at the same length).

    python -m benchmarks.harness [--attentions softmax rfa_gaussian ... | all] [--lengths 1024 2048 3072 4096]
        [--dtype float32|bfloat16] [--override model.num_layers=1 ...]

An attention may carry options of its own, `name:key=value,...` (e.g.
`rfa_gaussian:window=32,feature_map=positive`): that row is the mechanism with those
`model.attention_options`, named by the whole spec.

The cells of one length are timed in alternation: every cell is compiled and warmed up, then the
timed steps go round the cells (one step of each, --steps times), so that drifts in the machine's
speed fall on every cell alike and the ratios of one run hold. Each row keeps its step times and
their spread (max - min over the median).

A cell that does not fit (compiled memory over --memory-budget-gib, or out of memory when it runs)
or fails is recorded as skipped with the reason; the other cells still run. Writes results.json and
results.md to --out, atomically.
"""

import argparse
import ast
import pathlib
import platform
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from lra import attention as attention_registry
from lra import parallelism
from benchmarks.attention import compiled_memory_bytes, failure, runs_cudnn_attention
from lra.records import (device_peak_memory_bytes, git_commit, markdown_table, max_rss_bytes,
                         write_results)

TEXT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "text.py"


def text_config(attention: str, length: int, args):
  """The text task's config for `attention` (a spec, `name[:key=value,...]`) at `length`, batch and
  dtype of `args`, with `args.override` (`dotted.key=value`) applied."""
  from lra import config_lib  # needs ml_collections; the tables and specs do not
  name, options = parse_spec(attention)
  config = config_lib.load(str(TEXT_CONFIG), name)
  config.max_length, config.batch_size, config.dtype = length, args.batch_size, args.dtype
  for item in args.override + [f"model.attention_options.{item}" for item in options]:
    key, _, text = item.partition("=")
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = _literal(text)
  return config


def parse_spec(spec: str) -> tuple[str, list[str]]:
  """`name[:key=value,...]` -> (name, ["key=value", ...]); unknown names and options raise."""
  name, _, text = spec.partition(":")
  known = attention_registry.default_options(name)  # raises on an unknown name
  options = [item for item in text.split(",") if item]
  for item in options:
    key, equals, _ = item.partition("=")
    if not equals or key not in known:
      raise ValueError(f"attention spec {spec!r}: {item!r} is not key=value with a key of {name}'s "
                       f"options ({', '.join(sorted(known))})")
  return name, options


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def prepare(attention: str, length: int, args, mesh) -> tuple[dict, Callable[[], float] | None]:
  """Compiles one train step, checks its memory against the budget and runs a warm-up step. Returns
  (row, step): step() runs one more step and returns its seconds; None when the cell is skipped
  (the reason in the row). A failure (out of memory) is recorded in the row, never raised. Rows of
  softmax say whether the compiled step runs cuDNN's fused attention or XLA's (`implementation`)."""
  from lra.train import init_training  # the training stack loads only for a measurement
  row = dict(attention=attention, length=length, batch_size=args.batch_size, dtype=args.dtype)
  try:
    config = text_config(attention, length, args)
    state, steps = init_training(config, mesh, vocab_size=257, num_classes=2, dual=False,
                                 has_padding=True)
    rng = np.random.default_rng(0)
    batch = parallelism.global_batch(dict(
        inputs=rng.integers(1, 257, (args.batch_size, length), dtype=np.int32),
        targets=rng.integers(0, 2, (args.batch_size,), dtype=np.int32),
        weights=np.ones((args.batch_size,), np.float32)), mesh)
    start = time.perf_counter()
    compiled = steps.train.lower(state, batch).compile()
    row.update(compile_s=time.perf_counter() - start, **compiled_memory_bytes(compiled))
    if parse_spec(attention)[0] == "softmax":
      row["implementation"] = "cudnn" if runs_cudnn_attention(compiled) else "xla"
    if row.get("memory_bytes", 0) > args.memory_budget_gib * 2**30:
      return dict(row, skipped=f"needs {row['memory_bytes'] / 2**30:.1f} GiB > "
                               "--memory-budget-gib"), None
    current = list(compiled(state, batch))  # warm-up; then [state, metrics] of the last step
    jax.block_until_ready(current)
  except Exception as error:  # noqa: BLE001 - recorded per cell; the other cells still run
    return dict(row, skipped=failure(error), device_peak_bytes=device_peak_memory_bytes()), None

  def step() -> float:
    start = time.perf_counter()
    current[:] = compiled(current[0], batch)
    jax.block_until_ready(current[1])
    seconds = time.perf_counter() - start
    row["loss"] = float(current[1]["loss"])
    return seconds

  return dict(row, device_peak_bytes=device_peak_memory_bytes()), step


def time_in_turn(cells, steps: int):
  """cells: [(row, step or None)]; `steps` rounds of one step of every live cell. Fills each row's
  steps_per_sec (from the median), step_times and spread; a cell that fails leaves the rotation,
  its row recorded as skipped."""
  times = {index: [] for index, (_, step) in enumerate(cells) if step is not None}
  for _ in range(steps):
    for index in list(times):
      row, step = cells[index]
      try:
        times[index].append(step())
      except Exception as error:  # noqa: BLE001 - recorded per cell; the other cells still run
        row["skipped"] = failure(error)
        del times[index]
  for index, seconds in times.items():
    median = statistics.median(seconds)
    cells[index][0].update(steps_per_sec=1.0 / median, step_times=seconds,
                           spread=(max(seconds) - min(seconds)) / median)


def relative_to_baseline(rows, baseline):
  """Adds speed-up and memory ratio against `baseline` at the same length."""
  reference = {r["length"]: r for r in rows if r["attention"] == baseline and "steps_per_sec" in r}
  for row in rows:
    base = reference.get(row["length"])
    if base and "steps_per_sec" in row:
      row["speedup"] = row["steps_per_sec"] / base["steps_per_sec"]
    if base and "memory_bytes" in row and "memory_bytes" in base:
      row["memory_ratio"] = row["memory_bytes"] / base["memory_bytes"]
  return rows


def markdown(rows, lengths, baseline) -> str:
  """LRA Table 2 layout: steps/s (speed-up) and peak memory (ratio) per mechanism and length."""
  header = (["attention"] + [f"{size(n)} steps/s (×{baseline})" for n in lengths]
            + [f"{size(n)} memory GiB (×{baseline})" for n in lengths])
  lines = []
  for name in dict.fromkeys(r["attention"] for r in rows):
    by_length = {r["length"]: r for r in rows if r["attention"] == name}
    speed, memory = [], []
    for n in lengths:
      r = by_length[n]
      speed.append(f"{r['steps_per_sec']:.3f} ({r.get('speedup', float('nan')):.2f}×)"
                   if "steps_per_sec" in r else skipped_cell(r))
      memory.append(f"{r['memory_bytes'] / 2**30:.2f} ({r.get('memory_ratio', float('nan')):.2f}×)"
                    if "memory_bytes" in r else "-")
    lines.append([name, *speed, *memory])
  return "\n".join(markdown_table(header, lines)) + "\n"


def size(length: int) -> str:
  return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def skipped_cell(row) -> str:
  reason = row.get("skipped", "")
  if reason.startswith("out of memory"):
    return "OOM"
  if reason.startswith("needs"):
    return "over budget"
  return "not run" if reason == "time budget spent" else "failed"


def run(args, deadline: float | None = None, on_row=None) -> list[dict]:
  """Every (attention, length) cell of `args`, with ratios against `args.baseline`; cells after
  `deadline` (time.monotonic()) are recorded as not run. `on_row(rows)` after each cell, with the
  rows so far and their ratios."""
  if args.attentions == ["all"]:
    args.attentions = [args.baseline] + [n for n in attention_registry.names() if n != args.baseline]
  for spec in args.attentions:  # every spec checked before the first cell runs
    parse_spec(spec)
  mesh = parallelism.data_mesh()
  overrides = dict(item.partition("=")[::2] for item in args.override)
  parallelism.check_batch_size(args.batch_size, mesh, int(overrides.get("microbatches", 1)))
  rows = []
  for length in args.lengths:  # every mechanism at one length, timed in turn, before the next length
    cells = []
    for attention in args.attentions:
      if deadline is not None and time.monotonic() > deadline:
        cells.append((dict(attention=attention, length=length, batch_size=args.batch_size,
                           dtype=args.dtype, skipped="time budget spent"), None))
      else:
        cells.append(prepare(attention, length, args, mesh))
    time_in_turn(cells, args.steps)
    for row, _ in cells:
      rows.append(row)
      memory = f", {row['memory_bytes'] / 2**30:.2f} GiB" if "memory_bytes" in row else ""
      print(f"{row['attention']:>14} L={length:>5} {args.dtype}: "
            + (f"{row['steps_per_sec']:.3f} steps/s (spread {row['spread']:.0%})"
               if "steps_per_sec" in row else row["skipped"]) + memory, flush=True)
    if on_row is not None:
      on_row(relative_to_baseline(rows, args.baseline))
  return relative_to_baseline(rows, args.baseline)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--attentions", nargs="+", default=["softmax", "rfa_gaussian"],
                      help="registered names, `name:key=value,...` with options, or `all`")
  parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 3072, 4096])
  parser.add_argument("--batch-size", type=int, default=4)
  parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
  parser.add_argument("--memory-budget-gib", type=float, default=16.0)
  parser.add_argument("--baseline", default="softmax")
  parser.add_argument("--dtype", default="float32", choices=attention_registry.DTYPES,
                      help="config.dtype: activations and matrix products")
  parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                      help="config entries to set, e.g. model.num_layers=1")
  parser.add_argument("--out", default="benchmarks/results/harness")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  rows = run(args)
  table = (markdown(rows, args.lengths, args.baseline) + "\n"
           + ratio_line(rows, "rfa_gaussian", "rfa_arccos") + "\n\n"
           + target_line(rows, max(args.lengths), args.baseline) + "\n")
  write_results(args.out, dict(
      rows=rows, args=vars(args), commit=git_commit(), jax_version=jax.__version__,
      device=str(jax.devices()[0]),
      device_count=jax.device_count(), machine=platform.machine(), max_rss_bytes=max_rss_bytes()),
      table)
  return rows


def ratio_line(rows, name: str, other: str) -> str:
  """`name`'s steps/s over `other`'s at every length where both were measured."""
  speed = {(r["attention"], r["length"]): r["steps_per_sec"] for r in rows if "steps_per_sec" in r}
  lengths = sorted({length for attention, length in speed if attention == name})
  ratios = [f"{speed[name, n] / speed[other, n]:.2f} at {n}" for n in lengths if (other, n) in speed]
  return f"{name} / {other} steps/s: {', '.join(ratios) or 'not measured'}"


def target_line(rows, length, baseline, candidate="rfa_gaussian", speedup=6.0, memory=0.15) -> str:
  """The harness target at `length`: `candidate` >= `speedup`x the baseline's steps/s with
  <= `memory`x its memory. The target is set against softmax: another baseline is not checked."""
  if parse_spec(baseline)[0] != "softmax":
    return f"target: set against softmax; not checked with --baseline {baseline}"
  row = next((r for r in rows if r["attention"] == candidate and r["length"] == length), None)
  if row is None or "speedup" not in row or "memory_ratio" not in row:
    return f"target: needs {candidate} and {baseline} measured at {length}"
  met = row["speedup"] >= speedup and row["memory_ratio"] <= memory
  return (f"target at {length}: {candidate} {row['speedup']:.1f}x {baseline}'s steps/s (>= {speedup}), "
          f"{row['memory_ratio']:.3f}x its memory (<= {memory}): {'PASS' if met else 'MISS'}")


if __name__ == "__main__":
  main()
