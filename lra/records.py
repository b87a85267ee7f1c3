"""Writing results down, for the harness, the benchmarks and the studies: files written atomically,
markdown tables, and what traces a result back to its run (commit, memory)."""

import json
import os
import pathlib
import resource
import subprocess
import tempfile

import numpy as np


def write_text_atomically(path, text: str):
  """Writes next to `path` and renames it into place, so a reader never sees half a file."""
  path = pathlib.Path(path)
  with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
    f.write(text)
  os.replace(f.name, path)


def write_json_atomically(path, payload):
  """`payload` as indented JSON (numpy values as lists and scalars), written atomically."""
  write_text_atomically(path, json.dumps(payload, indent=2, default=_to_builtin))


def _to_builtin(value):
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def markdown_table(header, rows) -> list[str]:
  """Lines of a markdown table: `header` a list of column names, `rows` lists of cell strings."""
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(row) + " |" for row in rows])


def max_rss_bytes() -> int:
  """Peak resident memory of this process (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_memory_bytes():
  """Peak bytes in use on device 0 where the backend reports it (GPU, TPU); None on CPU."""
  import jax  # here only: writing results needs no JAX (the GPU check's PyTorch process)
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def git_commit() -> str | None:
  """HEAD of the checkout this code runs from, with "+dirty" if tracked files differ; None outside
  a git checkout."""
  root = pathlib.Path(__file__).resolve().parents[1]
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                            check=True, timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, check=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


def write_results(out, results: dict, markdown: str, name: str = "results"):
  """`out/<name>.json` (first) and `out/<name>.md`, each written atomically, and the markdown on
  stdout: how the benchmarks and studies leave their figures."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  write_json_atomically(out / f"{name}.json", results)
  write_text_atomically(out / f"{name}.md", markdown)
  print(markdown, flush=True)
