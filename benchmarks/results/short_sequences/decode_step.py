"""`decode_step` of the checkout against another commit: a jitted loop of 64 steps (4 heads, head_dim
64, 64 projections, float32), the two libraries timed in alternation, 30 loops each, per batch size.

    python benchmarks/results/short_sequences/decode_step.py --base ff4c615 > benchmarks/results/short_sequences/decode_step.txt
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))
import rfa_jax  # noqa: E402
from benchmarks.compare import import_base  # noqa: E402
from lra.records import git_commit  # noqa: E402

HEADS, HEAD_DIM, FEATURES, STEPS, LOOPS = 4, 64, 64, 64, 30


def decode_loop(lib, batch):
  projection = lib.random_projection(jax.random.key(1), HEADS, FEATURES, HEAD_DIM)

  @jax.jit
  def run(qs, ks, vs):
    state = lib.init_decode_state(batch, HEADS, 2 * FEATURES, HEAD_DIM)
    step = lambda state, x: lib.decode_step(state, *x, projection)
    return jax.lax.scan(step, state, (qs, ks, vs))[1]

  return run


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--base", required=True)
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as folder:
    libraries = {"base": import_base(args.base, pathlib.Path(folder)), "new": rfa_jax}
    print(f"base {args.base}, new {git_commit()}; {HEADS} heads, head_dim {HEAD_DIM}, {FEATURES} "
          f"projections, {STEPS} steps a loop, {LOOPS} loops each in alternation; us per step")
    for batch in args.batch_sizes:
      inputs = [jax.random.normal(key, (STEPS, batch, HEADS, HEAD_DIM))
                for key in jax.random.split(jax.random.key(0), 3)]
      loops = {name: decode_loop(lib, batch) for name, lib in libraries.items()}
      for loop in loops.values():
        jax.block_until_ready(loop(*inputs))
      times = {name: [] for name in loops}
      for _ in range(LOOPS):
        for name, loop in loops.items():
          start = time.perf_counter()
          jax.block_until_ready(loop(*inputs))
          times[name].append((time.perf_counter() - start) / STEPS * 1e6)
      print(f"batch {batch}: " + ", ".join(
          f"{name} {statistics.median(t):.1f} (min {min(t):.1f})" for name, t in times.items()))


if __name__ == "__main__":
  main()
