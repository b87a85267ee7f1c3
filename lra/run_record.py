"""The configuration a workdir was started with (`<workdir>/run.json`), and the check that a re-run
continues the same run.

A re-run may raise `num_train_steps` (to train on) and change the keys in `FREE_KEYS`, which only
affect logging, evaluation and checkpoint frequency, or where the data lives; every other key changes
the state or the data. A key added to the configurations after a workdir was started (`ADDED_KEYS`)
matches its absence there when it has the value that does what the code did before it existed. So does the data itself: its provenance (file sizes and SHA-256, or the
generator's options) must match too, wherever `data_dir` now points.
"""

import json
import pathlib

from lra.records import write_json_atomically

RECORD = "run.json"
FREE_KEYS = ("num_train_steps", "eval_every", "checkpoint_every", "log_every", "data_dir")
ADDED_KEYS = {"task_options.stream_sets": 1, "microbatches": 1, "task_options.validation": "holdout",
              "task_options.parentheses": False}


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


def with_added_keys(flat: dict, keys) -> dict:
  """`flat` (a flattened config) with each key of `ADDED_KEYS` that is in `keys` and not in `flat`,
  at the value that does what the code did before the key existed."""
  return {**{key: value for key, value in ADDED_KEYS.items() if key in keys}, **flat}


def _differences(old: dict, new: dict, ignore=()) -> list[str]:
  old, new = flatten(old), flatten(new)
  old = with_added_keys(old, new)
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


def describe_data(data, *, brief: bool = False) -> str:
  """A `data` provenance record in words. brief=True: one phrase for a run's summary line
  (generated with the seed, or the folders read); else one line for a report: generated (generator,
  seed, options), the files read (path, size, sha256), and any other plain fields."""
  if brief:
    if data.get("generated"):
      generator = data.get("generator", {})
      return f"GENERATED (seed {generator.get('seed')}, {generator.get('generator')})"
    files = data.get("files") or []
    if files:
      folders = sorted({str(pathlib.Path(f["path"]).parent) for f in files})
      return f"{len(files)} files read from {', '.join(folders)}"
    if "tfds" in data:
      return f"tensorflow-datasets {data['tfds']} {data.get('version')} in {data.get('data_dir')}"
    return ", ".join(f"{key}={value}" for key, value in data.items() if not isinstance(value, dict))
  if not data:
    return "not recorded in results.json"
  if not isinstance(data, dict):
    return str(data)
  parts = []
  if data.get("generated"):
    generator = data.get("generator") if isinstance(data.get("generator"), dict) else {}
    options = {**(data.get("options") or {}),
               **{k: v for k, v in generator.items() if k not in ("seed", "generator")}}
    listed = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    parts.append(f"GENERATED by {generator.get('generator', 'a generator')} "
                 f"(seed {data.get('seed', generator.get('seed'))}" + (f"; {listed})" if listed else ")"))
  files = []

  def walk(node, name):
    if isinstance(node, dict):
      if "sha256" in node:
        size = next((node[k] for k in ("size", "bytes", "size_bytes", "num_bytes") if k in node), None)
        files.append(f"{node.get('path', name)}"
                     + (f" ({size} bytes" if size is not None else " (")
                     + f"{', ' if size is not None else ''}sha256 {short_id(node['sha256'])})")
        return
      for key, value in node.items():
        walk(value, key)
    elif isinstance(node, list):
      for item in node:
        walk(item, name)

  walk({k: v for k, v in data.items() if k != "generator"}, "data")
  scalars = ", ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, (str, int, float))
                      and not isinstance(v, bool) and k not in ("sha256", "path", "seed"))
  parts += [part for part in (scalars, ", ".join(files)) if part]
  return "; ".join(parts) or json.dumps(data)


def short_id(text, width=12):
  """The first `width` characters of a commit or SHA-256, for tables."""
  return str(text)[:width]
