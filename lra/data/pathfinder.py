"""Pathfinder (LRA): are the two dots joined by a dashed path? Pathfinder-32 (1024 pixels) and Path-X
(pathfinder128, 16384 pixels), hard difficulty (curv_contour_length_14).

Files: `curv_contour_length_14/metadata/*.npy` in the release's `pathfinder{32,128}/` folder, found
under data_dir at any level (`sources.find_release_folder`), which despite the name
are text: one line per image, `<subdir> <filename> <n> <label> ...` separated by spaces, the image
being `curv_contour_length_14/<subdir>/<filename>` (subdir like `imgs/43`), label 0 or 1.

The release has one split; it is cut 80/10/10 into train/validation/test in the order of a hash of
each image's relative path (deterministic, independent of file listing order and random state).
Zero-byte images (the release contains one) are skipped with a warning. Images are decoded with
Pillow when an example is read, so Path-X's 200K images are never all in memory. Token = pixel value
(vocab 256), no padding.
"""

import hashlib
import os
import re

import numpy as np
from absl import logging
from PIL import Image

from lra.data import sources

VOCAB_SIZE = 256
DIFFICULTY = "curv_contour_length_14"
FRACTIONS = (0.8, 0.1, 0.1)
FIELDS = "`<subdir> <filename> <n> <label>` separated by spaces"


def difficulty_dir(data_dir, resolution: int) -> str:
  """`curv_contour_length_14` of `pathfinder<resolution>` under data_dir: `<data_dir>/pathfinder32`,
  `<data_dir>/lra_release/pathfinder32` or data_dir itself being that folder."""
  folder = sources.find_release_folder(data_dir, f"pathfinder{resolution}",
                                       [os.path.join(DIFFICULTY, "metadata")],
                                       f"Pathfinder-{resolution} files")
  return os.path.join(folder, DIFFICULTY)


def provenance(directory, paths: list[str]) -> dict:
  """The metadata files with their SHA-256; the images (up to 200K) by count, total size and a
  SHA-256 over their sorted relative paths and sizes."""
  metadata_dir = os.path.join(directory, "metadata")
  listing = hashlib.sha256()
  total = 0
  for path in sorted(paths):
    size = os.path.getsize(os.path.join(directory, path))
    total += size
    listing.update(f"{path}\t{size}\n".encode())
  return {"files": sources.file_records(sorted(os.path.join(metadata_dir, f)
                                               for f in os.listdir(metadata_dir)
                                               if f.endswith(".npy"))),
          "images": {"directory": os.path.abspath(directory), "count": len(paths),
                     "bytes": total, "sha256_of_paths_and_sizes": listing.hexdigest()}}


def read_metadata(directory) -> tuple[list[str], list[int]]:
  """(image paths relative to `directory`, labels) from every `metadata/*.npy`, zero-byte images
  left out."""
  metadata_dir = os.path.join(directory, "metadata")
  if not os.path.isdir(metadata_dir):
    raise sources.missing(metadata_dir, "the Pathfinder metadata/*.npy files", sources.LRA_RELEASE)
  names = sorted((f for f in os.listdir(metadata_dir) if f.endswith(".npy")),
                 key=lambda f: [int(part) if part.isdigit() else part
                                for part in re.split(r"(\d+)", f)])
  if not names:
    raise sources.missing(os.path.join(metadata_dir, "*.npy"), "Pathfinder metadata files",
                          sources.LRA_RELEASE)
  paths, labels, empty = [], [], []
  for name in names:
    metadata_path = os.path.join(metadata_dir, name)
    with open(metadata_path, "rb") as f:
      for line_number, line in enumerate(f, start=1):
        fields = line.split()
        if not fields:
          continue
        where = f"line {line_number}"
        if len(fields) < 4:
          raise sources.malformed(metadata_path, where, FIELDS, f"{len(fields)} fields",
                                  sources.LRA_RELEASE)
        if fields[3] not in (b"0", b"1"):
          raise sources.malformed(metadata_path, where, "a label 0 or 1 in the 4th field",
                                  repr(fields[3].decode(errors="replace")[:20]), sources.LRA_RELEASE)
        relative = os.path.join(fields[0].decode(), fields[1].decode())
        try:
          size = os.stat(os.path.join(directory, relative)).st_size
        except FileNotFoundError:
          raise sources.missing(os.path.join(directory, relative),
                                f"the image that {metadata_path}, {where} names",
                                sources.LRA_RELEASE) from None
        if size == 0:
          empty.append(relative)
          continue
        paths.append(relative)
        labels.append(int(fields[3]))
  if empty:
    logging.warning("%s: skipped %d empty image(s): %s", directory, len(empty),
                    ", ".join(empty[:5]))
  return paths, labels


def split_order(paths: list[str]) -> np.ndarray:
  """Indices of `paths` sorted by a hash of the path: the order the splits are cut in."""
  keys = [hashlib.blake2b(path.encode(), digest_size=8).digest() + path.encode() for path in paths]
  return np.asarray(sorted(range(len(paths)), key=keys.__getitem__), np.int64)


class ImageFiles:
  """Lazily decoded grayscale PNGs: {"inputs": int32 [side * side] pixel values, "targets": []}."""

  def __init__(self, directory, paths: list[str], labels: np.ndarray, side: int):
    self.directory, self.paths, self.labels, self.side = directory, paths, labels, side

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index) -> dict:
    path = os.path.join(self.directory, self.paths[index])
    try:
      with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    except OSError as error:
      raise sources.MalformedDataError(f"{path}: cannot decode the image ({error}); to get the "
                                       f"data, {sources.LRA_RELEASE}.") from error
    if pixels.shape != (self.side, self.side):
      raise sources.MalformedDataError(f"{path}: image of shape {pixels.shape}; expected "
                                       f"{(self.side, self.side)}")
    return {"inputs": pixels.reshape(-1).astype(np.int32),
            "targets": np.asarray(self.labels[index], np.int32)}


def load(data_dir, *, max_length: int, resolution: int = 32) -> sources.TaskData:
  """Pathfinder at `resolution` (32; 128 for Path-X) split 80/10/10; max_length = resolution^2."""
  if max_length != resolution * resolution:
    raise ValueError(f"max_length={max_length}: a Pathfinder-{resolution} image is "
                     f"{resolution * resolution} tokens")
  directory = difficulty_dir(data_dir, resolution)
  paths, labels = read_metadata(directory)
  order = split_order(paths)
  cuts = np.round(np.cumsum(FRACTIONS)[:2] * len(order)).astype(int)
  splits = {}
  for split, indices in zip(("train", "validation", "test"), np.split(order, cuts)):
    splits[split] = ImageFiles(directory, [paths[i] for i in indices],
                               np.asarray(labels, np.int32)[indices], resolution)
  return sources.TaskData(vocab_size=VOCAB_SIZE, num_classes=2, dual=False, has_padding=False,
                          splits=splits, data=provenance(directory, paths))
