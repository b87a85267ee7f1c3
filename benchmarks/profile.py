"""Where one harness training step spends its time: XLA's ops, from a `jax.profiler` trace.

    python -m benchmarks.profile --attentions rfa_gaussian rfa_arccos --lengths 128 --batch-size 32
        [--steps 10] [--top 15] [--override model.num_layers=2 ...] [--out DIR]

Takes the arguments of `benchmarks.harness` (the same model, batch and overrides): for each cell,
compiles and warms up the train step, traces --steps steps and sums the trace's XLA op durations by
kind (the op name without its number: `dot`, `ynn_fusion`, `select_multiply_fusion`, ...). Prints the
step's wall time, the summed op time (above the wall time when ops overlap on several threads or
devices; every device's ops are counted) and
the --top kinds; with --out, writes every kind's ms per step to results.json and the tables to
results.md, atomically.
"""

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile

import jax

from benchmarks import harness
from lra import parallelism
from lra.records import git_commit, markdown_table, write_results

# Trace events that are not XLA ops: the runtime's executors and waits, Python frames, the jitted call.
_NOT_OPS = ("Thunk", "$", "Pjit", "end:", "Wait:")


def op_times(trace_dir: pathlib.Path) -> collections.Counter:
  """Microseconds per op kind summed over the trace's events."""
  paths = sorted(trace_dir.glob("**/*.trace.json.gz"))
  if not paths:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: jax.profiler wrote no trace")
  times = collections.Counter()
  for event in json.loads(gzip.decompress(paths[-1].read_bytes()))["traceEvents"]:
    if event.get("ph") == "X" and "dur" in event and not event["name"].startswith(_NOT_OPS):
      times[re.sub(r"[._]\d+$", "", event["name"])] += event["dur"]
  return times


def profile(attention: str, length: int, args, mesh) -> dict:
  """One cell: wall ms per step and ms per step of every op kind (or the reason it was skipped)."""
  row, step = harness.prepare(attention, length, args, mesh)
  if step is None:
    return row
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      wall = sum(step() for _ in range(args.steps))
    times = op_times(pathlib.Path(folder))
  per_step = {kind: us / args.steps / 1e3 for kind, us in times.most_common()}
  return dict(row, wall_ms=wall / args.steps * 1e3, op_ms=sum(per_step.values()), ops_ms=per_step)


def markdown(rows, top: int) -> str:
  parts = []
  for row in rows:
    title = f"## {row['attention']}, L={row['length']}"
    if "ops_ms" not in row:
      parts.append(f"{title}\n\nskipped: {row.get('skipped')}\n")
      continue
    lines = [[kind, f"{ms:.2f}"] for kind, ms in list(row["ops_ms"].items())[:top]]
    parts.append(f"{title}\n\nwall {row['wall_ms']:.1f} ms per step, ops {row['op_ms']:.1f} ms\n\n"
                 + "\n".join(markdown_table(["op kind", "ms per step"], lines)) + "\n")
  return "\n".join(parts)


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(add_help=False)  # the rest are benchmarks.harness's arguments
  parser.add_argument("--top", type=int, default=15, help="op kinds shown per cell")
  parser.add_argument("--out", default=None, help="folder for results.json and results.md")
  own, rest = parser.parse_known_args(argv)
  args = harness.parse_args(rest + ([] if "--steps" in rest else ["--steps", "10"]))
  mesh = parallelism.data_mesh()
  parallelism.check_batch_size(args.batch_size, mesh)
  for spec in args.attentions:
    harness.parse_spec(spec)
  rows = [profile(attention, length, args, mesh)
          for length in args.lengths for attention in args.attentions]
  text = markdown(rows, own.top)
  print(text)
  if own.out is not None:
    write_results(own.out, dict(rows=rows, args=vars(args), commit=git_commit(),
                            jax_version=jax.__version__, device=str(jax.devices()[0])), text)
  return rows


if __name__ == "__main__":
  main()
