"""AAN retrieval: the LRA pairs TSV, two byte-level documents per example."""

import numpy as np
import pytest

from fixtures import AAN_ROWS, write_aan
from lra import data
from lra.data import pipeline, retrieval


def _decode(tokens):
  return bytes((tokens[tokens > 0] - 1).astype(np.uint8)).decode(errors="replace")


def test_reads_pairs_of_documents(tmp_path):
  write_aan(tmp_path)
  task = data.load_task("retrieval", data_dir=str(tmp_path), max_length=16)
  assert (task.vocab_size, task.num_classes, task.dual, task.has_padding) == (257, 2, True, True)
  test = task.splits["test"]
  assert len(test) == 3 and [int(test[i]["targets"]) for i in range(3)] == [1, 0, 0]
  example = test[1]
  assert set(example) == {"inputs1", "inputs2", "targets"}
  assert example["inputs1"].shape == example["inputs2"].shape == (16,)
  assert _decode(example["inputs1"]) == "Citing paper \"A\""  # truncated to 16 bytes
  assert example["inputs2"].tolist() == [b + 1 for b in "Unrelated caf\u00e9.".encode()]  # 16 bytes
  assert test[0]["inputs2"].tolist()[-3:] == [ord(".") + 1, 0, 0]  # "Cited paper B." + padding
  assert len(test.sequences) == 3  # each distinct document stored once
  batch = next(pipeline.make_batches(test, global_batch_size=4, seed=0, shuffle=False,
                                     repeat=False, drop_remainder=False))
  assert batch["inputs1"].shape == batch["inputs2"].shape == (4, 16)
  assert batch["weights"].tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize("row, expected", [
    (("1", "a", "b", "only four"), "5 tab-separated fields"),
    (("yes", "a", "b", "x", "y"), "label 0 or 1"),
])
def test_malformed_lines_name_the_file_and_line(tmp_path, row, expected):
  write_aan(tmp_path, AAN_ROWS[:1] + [row])
  with pytest.raises(data.MalformedDataError) as error:
    retrieval.load(tmp_path, max_length=8)
  message = str(error.value)
  assert "new_aan_pairs.test.tsv" in message and "line 2" in message and expected in message
  assert "lra_release.gz" in message


def test_missing_file(tmp_path):
  with pytest.raises(data.MissingDataError,
                     match=r"tsv_data/new_aan_pairs\.train\.tsv.*lra_release"):
    retrieval.load(tmp_path, max_length=8)
