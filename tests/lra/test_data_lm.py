"""LM data: corpora read from tiny files of the real formats, and batches of contiguous segments
(every evaluated byte predicted once, stateful rows contiguous, exact resumption, process
shards)."""

import hashlib
import json
import math
import platform
import zipfile

import numpy as np
import pytest

from lra import data
from lra.data import lm

# Byte i of a stream of at most 256 bytes has value i, so a batch's values are stream positions.
POSITIONS = np.arange(250, dtype=np.uint8)


def _write(path, content: bytes):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(content)
  return path


def test_split_bounds_are_the_standard_90_5_5_and_cover_the_corpus():
  assert lm.split_bounds(100_000_000) == {"train": (0, 90_000_000),
                                          "validation": (90_000_000, 95_000_000),
                                          "test": (95_000_000, 100_000_000)}
  assert lm.split_bounds(45) == {"train": (0, 40), "validation": (40, 42), "test": (42, 45)}


def test_files_are_concatenated_in_order_with_provenance(tmp_path):
  first = _write(tmp_path / "a.txt", "héllo wörld\n".encode() * 5)
  second = _write(tmp_path / "b.txt", b"second file\n" * 5)
  task = data.load_task("lm", data_dir="unused", max_length=8, source="files",
                        files=f"{second}, {first}")
  content = second.read_bytes() + first.read_bytes()
  bounds = lm.split_bounds(len(content))
  assert {split: len(stream) for split, stream in task.splits.items()} == {
      split: stop - start for split, (start, stop) in bounds.items()}
  assert b"".join(task.splits[s].tobytes() for s in ("train", "validation", "test")) == content
  assert task.splits["train"].dtype == np.uint8 and task.vocab_size == 256
  assert task.data["source"] == "files" and task.data["bytes"] == len(content)
  assert task.data["sha256"] == hashlib.sha256(content).hexdigest()
  assert [f["path"] for f in task.data["files"]] == [str(second), str(first)]
  assert task.data["files"][1] == {"path": str(first), "bytes": len(first.read_bytes()),
                                   "sha256": hashlib.sha256(first.read_bytes()).hexdigest()}
  assert task.data["splits"]["validation"] == list(bounds["validation"])
  json.dumps(task.data)


def test_files_must_exist_be_utf8_and_hold_enough_bytes(tmp_path):
  good = _write(tmp_path / "good.txt", b"x" * 100)
  with pytest.raises(data.MissingDataError, match=r"nope\.txt does not exist.*UTF-8 text file"):
    lm.read_files([str(good), str(tmp_path / "nope.txt")])
  _write(tmp_path / "latin1.txt", "caf".encode() + "é au lait".encode("latin-1"))
  with pytest.raises(data.MalformedDataError, match=r"latin1\.txt, byte offset 3: expected UTF-8"):
    lm.read_files(f"{good},{tmp_path / 'latin1.txt'}")
  with pytest.raises(ValueError, match="39 bytes: too few"):
    lm.read_files([str(_write(tmp_path / "short.txt", b"y" * 39))])
  with pytest.raises(ValueError, match="expected comma-separated paths"):
    lm.read_files(" , ")


@pytest.fixture
def small_standard(monkeypatch):
  monkeypatch.setattr(lm, "STANDARD_SIZE", 1000)
  return np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()


def _check_standard_split(task, content):
  assert {s: x.tobytes() for s, x in task.splits.items()} == {
      "train": content[:900], "validation": content[900:950], "test": content[950:]}
  assert task.data["sha256"] == hashlib.sha256(content).hexdigest()
  assert task.data["bytes"] == 1000


def test_enwik8_raw_is_memory_mapped_and_split_90_5_5(tmp_path, small_standard):
  path = _write(tmp_path / "enwik8", small_standard)
  task = data.load_task("lm", data_dir=str(tmp_path), max_length=16, source="enwik8")
  _check_standard_split(task, small_standard)
  assert isinstance(task.splits["train"], np.memmap)
  assert task.data["source"] == "enwik8" and task.data["path"] == str(path)


def test_enwik8_zip_gives_the_same_corpus(tmp_path, small_standard):
  with zipfile.ZipFile(tmp_path / "enwik8.zip", "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("enwik8", small_standard)
  task = data.load_task("lm", data_dir=str(tmp_path), max_length=16, source="enwik8")
  _check_standard_split(task, small_standard)
  assert task.data["path"] == str(tmp_path / "enwik8.zip")


def test_enwik8_errors_name_the_file_the_size_and_where_to_get_it(tmp_path, small_standard):
  with pytest.raises(data.MissingDataError, match=r"enwik8 does not exist.*enwik8\.zip.*"
                     r"http://mattmahoney\.net/dc/enwik8\.zip"):
    lm.read_enwik8(tmp_path)
  _write(tmp_path / "enwik8", small_standard[:999])
  with pytest.raises(data.MalformedDataError, match=r"enwik8, file size: expected 1,000 bytes, "
                     r"found 999 bytes.*mattmahoney\.net/dc/enwik8\.zip"):
    lm.read_enwik8(tmp_path)
  (tmp_path / "enwik8").unlink()
  _write(tmp_path / "enwik8.zip", b"not a zip")
  with pytest.raises(data.MalformedDataError, match=r"enwik8\.zip, header: expected a zip"):
    lm.read_enwik8(tmp_path)
  with zipfile.ZipFile(tmp_path / "enwik8.zip", "w") as zf:
    zf.writestr("other", small_standard)
  with pytest.raises(data.MalformedDataError, match=r"holding `enwik8`, found members \['other'\]"):
    lm.read_enwik8(tmp_path)
  with zipfile.ZipFile(tmp_path / "enwik8.zip", "w") as zf:
    zf.writestr("enwik8", small_standard * 2)
  with pytest.raises(data.MalformedDataError, match="member enwik8: expected 1,000 bytes, found "
                     "2,000"):
    lm.read_enwik8(tmp_path)


def test_text8_is_checked_for_its_alphabet_and_size(tmp_path, small_standard):
  words = np.frombuffer(lm.TEXT8_ALPHABET, np.uint8)
  content = np.random.default_rng(1).choice(words, 1000).tobytes()
  _write(tmp_path / "text8", content)
  _check_standard_split(data.load_task("lm", data_dir=str(tmp_path), max_length=16,
                                       source="text8"), content)
  _write(tmp_path / "text8", content[:500] + b"A" + content[501:])
  with pytest.raises(data.MalformedDataError, match=r"text8, byte offset 500: expected only "
                     r"lowercase a-z and spaces, found byte 65 \(b'A'\).*text8\.zip"):
    lm.read_text8(tmp_path)
  _write(tmp_path / "text8", content + b" ")
  with pytest.raises(data.MalformedDataError, match="expected 1,000 bytes, found 1,001 bytes"):
    lm.read_text8(tmp_path)


def _fake_stdlib(root):
  files = {"os.py": b"import sys\n", "json/__init__.py": b"# json\n", "json/decoder.py": b"d = 1\n",
           "asyncio/base.py": b"async def f(): pass\n", "README.txt": b"not python\n",
           "site-packages/numpy/__init__.py": b"# installed\n", "test/test_os.py": b"# test\n",
           "idlelib/idle_test/t.py": b"# test\n", "lib2to3/tests/data.py": b"# test\n",
           "json/__pycache__/x.py": b"# cache\n", "config-3.11-x86_64-linux-gnu/python-config.py":
           b"# build\n", "_sysconfigdata__linux.py": b"build = {}\n", "zipfile.py": b"z = 0\n"}
  for name, content in files.items():
    _write(root / name, content * 10)
  return ["asyncio/base.py", "json/__init__.py", "json/decoder.py", "os.py", "zipfile.py"]


def test_stdlib_reads_the_sorted_py_sources_outside_packages_and_tests(tmp_path):
  expected = _fake_stdlib(tmp_path)
  assert lm.stdlib_files(tmp_path) == expected
  corpus = lm.read_stdlib(tmp_path)
  content = b"".join((tmp_path / name).read_bytes() for name in expected)
  assert b"".join(corpus.splits[s].tobytes() for s in ("train", "validation", "test")) == content
  assert corpus.data == {"source": "stdlib", "python_version": platform.python_version(),
                         "python_implementation": "cpython", "stdlib_dir": str(tmp_path),
                         "num_files": 5, "bytes": len(content),
                         "sha256": hashlib.sha256(content).hexdigest(),
                         "splits": {s: list(b) for s, b in lm.split_bounds(len(content)).items()}}
  with pytest.raises(data.MissingDataError, match="standard library"):
    lm.read_stdlib(tmp_path / "idlelib")  # no .py file outside its test folder


def test_the_default_corpus_is_this_pythons_stdlib_and_deterministic():
  first = data.load_task("lm", data_dir="unused", max_length=64)
  second = lm.read_corpus("stdlib")
  assert first.data == second.data and first.data["source"] == "stdlib"
  assert first.data["python_version"] == platform.python_version()
  assert first.data["num_files"] > 100 and first.data["bytes"] > 1_000_000
  assert all(np.array_equal(first.splits[s], second.splits[s]) for s in first.splits)
  assert b"def " in first.splits["train"][:100_000].tobytes()


def test_source_options_are_checked():
  with pytest.raises(ValueError, match=r"source='wiki'; expected one of \('stdlib'"):
    data.load_task("lm", data_dir="x", max_length=8, source="wiki")
  with pytest.raises(ValueError, match="read only with source='files'"):
    data.load_task("lm", data_dir="x", max_length=8, files="a.txt")
  with pytest.raises(ValueError, match="reads <data_dir>/enwik8"):
    lm.read_corpus("enwik8", data_dir="")
  with pytest.raises(ValueError, match=r"\['source', 'files', 'stateful', 'stream_segments', "
                                       r"'stream_sets', 'pack_documents'\]"):
    data.load_task("lm", data_dir="x", max_length=8, vocab=3)
  with pytest.raises(ValueError, match="max_length=0"):
    data.load_task("lm", data_dir="x", max_length=0)


def test_unigram_bits_per_byte_of_the_evaluated_bytes():
  train = np.frombuffer(b"ab" * 50, np.uint8)
  stream = np.frombuffer(b"zab", np.uint8)  # the first byte is context only
  assert lm.unigram_bits_per_byte(train, stream) == pytest.approx(-math.log2(51 / 356))


def _batches(mode, stream=POSITIONS, batch=4, length=8, seed=0, **kwargs):
  return lm.make_lm_batches(stream, global_batch_size=batch, segment_length=length, mode=mode,
                            seed=seed, **kwargs)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_random_segments_are_contiguous_shifted_by_one_and_seeded():
  batches = _take(_batches("random"), 20)
  for batch in batches:
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "inputs": ((4, 8), np.int32), "targets": ((4, 8), np.int32),
        "weights": ((4, 8), np.float32), "reset": ((4,), bool)}
    assert np.all(batch["targets"] == batch["inputs"] + 1)
    assert np.all(np.diff(batch["inputs"], axis=1) == 1)
    assert np.all(batch["weights"] == 1) and np.all(batch["reset"])
  starts = np.concatenate([b["inputs"][:, 0] for b in batches])
  assert starts.min() >= 0 and starts.max() <= 250 - 9 and len(set(starts.tolist())) > 40
  # A 12-byte stream has 4 segments of 8 + 1 bytes: starts 0 to 3, each drawn.
  short = np.concatenate([b["inputs"][:, 0] for b in _take(_batches("random", POSITIONS[:12]), 20)])
  assert set(short.tolist()) == {0, 1, 2, 3}
  assert _equal(batches[3], _take(_batches("random"), 4)[3])
  assert not _equal(batches[0], _take(_batches("random", seed=1), 1)[0])


def test_stateful_rows_continue_their_text_and_reset_at_each_cycle():
  # 249 targets over 4 rows of 8-byte segments: 7 segments per row, 25 bytes left over.
  iterator = _batches("stateful")
  assert iterator.num_batches is None and iterator.segments_per_row == 7
  batches = _take(iterator, 21)
  for t, batch in enumerate(batches):
    assert np.all(batch["weights"] == 1) and np.all(batch["targets"] == batch["inputs"] + 1)
    assert batch["reset"].tolist() == [t % 7 == 0] * 4
    if t % 7:
      assert np.array_equal(batch["inputs"][:, 0], batches[t - 1]["targets"][:, -1])
  for cycle in range(3):
    rows = np.concatenate([b["inputs"] for b in batches[7 * cycle:7 * cycle + 7]], axis=1)
    assert np.all(np.diff(rows, axis=1) == 1)  # each row: 56 consecutive bytes
    assert np.all(np.diff(rows[:, 0]) == 56)  # rows follow each other
    assert 0 <= rows[0, 0] <= 25 and rows[-1, -1] + 1 <= 249
  assert len({int(b["inputs"][0, 0]) for b in batches[::7]}) > 1  # cycles start at other offsets


def test_stateful_streams_of_a_few_segments_jump_with_a_reset():
  iterator = _batches("stateful", stream_segments=3)
  batches = _take(iterator, 12)
  starts = set()
  for t, batch in enumerate(batches):
    assert np.all(batch["weights"] == 1) and np.all(batch["targets"] == batch["inputs"] + 1)
    assert batch["reset"].tolist() == [t % 3 == 0] * 4
    if t % 3:
      assert np.array_equal(batch["inputs"][:, 0], batches[t - 1]["targets"][:, -1])
    else:
      starts.update(batch["inputs"][:, 0].tolist())
    assert batch["inputs"].max() + 1 <= 249
  assert len(starts) > 8  # rows start anywhere, independently, at every jump
  again = _batches("stateful", stream_segments=3)
  again.set_state(iterator.get_state())
  assert np.array_equal(next(again)["inputs"], next(iterator)["inputs"])
  with pytest.raises(ValueError, match="stream_segments=2; expected 0, or a positive number"):
    _batches("random", stream_segments=2)


@pytest.mark.parametrize("stream_segments", [0, 3])
def test_sets_of_streams_take_turns_each_continuing_its_own_text(stream_segments):
  iterator = _batches("stateful", stream_segments=stream_segments, stream_sets=2)
  period = stream_segments or iterator.segments_per_row
  assert period == 3  # contiguous: 249 targets over 2 x 4 rows of 8-byte segments
  batches = _take(iterator, 18)
  for t, batch in enumerate(batches):
    own = t // 2  # the batch's index within its set (t % 2)
    assert np.all(batch["targets"] == batch["inputs"] + 1)
    assert batch["reset"].tolist() == [own % period == 0] * 4
    if own % period:  # the set's previous batch, two steps back, is continued
      assert np.array_equal(batch["inputs"][:, 0], batches[t - 2]["targets"][:, -1])
    if t:  # the previous batch, of the other set, is other text
      assert not np.array_equal(batch["inputs"][:, 0], batches[t - 1]["targets"][:, -1])
  if not stream_segments:  # the 8 streams of one cycle: 24 consecutive bytes each, in order
    streams = [np.concatenate([b["inputs"] for b in batches[k:6:2]], axis=1) for k in (0, 1)]
    rows = np.concatenate(streams)
    assert np.all(np.diff(rows, axis=1) == 1) and np.all(np.diff(rows[:, 0]) == 24)
  again = _batches("stateful", stream_segments=stream_segments, stream_sets=2)
  again.set_state(iterator.get_state())
  assert np.array_equal(next(again)["inputs"], next(iterator)["inputs"])
  with pytest.raises(ValueError, match="cannot resume"):
    _batches("stateful", stream_segments=stream_segments).set_state(iterator.get_state())
  with pytest.raises(ValueError, match="stream_sets=2; expected 1, or more with mode='stateful'"):
    _batches("random", stream_sets=2)


@pytest.mark.parametrize("size,batch,length", [(250, 4, 8), (250, 3, 7), (57, 4, 8), (9, 8, 4),
                                               (2, 2, 3)])
@pytest.mark.parametrize("mode", ["eval", "eval_stateful"])
def test_evaluation_predicts_every_byte_but_the_first_exactly_once(mode, size, batch, length):
  iterator = _batches(mode, POSITIONS[:size], batch=batch, length=length)
  batches = list(iterator)
  assert len(batches) == iterator.num_batches
  real = np.concatenate([b["targets"][b["weights"] == 1] for b in batches])
  assert sorted(real.tolist()) == list(range(1, size))
  for b in batches:
    assert b["inputs"].shape == b["targets"].shape == b["weights"].shape == (batch, length)
    weighted = b["weights"] == 1
    assert np.all(b["targets"][weighted] == b["inputs"][weighted] + 1)
    # Within a row, the real targets come first: padding never precedes a real byte.
    assert np.all(np.diff(b["weights"], axis=1) <= 0)
    assert np.all(b["inputs"][:, 1:][b["weights"][:, 1:] == 1] ==
                  b["targets"][:, :-1][b["weights"][:, 1:] == 1])


def test_stateful_evaluation_reads_each_row_as_one_causal_pass():
  batches = list(_batches("eval_stateful", batch=3, length=7))
  # 249 targets: rows of 83, ceil(83 / 7) = 12 batches.
  assert len(batches) == 12
  assert [b["reset"].tolist() for b in batches] == [[True] * 3] + [[False] * 3] * 11
  for row in range(3):
    inputs = np.concatenate([b["inputs"][row][b["weights"][row] == 1] for b in batches])
    targets = np.concatenate([b["targets"][row][b["weights"][row] == 1] for b in batches])
    assert np.array_equal(inputs, np.arange(row * 83, row * 83 + 83))
    assert np.array_equal(targets, inputs + 1)


@pytest.mark.parametrize("mode", lm.MODES)
def test_resumes_exactly_from_a_saved_state(mode):
  iterator = _batches(mode, batch=2, length=5)
  _take(iterator, 9)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 4)
  resumed = _batches(mode, batch=2, length=5)
  resumed.set_state(state)
  assert all(_equal(a, b) for a, b in zip(expected, _take(resumed, 4)))
  with pytest.raises(ValueError, match="cannot resume"):
    _batches(mode, batch=2, length=6).set_state(state)
  with pytest.raises(ValueError, match="cannot resume"):
    _batches(mode, POSITIONS[:200], batch=2, length=5).set_state(state)


@pytest.mark.parametrize("mode", lm.MODES)
@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_read_their_rows_of_the_same_global_batches(mode, process_count):
  single = _take(_batches(mode, batch=8, length=4), 8)
  shards = [_take(_batches(mode, batch=8, length=4, process_index=p,
                           process_count=process_count), 8) for p in range(process_count)]
  for step, global_batch in enumerate(single):
    for key, value in global_batch.items():
      rows = [shard[step][key] for shard in shards]
      assert all(len(r) == 8 // process_count for r in rows)
      assert np.array_equal(np.concatenate(rows), value)


def test_batch_settings_are_checked():
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    _batches("random", batch=8, process_count=3)
  with pytest.raises(ValueError, match="process_index=2 is not in"):
    _batches("random", batch=8, process_index=2, process_count=2)
  with pytest.raises(ValueError, match=r"mode='tbptt'; expected one of"):
    _batches("tbptt")
  with pytest.raises(ValueError, match="holds 8 bytes; mode='random'.*needs at least 9"):
    _batches("random", POSITIONS[:8])
  with pytest.raises(ValueError, match="holds 32 bytes; mode='stateful'.*needs at least 33"):
    _batches("stateful", POSITIONS[:32])
  with pytest.raises(ValueError, match="segment_length=0"):
    _batches("eval", length=0)


def test_task_picks_the_stateful_modes_when_asked(tmp_path):
  path = _write(tmp_path / "c.txt", b"abcdefghij" * 40)
  for stateful, modes in ((False, ("random", "eval")), (True, ("stateful", "eval_stateful"))):
    task = data.load_task("lm", data_dir="x", max_length=4, source="files", files=str(path),
                          stateful=stateful)
    train = task.train_batches(global_batch_size=4, seed=0)
    evaluation = task.eval_batches("validation", global_batch_size=4)
    assert (train.mode, evaluation.mode) == modes
    assert sum(b["weights"].sum() for b in evaluation) == len(task.splits["validation"]) - 1


def test_packed_documents_give_segment_ids_and_positions_per_document(tmp_path):
  """Each file one document: ids count a row's documents from 1, positions restart at each
  document (or at the segment's start), padding gets 0; the targets are those of unpacked batches."""
  paths = [tmp_path / f"{i}.txt" for i in range(3)]
  for path, size in zip(paths, (50, 7, 400)):
    _write(path, bytes(range(97, 97 + 20)) * (size // 20) + b"z" * (size % 20))
  task = lm.load(None, max_length=16, source="files", files=[str(p) for p in paths],
                 pack_documents=True)
  assert task.data["pack_documents"] and task.data["documents"]["train"] == 3
  np.testing.assert_array_equal(task.documents["train"], [0, 50, 57])
  packed = task.eval_batches("train", global_batch_size=8)
  plain = lm.make_lm_batches(task.splits["train"], global_batch_size=8, segment_length=16,
                             mode="eval")
  first = next(packed)
  _equal({k: v for k, v in first.items() if k not in ("segment_ids", "positions")}, next(plain))
  starts = np.arange(8)[:, None] * 16 + np.arange(16)  # stream position of every input
  document = np.searchsorted([0, 50, 57], starts, side="right")
  np.testing.assert_array_equal(first["segment_ids"], document - document[:, :1] + 1)
  row = 3  # inputs 48..63: document 1 (48, 49), document 2 (50..56), document 3 (57..63)
  np.testing.assert_array_equal(first["segment_ids"][row], [1] * 2 + [2] * 7 + [3] * 7)
  np.testing.assert_array_equal(first["positions"][row], [0, 1] + list(range(7)) + list(range(7)))
  last = list(packed)[-1]  # past the split's end the inputs pad, with id 0 (a row's last real input
  for ids, weights in zip(last["segment_ids"], last["weights"]):  # has a padded target)
    assert (ids[weights == 0][1:] == 0).all() and (ids[weights == 1] > 0).all()


def test_packed_documents_are_checked(tmp_path, small_standard):
  corpus = tmp_path / "a.txt"
  _write(corpus, b"x" * 100)
  with pytest.raises(ValueError, match="pack_documents=True and stateful=True exclude each other"):
    lm.load(None, max_length=8, source="files", files=str(corpus), pack_documents=True,
            stateful=True)
  _write(tmp_path / "enwik8", b"a" * lm.STANDARD_SIZE)
  with pytest.raises(ValueError, match="needs a corpus of documents.*'enwik8' is one stream"):
    lm.load(str(tmp_path), max_length=8, source="enwik8", pack_documents=True)
