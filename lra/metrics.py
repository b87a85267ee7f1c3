"""Workdir outputs: `metrics.jsonl` (one JSON object per logged step and split), TensorBoard event
files (tensorboardX) and the final `results.json`, written atomically. Only process 0 writes."""

import json
import os
import pathlib
import resource
import subprocess
import tempfile

import jax
import numpy as np

SCALARS = ("loss", "accuracy", "steps_per_sec", "learning_rate")


def write_json_atomically(path, payload):
  """Writes JSON next to `path` and renames it into place, so a reader never sees half a file."""
  path = pathlib.Path(path)
  with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
    json.dump(payload, f, indent=2, default=_to_builtin)
  os.replace(f.name, path)


def _to_builtin(value):
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class MetricsWriter:
  """Appends `{"step", "split", ...}` records to metrics.jsonl and TensorBoard."""

  def __init__(self, workdir):
    self.workdir = pathlib.Path(workdir)
    self.active = jax.process_index() == 0
    self.path = self.workdir / "metrics.jsonl"
    self._tensorboard = None
    if self.active:
      from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
      self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))

  def truncate_after(self, step: int):
    """Drops records past `step`, which a resumed run replays exactly from the checkpoint at `step`,
    and test records, which it writes again when it ends."""
    if not (self.active and self.path.exists()):
      return
    kept = [line for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step
            and json.loads(line)["split"] != "test"]
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, self.path)

  def write(self, step: int, split: str, **values):
    if not self.active:
      return
    record = {"step": int(step), "split": split, **{k: _to_builtin_scalar(v) for k, v in values.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in record.items():
      if name in SCALARS:
        self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()


def _to_builtin_scalar(value):
  return value.item() if isinstance(value, (np.generic, np.ndarray)) else value


def max_rss_bytes() -> int:
  """Peak resident memory of this process (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_memory_bytes():
  """Peak bytes in use on device 0 where the backend reports it (GPU, TPU); None on CPU."""
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
