"""The library at another commit against the checkout's, form by form, in one process.

    python -m benchmarks.compare --base COMMIT [--lengths 1024 4096 16384] [--repeats 15] [--out DIR]

`rfa_jax` at COMMIT (from `git archive`) is imported beside the checkout's as `rfa_jax_base` (its
absolute imports renamed), so both run in the same process on the same inputs: for every form that
both versions have (non-causal, chunked causal, gated, positive features, the window, cross
attention) and length, the forward+backward of each version is compiled, warmed up, then timed in
alternation (base, new, base, new, ...), so that drifts in the machine's speed fall on both. Reports
each version's median and spread (max - min) over --repeats calls, the ratio of the medians with
the spread of the per-pair ratios (the 10th to 90th percentile), and the ratio of XLA's compiled
memory. Writes results.json and results.md to --out (atomically) when given.
"""

import argparse
import importlib
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import rfa_jax
from benchmarks.attention import PACKED_SEQUENCES, compiled_memory_bytes, packed_ids
from lra.records import git_commit, markdown_table, write_results

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE_NAME = "rfa_jax_base"
WINDOW = 32

# name -> attend(lib, q, k, v, gate, projection): forms every version of the library has.
FORMS = {
    "rfa": lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w),
    "rfa causal chunked": lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, causal=True),
    "rfa gated chunked": lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, causal=True, gate=g),
    "rfa positive features": lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, feature_map="positive"),
    f"rfa + window {WINDOW}": lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, window=WINDOW),
    f"rfa gated chunked + window {WINDOW}":
        lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, causal=True, gate=g, window=WINDOW),
    "rfa_cross (queries: half the keys)":
        lambda lib, q, k, v, g, w: lib.rfa_cross(q[:, :q.shape[1] // 2], k, v, w),
}
# Forms of later versions (bidirectional gating: commit 77acfde on; packed rows: f7f98a3 on),
# compared only when named.
LATER_FORMS = {
    f"rfa packed ({PACKED_SEQUENCES} sequences a row)":
        lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, segment_ids=packed_ids(q)),
    f"rfa packed ({PACKED_SEQUENCES} interleaved ids)": lambda lib, q, k, v, g, w: lib.rfa(
        q, k, v, w, segment_ids=interleaved_ids(q)),
    "rfa bidirectional gated":
        lambda lib, q, k, v, g, w: lib.rfa(q, k, v, w, gate=g, reverse_gate=1 - g),
    "rfa bidirectional gated, positive features": lambda lib, q, k, v, g, w: lib.rfa(
        q, k, v, w, gate=g, reverse_gate=1 - g, feature_map="positive"),
}
ALL_FORMS = {**FORMS, **LATER_FORMS}


def interleaved_ids(q):
  """[batch, length] segment ids 1, 2, ..., PACKED_SEQUENCES in turn: no sequence is one run."""
  return jnp.broadcast_to(jnp.arange(q.shape[1]) % PACKED_SEQUENCES + 1, q.shape[:2])


def import_base(commit: str, folder: pathlib.Path):
  """`rfa_jax` at `commit`, imported as BASE_NAME from `folder`."""
  archive = subprocess.run(["git", "archive", commit, "rfa_jax"], cwd=ROOT, capture_output=True)
  if archive.returncode:
    raise ValueError(f"git archive {commit} rfa_jax failed: {archive.stderr.decode().strip()} "
                     "(pass a commit of this repository)")
  subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
  package = folder / BASE_NAME
  (folder / "rfa_jax").rename(package)
  for path in package.glob("*.py"):
    path.write_text(re.sub(r"\brfa_jax\b", BASE_NAME, path.read_text()))
  for name in [name for name in sys.modules if name.split(".")[0] == BASE_NAME]:
    del sys.modules[name]  # an earlier comparison's
  sys.path.insert(0, str(folder))
  try:
    return importlib.import_module(BASE_NAME)
  finally:
    sys.path.remove(str(folder))


def gradient(lib, form):
  """jit of the gradient of sum(out * cotangent) with respect to q, k and v."""
  def loss(q, k, v, gate, projection, cotangent):
    out = ALL_FORMS[form](lib, q, k, v, gate, projection)
    return jnp.sum(out * cotangent[:, :out.shape[1]])
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def compare_form(libraries: dict, form: str, inputs: tuple, repeats: int) -> dict:
  """Compiles, warms up and times both versions in alternation."""
  compiled = {}
  for name, lib in libraries.items():
    try:
      compiled[name] = gradient(lib, form).lower(*inputs).compile()
    except TypeError as error:  # an option this version does not have
      raise ValueError(f"form {form!r} does not run on the {name} version: {error}") from error
  for run in compiled.values():
    jax.block_until_ready(run(*inputs))
  times = {name: [] for name in compiled}
  for _ in range(repeats):
    for name, run in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(run(*inputs))
      times[name].append(time.perf_counter() - start)
  pair_ratios = np.asarray(times["new"]) / np.asarray(times["base"])
  memory = {name: compiled_memory_bytes(run).get("memory_bytes") for name, run in compiled.items()}
  summary = {name: dict(median_s=statistics.median(t), spread_s=max(t) - min(t), times_s=t,
                        memory_bytes=memory[name]) for name, t in times.items()}
  return dict(summary, time_ratio=summary["new"]["median_s"] / summary["base"]["median_s"],
              pair_ratio_p10=float(np.percentile(pair_ratios, 10)),
              pair_ratio_p90=float(np.percentile(pair_ratios, 90)),
              memory_ratio=(memory["new"] / memory["base"]
                            if memory["new"] and memory["base"] else None))


def make_inputs(length: int, args):
  keys = jax.random.split(jax.random.PRNGKey(args.seed), 6)
  shape = (args.batch, length, args.heads, args.head_dim)
  q, k, v, cotangent = (jax.random.normal(key, shape) for key in keys[:4])
  gate = jax.nn.sigmoid(jax.random.normal(keys[4], shape[:3]))
  projection = rfa_jax.random_projection(keys[5], args.heads, args.num_features, args.head_dim)
  return q, k, v, gate, projection, cotangent


def markdown(results: dict) -> str:
  header = ["form", "L", "base ms (spread)", "new ms (spread)", "new / base time (pairs p10-p90)",
            "new / base memory"]
  ms = lambda s: f"{s['median_s'] * 1e3:.2f} ({s['spread_s'] * 1e3:.2f})"
  lines = [[r["form"], str(r["length"]), ms(r["base"]), ms(r["new"]),
            f"{r['time_ratio']:.3f} ({r['pair_ratio_p10']:.2f}-{r['pair_ratio_p90']:.2f})",
            "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f}"]
           for r in results["rows"]]
  return "\n".join([
      "# rfa_jax: the checkout against another commit", "",
      f"base {results['base_commit']}, new {results['new_commit']}; forward+backward, batch "
      f"{results['args']['batch']}, {results['args']['heads']} heads, head_dim "
      f"{results['args']['head_dim']}, {results['args']['num_features']} projections, float32; "
      f"{results['args']['repeats']} alternating calls each after a warm-up, on "
      f"{results['device']}.", "",
      *markdown_table(header, lines)]) + "\n"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base", required=True, help="a commit of this repository")
  parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
  parser.add_argument("--forms", nargs="+", default=list(FORMS),
                      choices=list(ALL_FORMS), metavar="FORM",
                      help="default: the forms every version has")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--head-dim", type=int, default=64)
  parser.add_argument("--num-features", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None)
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory() as folder:
    libraries = {"base": import_base(args.base, pathlib.Path(folder)), "new": rfa_jax}
    rows = []
    for length in args.lengths:
      inputs = make_inputs(length, args)
      for form in args.forms:
        row = dict(form=form, length=length, **compare_form(libraries, form, inputs, args.repeats))
        print(f"L={length:>6} {form:<36} new / base {row['time_ratio']:.3f}", flush=True)
        rows.append(row)
  results = dict(args=vars(args), base_commit=args.base, new_commit=git_commit(),
                 device=jax.devices()[0].device_kind, rows=rows)
  text = markdown(results)
  if args.out:  # also prints it
    write_results(args.out, results, text)
  else:
    print(text)
  return results


if __name__ == "__main__":
  main()
