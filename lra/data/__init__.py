"""LRA task data: `load_task(name, data_dir=..., max_length=..., **task_options) -> TaskData`.

Each task module reads the official files (or tensorflow-datasets) into random-access sources of
{"inputs": int32 [max_length] (retrieval: "inputs1", "inputs2"), "targets": int32 []};
`pipeline.make_batches` turns a source into batches. The causal task "lm" returns an
`lm.LMData` of byte streams instead, batched by `lm.make_lm_batches`.
"""

import functools
import inspect

from lra.data import image, listops, lm, pathfinder, retrieval, text
from lra.data.sources import MalformedDataError, MissingDataError, TaskData

_LOADERS = {
    "listops": listops.load,
    "text": text.load,
    "retrieval": retrieval.load,
    "image": image.load,
    "pathfinder": functools.partial(pathfinder.load, resolution=32),
    "pathx": functools.partial(pathfinder.load, resolution=128),
    "lm": lm.load,
}


def names() -> list[str]:
  return list(_LOADERS)


def _loader(name: str):
  if name not in _LOADERS:
    raise ValueError(f"unknown task {name!r}; expected one of {names()}")
  return _LOADERS[name]


def options(name: str) -> list[str]:
  """The task options (`config.task_options`) that task `name`'s loader takes."""
  return [p for p in inspect.signature(_loader(name)).parameters
          if p not in ("data_dir", "max_length", "resolution")]


def load_task(name: str, *, data_dir, max_length: int, **task_options) -> TaskData:
  """The train/validation/test sources of task `name`, read from data_dir."""
  accepted = options(name)
  unknown = sorted(set(task_options) - set(accepted))
  if unknown:
    raise ValueError(f"task {name!r} has no option(s) {unknown}; its options are {accepted}")
  return _loader(name)(data_dir, max_length=max_length, **task_options)


__all__ = ["TaskData", "MalformedDataError", "MissingDataError", "load_task", "names", "options"]
