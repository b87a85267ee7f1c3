"""Byte-level IMDb from an aclImdb folder and from tensorflow-datasets (mocked, without TensorFlow)."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fixtures import mock_tfds, write_aclimdb
from lra import data
from lra.data import text


def test_encode_is_utf8_bytes_plus_one_padded_with_zero():
  assert text.encode("é!", 5).tolist() == [0xC3 + 1, 0xA9 + 1, ord("!") + 1, 0, 0]
  assert text.encode(b"\xff" * 4, 3).tolist() == [256] * 3
  assert text.encode("", 2).dtype == np.int32


def test_aclimdb_folder_with_holdout_validation(tmp_path):
  write_aclimdb(tmp_path)
  task = data.load_task("text", data_dir=str(tmp_path), max_length=40, source="aclimdb")
  assert (task.vocab_size, task.num_classes, task.dual, task.has_padding) == (257, 2, False, True)
  train, val, test = (task.splits[s] for s in ("train", "validation", "test"))
  assert (len(train), len(val), len(test)) == (18, 2, 20)
  decoded = []
  for source in (train, val):
    for i in range(len(source)):
      example = source[i]
      tokens = example["inputs"][example["inputs"] > 0] - 1
      decoded.append((bytes(tokens.astype(np.uint8)).decode(), int(example["targets"])))
  assert len(set(decoded)) == 20  # train and validation split the training reviews
  for review, label in decoded:
    assert review.startswith("train " + ("neg", "pos")[label])
    assert review.endswith("caf\u00e9")
  assert test[0]["inputs"].shape == (40,) and test[0]["inputs"][-1] == 0

  lra = data.load_task("text", data_dir=str(tmp_path), max_length=8, source="aclimdb",
                       validation="test")
  assert len(lra.splits["train"]) == 20 and lra.splits["validation"] is lra.splits["test"]
  assert lra.splits["train"][0]["inputs"].tolist() == list(np.frombuffer(b"train ne", np.uint8)
                                                           + 1)


def test_missing_aclimdb_folder(tmp_path):
  with pytest.raises(data.MissingDataError, match=r"aclImdb/train/neg.*aclImdb_v1\.tar\.gz"):
    data.load_task("text", data_dir=str(tmp_path), max_length=8, source="aclimdb")


def test_bad_options():
  with pytest.raises(ValueError, match="validation='val'"):
    text.load("/nonexistent", max_length=8, validation="val")
  with pytest.raises(ValueError, match="source='csv'"):
    text.load("/nonexistent", max_length=8, source="csv")


def test_tfds_source_without_tensorflow(tmp_path):
  with mock_tfds(num_examples=30):
    task = data.load_task("text", data_dir=str(tmp_path), max_length=64)
    raw = tfds.data_source("imdb_reviews", split="train", data_dir=str(tmp_path))
    assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [27, 3, 30]
    for index, source_index in ((0, 1), (5, 6), (9, 11)):  # train skips 0, 10, 20
      example, record = task.splits["train"][index], raw[source_index]
      assert example["inputs"].tolist() == text.encode(record["text"], 64).tolist()
      assert int(example["targets"]) == int(record["label"])
    assert task.splits["validation"][1]["inputs"].tolist() == text.encode(raw[10]["text"],
                                                                          64).tolist()
  assert "tensorflow" not in sys.modules


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(data.MissingDataError) as error:
    data.load_task("text", data_dir=str(tmp_path), max_length=8)
  message = str(error.value)
  assert "tfds build imdb_reviews" in message and "--file_format=array_record" in message
  assert str(tmp_path) in message
