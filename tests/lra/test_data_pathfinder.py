"""Pathfinder / Path-X: the release's text metadata, PNGs decoded lazily, a deterministic split."""

import logging

import numpy as np
import pytest
from PIL import Image

from fixtures import write_pathfinder
from lra import data


def _ids_and_labels(source):
  return [(int(source[i]["inputs"][0]), int(source[i]["targets"])) for i in range(len(source))]


def test_reads_images_lazily_and_skips_the_empty_one(tmp_path, caplog):
  root = write_pathfinder(tmp_path)
  with caplog.at_level(logging.WARNING):
    task = data.load_task("pathfinder", data_dir=str(tmp_path), max_length=1024)
  assert "skipped 1 empty image" in caplog.text and "imgs/1/sample_3.png" in caplog.text
  assert (task.vocab_size, task.num_classes, task.dual, task.has_padding) == (256, 2, False, False)
  sizes = [len(task.splits[s]) for s in ("train", "validation", "test")]
  assert sizes == [31, 4, 4]  # 39 images cut 80/10/10
  seen = sorted(i for s in task.splits.values() for i, _ in _ids_and_labels(s))
  assert seen == [i for i in range(40) if i != 3]
  for source in task.splits.values():
    assert all(label == int(i % 3 == 0) for i, label in _ids_and_labels(source))
  example = task.splits["test"][0]
  assert example["inputs"].shape == (1024,) and example["inputs"].dtype == np.int32
  image_id = int(example["inputs"][0])
  expected = np.asarray(Image.open(root / f"imgs/{image_id % 2}/sample_{image_id}.png"))
  assert example["inputs"].tolist() == expected.reshape(-1).tolist()


def test_split_depends_only_on_the_image_paths(tmp_path):
  write_pathfinder(tmp_path / "a", metadata_files=2)
  write_pathfinder(tmp_path / "b", metadata_files=5)
  splits = [data.load_task("pathfinder", data_dir=str(tmp_path / name), max_length=1024).splits
            for name in "ab"]
  for split in ("train", "validation", "test"):
    assert _ids_and_labels(splits[0][split]) == _ids_and_labels(splits[1][split])
  train_ids = [i for i, _ in _ids_and_labels(splits[0]["train"])]
  assert train_ids != sorted(train_ids)  # hash order, not file order


def test_path_x(tmp_path):
  write_pathfinder(tmp_path, 128, num_images=10, empty=None)
  task = data.load_task("pathx", data_dir=str(tmp_path), max_length=128 * 128)
  assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [8, 1, 1]
  assert task.splits["validation"][0]["inputs"].shape == (16384,)
  with pytest.raises(ValueError, match="16384 tokens"):
    data.load_task("pathx", data_dir=str(tmp_path), max_length=1024)


@pytest.mark.parametrize("line, expected", [
    ("imgs/0 sample_0.png 0\n", "3 fields"),
    ("imgs/0 sample_0.png 0 2\n", "label 0 or 1"),
])
def test_malformed_metadata_names_the_file_and_line(tmp_path, line, expected):
  root = write_pathfinder(tmp_path, num_images=4)
  with open(root / "metadata" / "1.npy", "a") as f:
    f.write(line)
  with pytest.raises(data.MalformedDataError) as error:
    data.load_task("pathfinder", data_dir=str(tmp_path), max_length=1024)
  message = str(error.value)
  assert "metadata/1.npy" in message and "line 3" in message and expected in message
  assert "lra_release.gz" in message


def test_missing_files(tmp_path):
  with pytest.raises(data.MissingDataError, match=r"pathfinder32/curv_contour_length_14/metadata"):
    data.load_task("pathfinder", data_dir=str(tmp_path), max_length=1024)
  root = write_pathfinder(tmp_path, num_images=4)
  (root / "imgs/1/sample_1.png").unlink()
  with pytest.raises(data.MissingDataError, match=r"imgs/1/sample_1\.png.*metadata/1\.npy, line 1"):
    data.load_task("pathfinder", data_dir=str(tmp_path), max_length=1024)


def test_unreadable_image_is_reported_when_read(tmp_path):
  root = write_pathfinder(tmp_path, num_images=10, empty=None)
  (root / "imgs/0/sample_4.png").write_bytes(b"not a png")
  task = data.load_task("pathfinder", data_dir=str(tmp_path), max_length=1024)
  source = next(s for s in task.splits.values() if "imgs/0/sample_4.png" in s.paths)
  with pytest.raises(data.MalformedDataError, match=r"imgs/0/sample_4\.png: cannot decode"):
    source[source.paths.index("imgs/0/sample_4.png")]
