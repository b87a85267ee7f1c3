"""ListOps: fixed vocabulary, the official TSV format, the generator against the evaluator."""

import json

import numpy as np
import pytest

from fixtures import LISTOPS_EXPRESSIONS as EXPRESSIONS
from fixtures import write_listops, write_listops_tsv
from lra import data
from lra.data import listops


def test_vocabulary_is_fixed_in_code():
  assert listops.VOCAB == ("<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[MIN",
                           "[MAX", "[MED", "[SM", "]", "(", ")")
  assert listops.tokenize("[MAX 2 9 ]").tolist() == [12, 3, 10, 15]
  assert listops.tokenize("( ( [SM 0 ) ] )", parentheses=True).tolist() == [16, 16, 14, 1, 17, 15,
                                                                            17]
  with pytest.raises(ValueError, match="'MAX'"):
    listops.tokenize("[SM 1 MAX ]")


def test_reads_the_official_format(tmp_path):
  write_listops(tmp_path)
  task = data.load_task("listops", data_dir=str(tmp_path), max_length=12)
  assert (task.vocab_size, task.num_classes, task.dual, task.has_padding) == (18, 10, False, True)
  first, second = task.splits["validation"][0], task.splits["test"][1]
  # Parentheses dropped, the rest kept in order; padded with 0 to max_length.
  assert first["inputs"].tolist() == [12, 3, 10, 11, 5, 8, 15, 1, 15, 0, 0, 0]
  assert second["inputs"].tolist() == [14, 10, 9, 15] + [0] * 8
  assert first["inputs"].dtype == np.int32 and first["targets"].dtype == np.int32
  assert [int(task.splits["train"][i]["targets"]) for i in range(2)] == [9, 7]

  kept = data.load_task("listops", data_dir=str(tmp_path), max_length=8, parentheses=True)
  assert kept.splits["train"][1]["inputs"].tolist() == [16, 16, 16, 14, 10, 17, 9, 17]


def test_evaluator():
  assert listops.evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]") == 5
  assert listops.evaluate("[MED 1 2 ]") == 1  # int(np.median([1, 2])) = int(1.5)
  assert listops.evaluate("[MED 3 8 0 9 ]") == 5
  assert listops.evaluate("[SM 9 8 [SM 5 5 ] ]") == 7
  for source, target in EXPRESSIONS:
    assert listops.evaluate(source) == target
  with pytest.raises(ValueError, match="unbalanced"):
    listops.evaluate("[MAX 1 2")


def _structure(source):
  """(max depth of operators + 1, argument counts per operator, length without parentheses)."""
  tokens = [t for t in source.split() if t not in ("(", ")")]
  depth, max_depth, counts, stack = 1, 1, [], []
  for token in tokens:
    if token in listops.OPERATORS:
      stack.append(0)
      depth += 1
      max_depth = max(max_depth, depth)
    elif token == "]":
      counts.append(stack.pop())
      depth -= 1
      if stack:
        stack[-1] += 1
    else:
      stack[-1] += 1
  return max_depth, counts, len(tokens)


def _lines(path):
  lines = path.read_text().splitlines()
  assert lines[0] == "Source\tTarget"
  return [line.split("\t") for line in lines[1:]]


def test_generator_follows_the_lra_distribution(tmp_path):
  listops.generate(tmp_path, num_train=20, num_val=5, num_test=5, seed=3, min_length=500,
                   max_length=2000)
  rows = [row for name in listops.SPLIT_FILES.values()
          for row in _lines(tmp_path / "listops-1000" / name)]
  assert len(rows) == 30 and len({source for source, _ in rows}) == 30
  for source, target in rows:
    assert listops.evaluate(source) == int(target)
    depth, counts, length = _structure(source)
    assert 500 < length < 2000 and depth <= 10 and all(2 <= n <= 10 for n in counts)
    assert source.split().count("(") == source.split().count(")") == sum(n + 1 for n in counts)
  task = listops.load(tmp_path, max_length=2000)
  assert all(np.count_nonzero(task.splits["train"][i]["inputs"]) == _structure(rows[i][0])[2]
             for i in range(20))


def test_generator_is_seeded_and_its_labels_cover_all_digits(tmp_path):
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    listops.generate(tmp_path / name, num_train=300, num_val=1, num_test=1, seed=seed,
                     min_length=20, max_length=100)
  train = {name: (tmp_path / name / "listops-1000" / "basic_train.tsv").read_bytes()
           for name in "abc"}
  assert train["a"] == train["b"] != train["c"]
  targets = [int(target) for _, target in _lines(tmp_path / "a" / "listops-1000" /
                                                 "basic_train.tsv")]
  assert set(targets) == set(range(10))
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["listops-1000"]
  assert json.loads((tmp_path / "a" / "listops-1000" / "generator.json").read_text())["seed"] == 0


def test_loading_never_generates(tmp_path):
  with pytest.raises(data.MissingDataError) as error:
    data.load_task("listops", data_dir=str(tmp_path), max_length=16)
  message = str(error.value)
  assert "basic_train.tsv" in message and "lra_release.gz" in message
  assert list(tmp_path.iterdir()) == []
  write_listops_tsv(tmp_path / "listops-1000" / "basic_val.tsv", EXPRESSIONS)
  with pytest.raises(data.MissingDataError, match="basic_train.tsv does not exist"):
    data.load_task("listops", data_dir=str(tmp_path), max_length=16)


@pytest.mark.parametrize("header, rows, where, expected", [
    ("Source Target", EXPRESSIONS, "line 1", "header"),
    ("Source\tTarget", [("[MAX 1 2 ]", 2), ("[MAX 1 [FIRST 2 ] ]", 1)], "line 3", "'[FIRST'"),
    ("Source\tTarget", [("[MAX 1 2 ]", 12)], "line 2", "Target digit"),
    ("Source\tTarget", [("[MAX 1 2 ]\t2", 2)], "line 2", "2 tab-separated fields"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, header, rows, where, expected):
  write_listops(tmp_path)
  path = tmp_path / "listops-1000" / "basic_test.tsv"
  write_listops_tsv(path, rows, header)
  with pytest.raises(data.MalformedDataError) as error:
    listops.load(tmp_path, max_length=16)
  message = str(error.value)
  assert str(path) in message and where in message and expected in message
  assert "lra_release.gz" in message


def test_long_expressions_are_truncated(tmp_path):
  write_listops(tmp_path)
  task = listops.load(tmp_path, max_length=3)
  assert task.splits["train"][0]["inputs"].tolist() == [12, 3, 10]
