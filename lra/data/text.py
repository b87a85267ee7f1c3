"""Byte-level IMDb sentiment (LRA "text"): token = UTF-8 byte + 1, 0 = padding, [max_length].

Two readers of the same data (25K train and 25K test reviews, label 0 = negative, 1 = positive):
- source="tfds": tensorflow-datasets `imdb_reviews` prepared in array_record format under data_dir,
  read with `tfds.data_source` (no TensorFlow needed to read).
- source="aclimdb": the original archive unpacked in data_dir, `aclImdb/{train,test}/{neg,pos}/*.txt`.

IMDb has no validation split: see `sources.train_validation` for the `validation` option.
"""

import hashlib
import os

import numpy as np

from lra.data import sources

VOCAB_SIZE = 257  # 256 byte values + padding
ACLIMDB_HOW_TO_OBTAIN = ("download http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz "
                         "and unpack it in data_dir (tar xzf aclImdb_v1.tar.gz)")
LABELS = ("neg", "pos")


def encode(text: str | bytes, max_length: int) -> np.ndarray:
  """UTF-8 bytes + 1 as int32 [max_length], truncated or padded with 0 at the end."""
  data = text.encode() if isinstance(text, str) else bytes(text)
  data = data[:max_length]
  out = np.zeros(max_length, np.int32)
  out[:len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + 1
  return out


def read_aclimdb(data_dir, split: str) -> tuple[sources.Ragged, np.ndarray]:
  """(review bytes, labels int32 [N]) of `aclImdb/<split>/{neg,pos}/*.txt`, in sorted file order."""
  texts, labels = [], []
  for label, name in enumerate(LABELS):
    directory = os.path.join(data_dir, "aclImdb", split, name)
    if not os.path.isdir(directory):
      raise sources.missing(directory, "a folder of IMDb reviews (*.txt)", ACLIMDB_HOW_TO_OBTAIN)
    files = sorted(f for f in os.listdir(directory) if f.endswith(".txt"))
    if not files:
      raise sources.malformed(directory, "file 1", "IMDb reviews as *.txt files", "no *.txt file",
                              ACLIMDB_HOW_TO_OBTAIN)
    for filename in files:
      with open(os.path.join(directory, filename), "rb") as f:
        texts.append(f.read())
      labels.append(label)
  return sources.Ragged(texts), np.asarray(labels, np.int32)


def _aclimdb_source(data_dir, split: str, max_length: int) -> sources.SequenceSource:
  texts, labels = read_aclimdb(data_dir, split)
  return sources.SequenceSource(texts, {"inputs": np.arange(len(labels))}, labels,
                                max_length=max_length, shift=1)


def _aclimdb_provenance(data_dir, splits: dict) -> dict:
  """The folder, the review count per split, and a SHA-256 over every review's bytes and length in
  the order read (50K files are summarised, not listed)."""
  digest = hashlib.sha256()
  for source in splits.values():
    digest.update(source.sequences.offsets.astype("<i8").tobytes())
    digest.update(source.sequences.values.tobytes())
  return {"aclimdb": os.path.abspath(os.path.join(data_dir, "aclImdb")),
          "reviews": {name: len(source) for name, source in splits.items()},
          "bytes": int(sum(len(source.sequences.values) for source in splits.values())),
          "sha256": digest.hexdigest()}


def _tfds_source(data_dir, split: str, max_length: int) -> sources.MapSource:
  def decode(record):
    return {"inputs": encode(record["text"], max_length),
            "targets": np.asarray(record["label"], np.int32)}
  return sources.MapSource(sources.tfds_source("imdb_reviews", split, data_dir), decode)


def load(data_dir, *, max_length: int, source: str = "tfds",
         validation: str = "holdout") -> sources.TaskData:
  """IMDb splits from `source` ("tfds" or "aclimdb"); `validation`: "holdout" or "test"."""
  readers = {"tfds": _tfds_source, "aclimdb": _aclimdb_source}
  sources.check_choice("source", source, readers)
  sources.check_choice("validation", validation, sources.VALIDATION_CHOICES)
  train, test = (readers[source](data_dir, split, max_length) for split in ("train", "test"))
  if source == "tfds":
    data = sources.tfds_provenance(train.source, "imdb_reviews", data_dir)
  else:
    data = _aclimdb_provenance(data_dir, {"train": train, "test": test})
  train, val = sources.train_validation(train, test, validation)
  return sources.TaskData(vocab_size=VOCAB_SIZE, num_classes=2, dual=False, has_padding=True,
                          splits={"train": train, "validation": val, "test": test}, data=data)
