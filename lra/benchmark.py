"""Training speed and memory of the harness per attention mechanism and length (the protocol of LRA's
Table 2: the text task's model, synthetic byte tokens, steps/s and peak memory, speed-up against
softmax at the same length).

    python -m lra.benchmark [--attentions softmax rfa_gaussian ... | all] [--lengths 1024 2048 3072 4096]

Writes results.json and results.md to --out, atomically.
"""

import argparse
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

from lra import attention as attention_registry
from lra import config_lib, parallelism
from lra.metrics import max_rss_bytes, write_json_atomically
from lra.train import init_training

TEXT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "text.py"


def measure(attention: str, length: int, args, mesh) -> dict:
  """Compiles one train step, checks its memory against the budget, then times `args.steps` steps."""
  config = config_lib.load(str(TEXT_CONFIG), attention)
  config.max_length, config.batch_size = length, args.batch_size
  state, steps = init_training(config, mesh, vocab_size=257, num_classes=2, dual=False,
                               has_padding=True)
  rng = np.random.default_rng(0)
  batch = parallelism.global_batch(dict(
      inputs=rng.integers(1, 257, (args.batch_size, length), dtype=np.int32),
      targets=rng.integers(0, 2, (args.batch_size,), dtype=np.int32)), mesh)
  compiled = steps.train.lower(state, batch).compile()
  analysis = compiled.memory_analysis()
  memory = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes)
  row = dict(attention=attention, length=length, batch_size=args.batch_size, memory_bytes=memory)
  if memory > args.memory_budget_gib * 2**30:
    return dict(row, skipped=f"needs {memory / 2**30:.1f} GiB > --memory-budget-gib")
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return dict(row, steps_per_sec=1.0 / statistics.median(times), step_times=times)


def relative_to_baseline(rows, baseline):
  """Adds speed-up and memory ratio against `baseline` at the same length."""
  reference = {r["length"]: r for r in rows if r["attention"] == baseline and "steps_per_sec" in r}
  for row in rows:
    base = reference.get(row["length"])
    if base and "steps_per_sec" in row:
      row["speedup"] = row["steps_per_sec"] / base["steps_per_sec"]
    if base:
      row["memory_ratio"] = row["memory_bytes"] / base["memory_bytes"]
  return rows


def markdown(rows, lengths, baseline) -> str:
  """LRA Table 2 layout: steps/s (speed-up) and peak memory (ratio) per mechanism and length."""
  header = "| attention | " + " | ".join(f"{n // 1024}K steps/s (×{baseline})" for n in lengths)
  header += " | " + " | ".join(f"{n // 1024}K memory GiB (×{baseline})" for n in lengths) + " |"
  lines = [header, "|---" * (1 + 2 * len(lengths)) + "|"]
  for name in dict.fromkeys(r["attention"] for r in rows):
    by_length = {r["length"]: r for r in rows if r["attention"] == name}
    speed, memory = [], []
    for n in lengths:
      r = by_length[n]
      speed.append(f"{r['steps_per_sec']:.3f} ({r.get('speedup', float('nan')):.1f}×)"
                   if "steps_per_sec" in r else "skipped")
      memory.append(f"{r['memory_bytes'] / 2**30:.2f} ({r.get('memory_ratio', float('nan')):.2f}×)")
    lines.append(f"| {name} | " + " | ".join(speed + memory) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--attentions", nargs="+", default=["softmax", "rfa_gaussian"],
                      help="registered names, or `all`")
  parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 3072, 4096])
  parser.add_argument("--batch-size", type=int, default=4)
  parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
  parser.add_argument("--memory-budget-gib", type=float, default=16.0)
  parser.add_argument("--baseline", default="softmax")
  parser.add_argument("--out", default="benchmarks/results/lra")
  args = parser.parse_args(argv)
  if args.attentions == ["all"]:
    args.attentions = [args.baseline] + [n for n in attention_registry.names() if n != args.baseline]
  mesh = parallelism.data_mesh()
  parallelism.check_batch_size(args.batch_size, mesh)
  rows = []
  for attention in args.attentions:
    for length in args.lengths:
      row = measure(attention, length, args, mesh)
      rows.append(row)
      print(f"{attention:>14} L={length:>5}: "
            + (f"{row['steps_per_sec']:.3f} steps/s" if "steps_per_sec" in row else row["skipped"])
            + f", {row['memory_bytes'] / 2**30:.2f} GiB", flush=True)
  rows = relative_to_baseline(rows, args.baseline)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  table = (markdown(rows, args.lengths, args.baseline) + "\n"
           + target_line(rows, max(args.lengths), args.baseline) + "\n")
  write_json_atomically(out / "results.json", dict(
      rows=rows, args=vars(args), jax_version=jax.__version__, device=str(jax.devices()[0]),
      device_count=jax.device_count(), machine=platform.machine(), max_rss_bytes=max_rss_bytes()))
  (out / "results.md.tmp").write_text(table)
  (out / "results.md.tmp").replace(out / "results.md")
  print(table)
  return rows


def target_line(rows, length, baseline, candidate="rfa_gaussian", speedup=6.0, memory=0.15) -> str:
  """The harness target at `length`: `candidate` >= `speedup`x the baseline's steps/s with
  <= `memory`x its memory."""
  row = next((r for r in rows if r["attention"] == candidate and r["length"] == length), None)
  if row is None or "speedup" not in row:
    return f"target: needs {candidate} and {baseline} measured at {length}"
  met = row["speedup"] >= speedup and row["memory_ratio"] <= memory
  return (f"target at {length}: {candidate} {row['speedup']:.1f}x {baseline}'s steps/s (>= {speedup}), "
          f"{row['memory_ratio']:.3f}x its memory (<= {memory}): {'PASS' if met else 'MISS'}")


if __name__ == "__main__":
  main()
