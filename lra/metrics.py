"""Training metrics: `metrics.jsonl` (one JSON object per logged step and split) and TensorBoard
event files (tensorboardX). Only process 0 writes."""

import json
import pathlib

import jax
import numpy as np

from lra.records import write_text_atomically

SCALARS = ("loss", "accuracy", "steps_per_sec", "learning_rate")


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
    write_text_atomically(self.path, "".join(line + "\n" for line in kept))

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
