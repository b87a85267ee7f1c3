"""The configuration a workdir was started with (`<workdir>/run.json`), and the check that a re-run
continues the same run.

A re-run may raise `num_train_steps` (to train on) and change the keys in `FREE_KEYS`, which only
affect logging, evaluation and checkpoint frequency, or where the data lives; every other key changes
the state or the data. So does the data itself: its provenance (file sizes and SHA-256, or the
generator's options) must match too, wherever `data_dir` now points.
"""

import json
import pathlib

from lra.metrics import write_json_atomically

RECORD = "run.json"
FREE_KEYS = ("num_train_steps", "eval_every", "checkpoint_every", "log_every", "data_dir")


class ConfigMismatch(ValueError):
  """A workdir is re-run with a configuration or data that differs from the one it started with."""


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"model": {"emb_dim": 8}} -> {"model.emb_dim": 8}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _differences(old: dict, new: dict, ignore=()) -> list[str]:
  old, new = flatten(old), flatten(new)
  return [f"  {key}: {old.get(key, '<absent>')!r} in the workdir, {new.get(key, '<absent>')!r} now"
          for key in sorted(set(old) | set(new))
          if key not in ignore and old.get(key, "<absent>") != new.get(key, "<absent>")]


def _fail(workdir, what: str, differences: list[str]):
  raise ConfigMismatch(
      f"{workdir} was started with a different {what}:\n" + "\n".join(differences) + "\n"
      f"A run cannot continue with these changes. Use a new --workdir, or re-run with the values it "
      f"was started with (recorded in {pathlib.Path(workdir) / RECORD}).")


def check_config(workdir, config: dict, write: bool = True):
  """Before any work: records `config` in a new workdir (if `write`: the writing process), or
  checks it against the recorded one."""
  path = pathlib.Path(workdir) / RECORD
  if not path.exists():
    if write:
      write_json_atomically(path, {"config": config})
    return
  record = json.loads(path.read_text())
  differences = _differences(record["config"], config, ignore=FREE_KEYS)
  if differences:
    _fail(workdir, "configuration", differences)


def _content(data):
  """Provenance without absolute paths: what identifies the data wherever it lives."""
  if isinstance(data, dict):
    return {key: _content(value) for key, value in data.items()
            if key not in ("path", "directory", "data_dir", "aclimdb")}
  if isinstance(data, list):
    return [_content(value) for value in data]
  return data


def check_data(workdir, data: dict, write: bool = True):
  """Records the data's provenance on the first run; later runs must read the same data."""
  path = pathlib.Path(workdir) / RECORD
  record = json.loads(path.read_text()) if path.exists() else {}
  if "data" not in record:
    if write:
      write_json_atomically(path, {**record, "data": data})
    return
  if _content(record["data"]) != _content(data):
    differences = _differences({"data": _content(record["data"])}, {"data": _content(data)})
    _fail(workdir, "data set", differences)
