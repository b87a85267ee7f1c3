"""Grayscale CIFAR-10 from tensorflow-datasets (mocked): pixel tokens, no padding."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fixtures import mock_tfds
from lra import data
from lra.data import image


def test_grayscale_uses_luminance_weights_and_rounds():
  pixels = np.asarray([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0],
                        [10, 20, 30]]], np.uint8)
  # 76.2, 149.7, 29.1, 254.97, 0, 18.15
  assert image.grayscale(pixels).tolist() == [[76, 150, 29, 255, 0, 18]]


def test_cifar10_from_tfds(tmp_path):
  with mock_tfds(num_examples=20):
    task = data.load_task("image", data_dir=str(tmp_path), max_length=1024)
    raw = tfds.data_source("cifar10", split="test", data_dir=str(tmp_path))
    assert (task.vocab_size, task.num_classes, task.dual, task.has_padding) == (256, 10, False,
                                                                                False)
    assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [18, 2, 20]
    example = task.splits["test"][3]
    assert example["inputs"].shape == (1024,) and example["inputs"].dtype == np.int32
    assert example["inputs"].tolist() == image.grayscale(raw[3]["image"]).reshape(-1).tolist()
    assert int(example["targets"]) == int(raw[3]["label"])


def test_image_length_is_fixed():
  with pytest.raises(ValueError, match="1024 tokens"):
    data.load_task("image", data_dir="/nonexistent", max_length=1000)


def test_unprepared_cifar10(tmp_path):
  with pytest.raises(data.MissingDataError, match="tfds build cifar10"):
    data.load_task("image", data_dir=str(tmp_path), max_length=1024)
