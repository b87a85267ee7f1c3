"""Byte-level document matching on the ACL Anthology Network (LRA "retrieval"): do two papers cite
each other? Examples {"inputs1", "inputs2": int32 [max_length] (UTF-8 byte + 1, 0 = padding),
"targets": 0 or 1}.

Files: `new_aan_pairs.{train,eval,test}.tsv` in the release's `tsv_data/` folder, found under
data_dir at any level (`sources.find_release_folder`), no header, tab-separated
label (0/1, possibly written 0.0/1.0), id1, id2, text1, text2. Documents are truncated to max_length
bytes when read and stored once however many pairs share them.
"""

import os

import numpy as np

from lra.data import sources

VOCAB_SIZE = 257  # 256 byte values + padding
SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
               "test": "new_aan_pairs.test.tsv"}
SUBDIR = "tsv_data"
FIELDS = "label, id1, id2, text1, text2"


def find_folder(data_dir) -> str:
  """`<data_dir>/tsv_data`, `<data_dir>/lra_release/tsv_data` or data_dir itself."""
  return sources.find_release_folder(data_dir, SUBDIR, SPLIT_FILES.values(), "AAN pair files")


def split_path(folder, split: str) -> str:
  return os.path.join(folder, SPLIT_FILES[split])


def _label(field: bytes):
  try:
    value = float(field)
  except ValueError:
    return None
  return int(value) if value in (0.0, 1.0) else None


def read_tsv(path, max_length: int) -> tuple[sources.Ragged, np.ndarray, np.ndarray]:
  """(distinct documents truncated to max_length bytes, document rows int64 [N, 2], labels [N])."""
  if not os.path.exists(path):
    raise sources.missing(path, f"an AAN pairs TSV file ({FIELDS})", sources.LRA_RELEASE)
  documents, rows, labels = {}, [], []
  with open(path, "rb") as f:
    for where, fields in sources.tsv_records(f, path, FIELDS, sources.LRA_RELEASE):
      label = _label(fields[0])
      if label is None:
        raise sources.malformed(path, where, "a label 0 or 1 in the first field",
                                repr(fields[0].decode(errors="replace")[:20]), sources.LRA_RELEASE)
      rows.append([documents.setdefault(text[:max_length], len(documents))
                   for text in fields[3:]])
      labels.append(label)
  if not labels:
    raise sources.malformed(path, "line 1", "at least one document pair", "none",
                            sources.LRA_RELEASE)
  return sources.Ragged(list(documents)), np.asarray(rows, np.int64), np.asarray(labels, np.int32)


def load(data_dir, *, max_length: int) -> sources.TaskData:
  """The LRA AAN splits (validation = the eval file), max_length bytes per document."""
  folder = find_folder(data_dir)
  splits = {}
  for split in SPLIT_FILES:
    documents, rows, labels = read_tsv(split_path(folder, split), max_length)
    splits[split] = sources.SequenceSource(
        documents, {"inputs1": rows[:, 0], "inputs2": rows[:, 1]}, labels,
        max_length=max_length, shift=1)
  data = {"files": sources.file_records(split_path(folder, split) for split in SPLIT_FILES)}
  return sources.TaskData(vocab_size=VOCAB_SIZE, num_classes=2, dual=True, has_padding=True,
                          splits=splits, data=data)
