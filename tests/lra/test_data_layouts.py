"""The LRA release is found wherever data_dir points in it; generated ListOps never stands in for
files the user has; every task records where its data came from."""

import json

import pytest

import fixtures
from lra import data
from lra.data import listops, pathfinder, retrieval

# data_dir relative to the root of an unpacked tarball (which nests lra_release/lra_release/).
LAYOUTS = {"outer": "lra_release", "inner": "lra_release/lra_release", "task folder": None}
TASK_FOLDERS = {"listops": "listops-1000", "retrieval": "tsv_data", "pathfinder": "pathfinder32"}


def _unpack_release(root):
  """The tarball's layout with tiny files: root/lra_release/lra_release/<task folders>."""
  release = root / "lra_release" / "lra_release"
  fixtures.write_listops(release)
  fixtures.write_aan(release)
  fixtures.write_pathfinder(release, 32, num_images=10, empty=None)
  return release


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("task", TASK_FOLDERS)
def test_every_level_of_the_release_reads_the_same_files(tmp_path, task, layout):
  release = _unpack_release(tmp_path)
  data_dir = tmp_path / LAYOUTS[layout] if LAYOUTS[layout] else release / TASK_FOLDERS[task]
  max_length = 32 * 32 if task == "pathfinder" else 64
  loaded = data.load_task(task, data_dir=str(data_dir), max_length=max_length)
  assert len(loaded.splits["train"]) > 0
  files = [record["path"] for record in loaded.data["files"]]
  assert files and all(path.startswith(str(release / TASK_FOLDERS[task])) for path in files)
  assert all(len(record["sha256"]) == 64 and record["bytes"] > 0
             for record in loaded.data["files"])


def test_two_copies_under_one_data_dir_are_an_error(tmp_path):
  fixtures.write_listops(tmp_path)
  fixtures.write_listops(tmp_path / "lra_release")
  with pytest.raises(ValueError, match="more than one place"):
    listops.find_folder(tmp_path)


def test_missing_release_names_every_place_looked_at(tmp_path):
  with pytest.raises(data.MissingDataError) as error:
    retrieval.find_folder(tmp_path)
  message = str(error.value)
  for place in ("tsv_data/new_aan_pairs", "lra_release/tsv_data/new_aan_pairs", "lra_release.gz"):
    assert place in message
  with pytest.raises(data.MissingDataError, match="pathfinder32/curv_contour_length_14"):
    pathfinder.difficulty_dir(tmp_path, 32)


GENERATION = listops.generation_options(generate_train=12, generate_eval=3, min_length=4,
                                        max_length=24, generate_seed=0)


def test_listops_files_directly_in_data_dir_are_read_not_replaced(tmp_path):
  """The user points at the release's listops-1000/ folder itself."""
  fixtures.write_listops(tmp_path)
  folder = tmp_path / "listops-1000"
  assert not listops.needs_generation(folder, GENERATION)
  assert not listops.prepare(folder, GENERATION)
  assert sorted(p.name for p in folder.iterdir()) == sorted(listops.SPLIT_FILES.values())
  loaded = listops.load(folder, max_length=64)
  assert len(loaded.splits["test"]) == len(fixtures.LISTOPS_EXPRESSIONS)
  assert "generated" not in loaded.data


@pytest.mark.parametrize("state", ["absent", "empty"])
def test_generation_only_into_an_empty_or_absent_directory(tmp_path, state, caplog):
  data_dir = tmp_path / "listops"
  if state == "empty":
    data_dir.mkdir()
  assert listops.prepare(data_dir, GENERATION)
  assert "GENERATING" in caplog.text
  loaded = listops.load(data_dir, max_length=24)
  assert loaded.data["generated"] is True
  assert loaded.data["generator"]["seed"] == 0 and loaded.data["generator"]["num_train"] == 12
  assert len(loaded.splits["train"]) == 12
  assert not listops.prepare(data_dir, GENERATION)  # the second run reads what the first wrote


def test_a_directory_with_other_files_is_not_filled_with_generated_data(tmp_path):
  (tmp_path / "basic_train.csv").write_text("not a ListOps file")
  with pytest.raises(data.MissingDataError) as error:
    listops.prepare(tmp_path, GENERATION)
  assert "basic_train.csv" in str(error.value) and "no data is generated" in str(error.value)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["basic_train.csv"]


def test_generated_data_with_other_options_is_an_error(tmp_path):
  listops.prepare(tmp_path, GENERATION)
  with pytest.raises(ValueError, match=r"seed: 0 there, 1 now"):
    listops.prepare(tmp_path, {**GENERATION, "seed": 1})


def test_an_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  calls = []

  def interrupted(*args):
    calls.append(args)
    if len(calls) > 20:
      raise KeyboardInterrupt
    return original(*args)

  original = listops._random_tree
  monkeypatch.setattr(listops, "_random_tree", interrupted)
  with pytest.raises(KeyboardInterrupt):
    listops.prepare(tmp_path, GENERATION)
  monkeypatch.setattr(listops, "_random_tree", original)
  with pytest.raises(data.MissingDataError):
    listops.find_folder(tmp_path)
  assert listops.prepare(tmp_path, GENERATION)  # the partial folder is not "other files"
  assert json.loads((tmp_path / "listops-1000" / "generator.json").read_text())["num_train"] == 12


def test_text_and_image_record_their_sources(tmp_path):
  fixtures.write_aclimdb(tmp_path, per_class=2)
  text = data.load_task("text", data_dir=str(tmp_path), max_length=16, source="aclimdb")
  assert text.data["reviews"] == {"train": 4, "test": 4} and len(text.data["sha256"]) == 64
  with fixtures.mock_tfds(4):
    image = data.load_task("image", data_dir=str(tmp_path / "tfds"), max_length=1024)
  assert image.data["tfds"] == "cifar10"
