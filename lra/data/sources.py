"""Pieces shared by the task readers: errors, `TaskData`, and random-access sources.

A source has `__len__` and `__getitem__(index) -> dict` of numpy arrays (`inputs` int32 [L], or
`inputs1`/`inputs2` for retrieval, and `targets` int32 []), so `grain.MapDataset.source` takes it.
"""

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

LRA_RELEASE = ("download https://storage.googleapis.com/long-range-arena/lra_release.gz, unpack it "
               "(tar xzf lra_release.gz) and point --config.data_dir at the unpacked lra_release/ "
               "folder (the outer one, the inner lra_release/lra_release/, or the task's own folder "
               "all work)")
RELEASE_DIR = "lra_release"  # the tarball nests the release as lra_release/lra_release/<task folder>


class MissingDataError(FileNotFoundError):
  """A data file or prepared dataset is not there."""


class MalformedDataError(ValueError):
  """A data file does not have the expected format."""


def malformed(path, record, expected: str, found: str, how_to_obtain: str) -> MalformedDataError:
  """An error naming the file, the 1-based line or record number, what was expected and found."""
  return MalformedDataError(f"{path}, {record}: expected {expected}, found {found}. The file may be "
                            f"truncated or not the official one; to get the data, {how_to_obtain}.")


def missing(path, what: str, how_to_obtain: str) -> MissingDataError:
  return MissingDataError(f"{path} does not exist: expected {what} there. To get the data, "
                          f"{how_to_obtain}.")


def tsv_records(f, path, fields: str, how_to_obtain: str, first_line: int = 1):
  """(where, field values) of each non-blank line of a binary TSV file open at `first_line`;
  `fields` names the expected fields, comma-separated, and a line with another count is malformed."""
  count = len(fields.split(","))
  for line_number, line in enumerate(f, start=first_line):
    line = line.rstrip(b"\r\n")
    if not line.strip():
      continue
    values = line.split(b"\t")
    where = f"line {line_number}"
    if len(values) != count:
      raise malformed(path, where, f"{count} tab-separated fields ({fields})",
                      f"{len(values)} fields", how_to_obtain)
    yield where, values


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A task's splits and what the model needs to know about its tokens.

  `splits` maps "train", "validation" and "test" to sources. `has_padding`: token 0 is padding
  (ListOps, text, retrieval); False for the image tasks, where every token is a pixel value and the
  mask is all True. `data`: where the examples came from (results.json "data"): the files read
  (`file_records`), or `generated: true` with the generator's options.
  """
  vocab_size: int
  num_classes: int
  dual: bool
  has_padding: bool
  splits: dict
  data: dict


def find_release_folder(data_dir, folder: str, markers: Iterable[str], what: str) -> str:
  """The LRA release's `folder` (e.g. "listops-1000") under `data_dir`, which may be the outer
  `lra_release/` of the tarball, the inner `lra_release/lra_release/`, or `folder` itself.

  A candidate holds the folder when any of `markers` (paths relative to it) exists there; the reader
  then reports any other missing file. Raises MissingDataError naming every place looked at, or
  ValueError when two candidates both hold the folder.
  """
  candidates = [os.path.join(data_dir, folder), os.path.join(data_dir, RELEASE_DIR, folder), data_dir]
  markers = list(markers)
  found = [c for c in candidates if any(os.path.exists(os.path.join(c, m)) for m in markers)]
  if len({os.path.realpath(c) for c in found}) > 1:
    raise ValueError(f"data_dir={data_dir} holds {what} in more than one place: "
                     f"{', '.join(found)}; point --config.data_dir at the one to use")
  if not found:
    looked = ", ".join(os.path.join(c, markers[0]) for c in candidates)
    raise MissingDataError(f"no {what} under data_dir={data_dir}: looked for {looked}. To get "
                           f"the data, {LRA_RELEASE}.")
  return found[0]


def sha256_file(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def file_records(paths: Iterable) -> list[dict]:
  """[{"path": absolute path, "bytes": size, "sha256": hex digest}] of files read."""
  return [{"path": os.path.abspath(p), "bytes": os.path.getsize(p), "sha256": sha256_file(p)}
          for p in paths]


class Ragged:
  """uint8 sequences of any length stored end to end: sequence i is values[offsets[i]:offsets[i+1]]."""

  def __init__(self, sequences: Sequence[bytes | np.ndarray]):
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    self.offsets = np.concatenate([[0], np.cumsum(lengths)])
    self.values = np.frombuffer(b"".join(bytes(s) for s in sequences), np.uint8)

  def __len__(self):
    return len(self.offsets) - 1

  def padded(self, index: int, max_length: int, shift: int) -> np.ndarray:
    """Sequence `index` + `shift` as int32 [max_length], truncated or padded with 0 at the end."""
    start, stop = self.offsets[index], self.offsets[index + 1]
    out = np.zeros(max_length, np.int32)
    values = self.values[start:min(stop, start + max_length)]
    out[:len(values)] = values.astype(np.int32) + shift
    return out


class SequenceSource:
  """Token sequences held in memory: example i has, for each input name, sequence
  `rows[name][i]` of `sequences` (+ `shift`), padded with 0 to [max_length], and `targets[i]`."""

  def __init__(self, sequences: Ragged, rows: dict[str, np.ndarray], targets: np.ndarray, *,
               max_length: int, shift: int):
    self.sequences, self.rows, self.targets = sequences, rows, np.asarray(targets, np.int32)
    self.max_length, self.shift = max_length, shift

  def __len__(self):
    return len(self.targets)

  def __getitem__(self, index) -> dict:
    example = {name: self.sequences.padded(rows[index], self.max_length, self.shift)
               for name, rows in self.rows.items()}
    example["targets"] = self.targets[index]
    return example


class MapSource:
  """`fn(source[i])` for each i: decodes examples of another source on access."""

  def __init__(self, source, fn: Callable[[dict], dict]):
    self.source, self.fn = source, fn

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index) -> dict:
    return self.fn(self.source[int(index)])


class Subset:
  """The examples `indices` of another source, in that order."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, index) -> dict:
    return self.source[int(self.indices[index])]


VALIDATION_CHOICES = ("holdout", "test")


def check_choice(name: str, value, choices):
  if value not in choices:
    raise ValueError(f"{name}={value!r}; expected one of {tuple(choices)}")


def train_validation(train, test, validation: str) -> tuple:
  """(train, validation) sources for datasets released with train and test splits only.

  "holdout": every 10th training example (indices 0, 10, 20, ... of the source's fixed order) is
  held out for validation and the other 90% train. "test": the LRA protocol, which trains on the
  whole train split and validates on the test split (so model selection sees the test set).
  """
  check_choice("validation", validation, VALIDATION_CHOICES)
  if validation == "test":
    return train, test
  held_out = np.arange(len(train)) % 10 == 0
  return Subset(train, np.flatnonzero(~held_out)), Subset(train, np.flatnonzero(held_out))


def tfds_provenance(source, name: str, data_dir) -> dict:
  """results.json "data" of a tensorflow-datasets source: name, version, and the prepared files."""
  info = getattr(source, "dataset_info", None)
  record = {"tfds": name, "data_dir": os.path.abspath(data_dir),
            "version": str(info.version) if info is not None else None}
  directory = getattr(info, "data_dir", None)
  if directory and os.path.isdir(directory):
    record["files"] = file_records(sorted(os.path.join(directory, f) for f in os.listdir(directory)
                                          if os.path.isfile(os.path.join(directory, f))))
  else:
    record["files"] = None  # e.g. tfds.testing.mock_data, which reads no files
  return record


def tfds_source(name: str, split: str, data_dir):
  """A prepared tensorflow-datasets split as a random-access source (no TensorFlow needed)."""
  import tensorflow_datasets as tfds  # only the tasks that read IMDb or CIFAR-10 need it
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except (NotImplementedError, FileNotFoundError, AssertionError) as error:
    raise MissingDataError(
        f"no prepared tensorflow-datasets `{name}` ({split} split) in array_record format under "
        f"{data_dir} ({error}). Reading needs no TensorFlow, preparing it does: in any environment "
        f"with `pip install tensorflow tensorflow-datasets==4.9.10` run `tfds build {name} "
        f"--file_format=array_record --data_dir={data_dir}` (a dataset built as TFRecord can be "
        f"converted with `tfds convert_format --out_file_format=array_record`).") from error
