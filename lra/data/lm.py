"""Byte-level language modelling data: corpora read as byte streams, batches of contiguous segments.

Corpora (`source`), each split into train / validation / test byte streams (uint8 [N]), in order:
- "stdlib" (default, offline): the running interpreter's standard-library `.py` sources,
  concatenated in sorted order of their paths under `sysconfig.get_paths()["stdlib"]` (see
  `stdlib_files`).
- "enwik8": `<data_dir>/enwik8` (raw, memory-mapped) or `<data_dir>/enwik8.zip` (its one member
  `enwik8`), the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize, Mahoney 2006).
- "text8": `<data_dir>/text8` or `text8.zip`, 10^8 characters of the same dump cleaned to
  lowercase a-z and single spaces.
- "files": UTF-8 text files given by path, concatenated in the given order.
Every corpus is cut at the same fractions, contiguously: the first 90% trains, the next 5%
validates, the last 5% tests (`split_bounds`); for enwik8 and text8 the standard 90M / 5M / 5M.
Each reader also returns the corpus' provenance (results.json `data`): source, files, byte count and
SHA-256 of the concatenated bytes, and the byte range of each split.

Batches (`make_lm_batches`) are dicts of numpy arrays, for segment length L and B rows:
  inputs  int32   [B, L]  bytes of a segment,
  targets int32   [B, L]  the next byte of each input (segments of L + 1 bytes, overlapping by one),
  weights float32 [B, L]  1 where the target is a real byte, 0 where it pads,
  reset   bool    [B]     True where the row does not continue the text of the row's previous batch,
                          so a model carrying state across batches must start it from zero,
and, when documents are packed (`pack_documents`: each file of the stdlib or files corpus one
document), so that attention never crosses a document boundary:
  segment_ids int32 [B, L]  1, 2, ... for the documents of a row's inputs in order, 0 where it pads,
  positions   int32 [B, L]  each input's position in its document, counted from the segment's start
                            for a document that began before it.
The targets stay the same (the byte after a document's last one is predicted from that document
alone), so packed and unpacked runs predict the same bytes and their bits per byte compare.
Padding positions hold byte 0 in inputs and targets; only `weights` marks them. Within a split, the
first byte is context only; evaluation predicts each of the other N - 1 bytes exactly once and drops
none (the final partial segments and rows are padded with weights 0).
"""

import dataclasses
import hashlib
import math
import os
import platform
import sys
import sysconfig
import zipfile
from collections.abc import Sequence

import numpy as np

from lra.data import sources

VOCAB_SIZE = 256
SOURCES = ("stdlib", "enwik8", "text8", "files")
MODES = ("random", "stateful", "eval", "eval_stateful")
SPLIT_PERCENT = {"train": 90, "validation": 5, "test": 5}
STANDARD_SIZE = 100_000_000  # bytes of enwik8 and of text8
STANDARD_CORPORA = {
    "enwik8": "download http://mattmahoney.net/dc/enwik8.zip into data_dir (unpacking is optional)",
    "text8": "download http://mattmahoney.net/dc/text8.zip into data_dir (unpacking is optional)",
}
TEXT8_ALPHABET = b"abcdefghijklmnopqrstuvwxyz "
STDLIB_EXCLUDED_DIRS = ("site-packages", "dist-packages", "test", "tests", "idle_test",
                        "__pycache__")
_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class Corpus:
  """`splits`: "train", "validation", "test" -> uint8 [N_split]; `data`: provenance (JSON-able);
  `documents`: split -> int64 [D] the start offsets of its documents (the first 0; a document cut by
  a split boundary continues as the next split's first), or None for a corpus without documents."""
  splits: dict
  data: dict
  documents: dict | None = None


def split_bounds(size: int) -> dict[str, tuple[int, int]]:
  """[start, stop) of each split of a `size`-byte corpus: 90% / 5% / 5%, contiguous, in that order
  (train and validation sizes rounded down, test takes the rest)."""
  train = size * SPLIT_PERCENT["train"] // 100
  validation = size * SPLIT_PERCENT["validation"] // 100
  return {"train": (0, train), "validation": (train, train + validation),
          "test": (train + validation, size)}


def _sha256(stream: np.ndarray) -> str:
  digest = hashlib.sha256()
  for start in range(0, len(stream), _CHUNK):
    digest.update(memoryview(np.ascontiguousarray(stream[start:start + _CHUNK])))
  return digest.hexdigest()


def _corpus(stream: np.ndarray, data: dict, name: str, document_sizes=None) -> Corpus:
  """Splits `stream` by `split_bounds`; every split must hold at least two bytes (one target).
  `document_sizes`: the bytes of each document of the stream in order (files), or None."""
  bounds = split_bounds(len(stream))
  short = [split for split, (start, stop) in bounds.items() if stop - start < 2]
  if short:
    raise ValueError(f"{name} holds {len(stream)} bytes: too few for a 90/5/5 split with at least "
                     f"two bytes in every split ({short} would have fewer); give at least 40 bytes")
  data = {**data, "bytes": int(len(stream)), "sha256": _sha256(stream),
          "splits": {split: list(bound) for split, bound in bounds.items()}}
  documents = None
  if document_sizes is not None:
    starts = np.cumsum([0] + list(document_sizes[:-1]), dtype=np.int64)
    documents = {split: np.concatenate([[0], starts[(starts > start) & (starts < stop)] - start])
                 for split, (start, stop) in bounds.items()}
  return Corpus({split: stream[start:stop] for split, (start, stop) in bounds.items()}, data,
                documents)


def stdlib_files(stdlib_dir) -> list[str]:
  """The standard library's `.py` files: relative paths ('/'-separated), sorted.

  Every `*.py` file under `stdlib_dir`, except in directories named as in `STDLIB_EXCLUDED_DIRS`
  (installed packages and test suites, which distributions often ship separately) or `config-*`
  (build files), and except the build-generated `_sysconfigdata_*.py`, so that installs of the same
  Python version tend to give the same corpus.
  """
  paths = []
  for root, dirs, files in os.walk(stdlib_dir):
    dirs[:] = [d for d in dirs if d not in STDLIB_EXCLUDED_DIRS and not d.startswith("config-")]
    relative = os.path.relpath(root, stdlib_dir)
    for name in files:
      path = os.path.join(root, name)
      if name.endswith(".py") and not name.startswith("_sysconfigdata_") and os.path.isfile(path):
        paths.append(name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}")
  return sorted(paths)


def read_stdlib(stdlib_dir=None) -> Corpus:
  """The `stdlib_files` of `stdlib_dir` (default: the running interpreter's), concatenated."""
  stdlib_dir = os.path.abspath(stdlib_dir or sysconfig.get_paths()["stdlib"])
  paths = stdlib_files(stdlib_dir)
  if not paths:
    raise sources.missing(os.path.join(stdlib_dir, "*.py"), "the Python standard library's sources",
                          "use a Python installation that ships its standard library as .py files, "
                          "or choose another source (enwik8, text8, files)")
  pieces = []
  for path in paths:
    with open(os.path.join(stdlib_dir, path), "rb") as f:
      pieces.append(f.read())
  stream = np.frombuffer(b"".join(pieces), np.uint8)
  data = {"source": "stdlib", "python_version": platform.python_version(),
          "python_implementation": sys.implementation.name, "stdlib_dir": stdlib_dir,
          "num_files": len(paths)}
  return _corpus(stream, data, f"the standard library at {stdlib_dir}", [len(p) for p in pieces])


def _read_standard(data_dir, name: str) -> tuple[np.ndarray, str]:
  """(bytes, path read) of `<data_dir>/<name>` (memory-mapped) or of member `name` of
  `<data_dir>/<name>.zip`, checked to hold `STANDARD_SIZE` bytes."""
  how = STANDARD_CORPORA[name]
  raw, archive = os.path.join(data_dir, name), os.path.join(data_dir, f"{name}.zip")
  if os.path.isfile(raw):
    path, size = raw, os.path.getsize(raw)
  elif os.path.isfile(archive):
    path = archive
    try:
      with zipfile.ZipFile(archive) as zf:
        if name not in zf.namelist():
          raise sources.malformed(archive, "member list", f"a zip archive holding `{name}`",
                                  f"members {zf.namelist()[:5]}", how)
        size = zf.getinfo(name).file_size
        content = zf.read(name) if size == STANDARD_SIZE else None
    except zipfile.BadZipFile as error:
      raise sources.malformed(archive, "header", "a zip archive", f"no zip archive ({error})",
                              how) from error
  else:
    raise sources.missing(raw, f"the raw {name} file ({STANDARD_SIZE:,} bytes) or {name}.zip next "
                          "to it", how)
  if size != STANDARD_SIZE:
    raise sources.malformed(path, f"member {name}" if path == archive else "file size",
                            f"{STANDARD_SIZE:,} bytes", f"{size:,} bytes", how)
  if path == raw:
    return np.memmap(raw, np.uint8, mode="r"), path
  return np.frombuffer(content, np.uint8), path


def read_enwik8(data_dir) -> Corpus:
  stream, path = _read_standard(data_dir, "enwik8")
  return _corpus(stream, {"source": "enwik8", "path": os.path.abspath(path)}, path)


def read_text8(data_dir) -> Corpus:
  """text8, checked to hold only lowercase a-z and spaces."""
  stream, path = _read_standard(data_dir, "text8")
  allowed = np.zeros(256, bool)
  allowed[np.frombuffer(TEXT8_ALPHABET, np.uint8)] = True
  for start in range(0, len(stream), _CHUNK):
    bad = np.flatnonzero(~allowed[stream[start:start + _CHUNK]])
    if len(bad):
      offset = start + int(bad[0])
      raise sources.malformed(path, f"byte offset {offset}", "only lowercase a-z and spaces",
                              f"byte {int(stream[offset])} ({bytes([stream[offset]])!r})",
                              STANDARD_CORPORA["text8"])
  return _corpus(stream, {"source": "text8", "path": os.path.abspath(path)}, path)


def read_files(files: str | Sequence[str]) -> Corpus:
  """UTF-8 text files (a comma-separated string or a sequence of paths), concatenated in order."""
  paths = [p.strip() for p in files.split(",")] if isinstance(files, str) else list(files)
  paths = [os.path.expanduser(p) for p in paths if p]
  if not paths:
    raise ValueError(f"files={files!r}; expected comma-separated paths of UTF-8 text files")
  how = "give paths of existing UTF-8 text files in --config.task_options.files"
  pieces, records = [], []
  for path in paths:
    if not os.path.isfile(path):
      raise sources.missing(path, "a UTF-8 text file", how)
    with open(path, "rb") as f:
      content = f.read()
    try:
      content.decode("utf-8")
    except UnicodeDecodeError as error:
      raise sources.malformed(path, f"byte offset {error.start}", "UTF-8 text",
                              f"bytes {content[error.start:error.start + 4]!r} ({error.reason})",
                              "convert the file to UTF-8 (e.g. iconv -t UTF-8)") from error
    pieces.append(content)
    records.append({"path": os.path.abspath(path), "bytes": len(content),
                    "sha256": hashlib.sha256(content).hexdigest()})
  stream = np.frombuffer(b"".join(pieces), np.uint8)
  return _corpus(stream, {"source": "files", "files": records}, f"files={files!r}",
                 [len(p) for p in pieces])


def read_corpus(source: str = "stdlib", *, data_dir=None,
                files: str | Sequence[str] = "") -> Corpus:
  """The corpus `source` (one of `SOURCES`); `data_dir` for enwik8 / text8, `files` for "files"."""
  sources.check_choice("source", source, SOURCES)
  if files and source != "files":
    raise ValueError(f"files={files!r} is read only with source='files', not source={source!r}")
  if source == "stdlib":
    return read_stdlib()
  if source == "files":
    return read_files(files)
  if not data_dir:
    raise ValueError(f"source={source!r} reads <data_dir>/{source}; data_dir={data_dir!r}")
  return read_enwik8(data_dir) if source == "enwik8" else read_text8(data_dir)


def unigram_bits_per_byte(train: np.ndarray, stream: np.ndarray) -> float:
  """Bits per byte of the targets of `stream` (all bytes but the first) under the byte frequencies
  of `train` with add-one smoothing: the baseline a model must beat to use any context."""
  def counts(x):
    return sum(np.bincount(x[s:s + _CHUNK], minlength=256) for s in range(0, len(x), _CHUNK))
  log_p = np.log2((counts(train) + 1.0) / (len(train) + 256.0))
  return float(-(counts(stream[1:]) * log_p).sum() / max(len(stream) - 1, 1))


class LMBatches:
  """This process's rows of the global batches of one byte stream, in one of `MODES`.

  Iterate with `next()`; `num_batches` is the number of batches (None: endless); `get_state()` (a
  JSON-able dict) and `set_state(state)` resume exactly. Global batch t is a pure function of t (and
  the seed), so every process holds the same state and process p returns rows
  [p * B/P, (p + 1) * B/P) of the same global batches, whatever the number P of processes.
  """

  def __init__(self, stream: np.ndarray, *, global_batch_size: int, segment_length: int, mode: str,
               seed: int, process_index: int, process_count: int, stream_segments: int = 0,
               stream_sets: int = 1, document_starts=None):
    sources.check_choice("mode", mode, MODES)
    if document_starts is not None and mode not in ("random", "eval"):
      raise ValueError(f"packed documents (document_starts) are read in modes 'random' and 'eval', "
                       f"not {mode!r}: stateful streams carry attention state across documents")
    if segment_length < 1 or global_batch_size < 1:
      raise ValueError(f"segment_length={segment_length}, global_batch_size={global_batch_size}; "
                       "both must be positive")
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the "
                       f"{process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    if stream_segments < 0 or (stream_segments and mode != "stateful"):
      raise ValueError(f"stream_segments={stream_segments}; expected 0, or a positive number of "
                       "segments with mode='stateful'")
    if stream_sets < 1 or (stream_sets > 1 and mode != "stateful"):
      raise ValueError(f"stream_sets={stream_sets}; expected 1, or more with mode='stateful'")
    self.stream, self.mode, self.seed, self.stream_segments = stream, mode, seed, stream_segments
    self.stream_sets = stream_sets
    self.document_starts = document_starts
    self.batch_size, self.length = global_batch_size, segment_length
    local = global_batch_size // process_count
    self.rows = slice(process_index * local, (process_index + 1) * local)
    size, targets = len(stream), len(stream) - 1
    need = {"random": segment_length + 1,
            "stateful": (stream_segments or stream_sets * global_batch_size) * segment_length + 1,
            "eval": 2, "eval_stateful": 2}[mode]
    if size < need:
      raise ValueError(f"the stream holds {size} bytes; mode={mode!r} with "
                       f"segment_length={segment_length}, global_batch_size={global_batch_size} "
                       f"and stream_sets={stream_sets} needs at least {need}")
    if mode == "random":
      self.num_batches = None
    elif mode == "stateful":
      streams = stream_sets * global_batch_size
      self.segments_per_row = targets // (streams * segment_length)
      self.row_length = self.segments_per_row * segment_length
      self.slack = targets - streams * self.row_length
      self.num_batches = None
    elif mode == "eval":
      self.num_segments = math.ceil(targets / segment_length)
      self.num_batches = math.ceil(self.num_segments / global_batch_size)
    else:
      self.row_length = math.ceil(targets / global_batch_size)
      self.num_batches = math.ceil(self.row_length / segment_length)
    self.position = 0
    self._fingerprint = dict(mode=mode, stream_bytes=size, global_batch_size=global_batch_size,
                             segment_length=segment_length, seed=seed)
    if stream_segments:
      self._fingerprint["stream_segments"] = stream_segments
    if stream_sets > 1:
      self._fingerprint["stream_sets"] = stream_sets
    if document_starts is not None:
      self._fingerprint["documents"] = int(len(document_starts))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.num_batches is not None and self.position >= self.num_batches:
      raise StopIteration
    batch = self.batch(self.position)
    self.position += 1
    return batch

  def _windows(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, stop, reset) of every global row of batch t: row r reads stream[start:stop], at
    most L + 1 bytes (fewer, even none, where it pads)."""
    B, L, size, rows = self.batch_size, self.length, len(self.stream), np.arange(self.batch_size)
    if self.mode == "random":
      start = np.random.default_rng([self.seed, t]).integers(0, size - L, B)
      return start, start + L + 1, np.ones(B, bool)
    if self.mode == "stateful":
      stream_set, u = t % self.stream_sets, t // self.stream_sets  # u: the set's own batch count
      if self.stream_segments:
        block, segment = divmod(u, self.stream_segments)
        draw = [self.seed, block] + ([stream_set] if self.stream_sets > 1 else [])
        start = (np.random.default_rng(draw).integers(0, size - self.stream_segments * L, B)
                 + segment * L)
      else:
        epoch, segment = divmod(u, self.segments_per_row)
        offset = np.random.default_rng([self.seed, epoch]).integers(0, self.slack + 1)
        start = offset + (stream_set * B + rows) * self.row_length + segment * L
      return start, start + L + 1, np.full(B, segment == 0)
    if self.mode == "eval":
      segment = t * B + rows
      start = np.where(segment < self.num_segments, segment * L, size)
      return start, np.minimum(start + L + 1, size), np.ones(B, bool)
    row_start = np.minimum(rows * self.row_length, size)
    row_stop = np.minimum(row_start + self.row_length + 1, size)
    start = np.minimum(row_start + t * L, row_stop)
    return start, np.minimum(start + L + 1, row_stop), np.full(B, t == 0)

  def batch(self, t: int) -> dict:
    """This process's rows of global batch t (any t; the eval modes have `num_batches`)."""
    start, stop, reset = (x[self.rows] for x in self._windows(t))
    index = start[:, None] + np.arange(self.length + 1)
    real = index < stop[:, None]
    values = self.stream[np.minimum(index, len(self.stream) - 1)]
    window = np.where(real, values, 0).astype(np.int32)
    batch = {"inputs": window[:, :-1], "targets": window[:, 1:],
             "weights": real[:, 1:].astype(np.float32), "reset": reset}
    if self.document_starts is not None:
      batch.update(self._documents(index[:, :-1], real[:, :-1], start))
    return batch

  def _documents(self, index, real, start) -> dict:
    """segment_ids and positions (module docstring) of inputs at stream positions index [B, L]."""
    document = np.searchsorted(self.document_starts, index, side="right") - 1  # [B, L], from 0
    segment_ids = np.where(real, document - document[:, :1] + 1, 0).astype(np.int32)
    begins = np.maximum(self.document_starts[document], start[:, None])
    positions = np.where(real, index - begins, 0).astype(np.int32)
    return {"segment_ids": segment_ids, "positions": positions}

  def get_state(self) -> dict:
    return {**self._fingerprint, "position": self.position}

  def set_state(self, state: dict):
    """Resumes right after the batch that was last taken when `state` was saved."""
    saved = {key: value for key, value in state.items() if key != "position"}
    if saved != self._fingerprint:
      raise ValueError(f"cannot resume this data iterator ({self._fingerprint}) from the state of "
                       f"a different one ({saved}): the data or batch settings changed")
    self.position = int(state["position"])


def make_lm_batches(stream: np.ndarray, *, global_batch_size: int, segment_length: int,
                    stream_segments: int = 0, stream_sets: int = 1,
                    mode: str = "random", seed: int = 0, process_index: int = 0,
                    process_count: int = 1, document_starts=None) -> LMBatches:
  """Batches of `stream` (uint8 [N]) of B = global_batch_size rows of L = segment_length bytes.

  Each batch: inputs, targets int32 [B/P, L], weights float32 [B/P, L], reset bool [B/P] (see the
  module docstring), for this process's rows. Modes:
  - "random" (training, endless): each row an independent segment stream[s : s + L + 1] with s
    uniform in [0, N - L - 1], drawn from (seed, t); reset all True.
  - "stateful" (training, endless): the stream is cut into B contiguous row streams of R = T * L
    targets each, T = floor((N - 1) / (B * L)); batch t holds segment t mod T of every row, so a
    row's consecutive batches are consecutive text. Each cycle through the rows (epoch e) starts at
    an offset in [0, N - 1 - B * R] drawn from (seed, e), so the fewer than B * L bytes left
    over fall at different places; reset is True at every row's first segment (t mod T = 0).
    With stream_segments = J > 0 instead, every row reads J consecutive segments from a start
    uniform in [0, N - J * L - 1] (drawn per row from (seed, t // J)) and then jumps to a new
    start with reset: state carries over J segments, and the rows sample the whole stream the way
    random segments do.
    With stream_sets = K > 1, K independent sets of B row streams take turns: batch t holds the
    (t // K)-th batch of set t mod K (the K * B rows of the contiguous form each read 1 / (K * B)
    of the stream; the jumping form draws per set from (seed, block, set)), so consecutive batches
    are unrelated text, and a model keeps one carried state per set.
  - "eval" (once): segments k = 0 .. ceil((N - 1) / L) - 1 read stream[k * L : k * L + L + 1], B per
    batch in order; the last segment and the rows after the last segment pad with weights 0.
  - "eval_stateful" (once): B row streams of R = ceil((N - 1) / B) targets (row r predicts bytes
    r * R + 1 .. (r + 1) * R), read L bytes per batch, so a model carrying state through the
    ceil(R / L) batches makes one causal pass per row; reset is True in the first batch only.
  Both eval modes predict every byte of the stream but the first exactly once.
  `document_starts` (int64 [D], the stream's document start offsets; modes "random" and "eval"):
  the batches also hold segment_ids and positions of the packed documents (module docstring).
  """
  return LMBatches(stream, global_batch_size=global_batch_size, segment_length=segment_length,
                   mode=mode, seed=seed, process_index=process_index, process_count=process_count,
                   stream_segments=stream_segments, stream_sets=stream_sets,
                   document_starts=document_starts)


@dataclasses.dataclass(frozen=True)
class LMData:
  """A language-modelling task: byte streams `splits` (uint8 [N]) of the corpus `data` describes.

  `segment_length` (config `max_length`) is L; `stateful` picks the modes of `train_batches`
  ("stateful", else "random") and `eval_batches` ("eval_stateful", else "eval"); `stream_segments`
  is the stateful training streams' length in segments (0: one contiguous stream per row) and
  `stream_sets` the number of sets of them that take turns (`make_lm_batches`); `documents` (split -> document start offsets, `Corpus.documents`) packs the documents: batches
  carry segment_ids and positions so that attention stays within a document.
  """
  splits: dict
  data: dict
  segment_length: int
  stateful: bool
  stream_segments: int = 0
  stream_sets: int = 1
  vocab_size: int = VOCAB_SIZE
  documents: dict | None = None

  def train_batches(self, *, global_batch_size: int, seed: int, process_index: int = 0,
                    process_count: int = 1) -> LMBatches:
    return make_lm_batches(self.splits["train"], global_batch_size=global_batch_size,
                           segment_length=self.segment_length, seed=seed,
                           mode="stateful" if self.stateful else "random",
                           stream_segments=self.stream_segments if self.stateful else 0,
                           stream_sets=self.stream_sets if self.stateful else 1,
                           process_index=process_index, process_count=process_count,
                           document_starts=self._documents("train"))

  def eval_batches(self, split: str, *, global_batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> LMBatches:
    return make_lm_batches(self.splits[split], global_batch_size=global_batch_size,
                           segment_length=self.segment_length,
                           mode="eval_stateful" if self.stateful else "eval",
                           process_index=process_index, process_count=process_count,
                           document_starts=self._documents(split))

  def _documents(self, split):
    return None if self.documents is None else self.documents[split]


def load(data_dir, *, max_length: int, source: str = "stdlib", files: str = "",
         stateful: bool = False, stream_segments: int = 0, stream_sets: int = 1,
         pack_documents: bool = False) -> LMData:
  """The corpus `source` (see `read_corpus`) as an `LMData` with segments of max_length bytes;
  `pack_documents`: attention stays within each document (each file of stdlib or files)."""
  if max_length < 1:
    raise ValueError(f"max_length={max_length}; expected a positive segment length")
  if stream_segments and not stateful:
    raise ValueError(f"stream_segments={stream_segments} applies to stateful training only: set "
                     "task_options.stateful=True, or stream_segments=0")
  if stream_sets != 1 and not stateful:
    raise ValueError(f"stream_sets={stream_sets} applies to stateful training only: set "
                     "task_options.stateful=True, or stream_sets=1")
  if pack_documents and stateful:
    raise ValueError("task_options.pack_documents=True and stateful=True exclude each other: a "
                     "stateful stream carries attention state across documents; set one of them "
                     "to False")
  corpus = read_corpus(source, data_dir=data_dir, files=files)
  if pack_documents and corpus.documents is None:
    raise ValueError(f"task_options.pack_documents=True needs a corpus of documents (source 'stdlib' "
                     f"or 'files': each file one document); source={source!r} is one stream")
  data = corpus.data
  if pack_documents:
    data = {**data, "pack_documents": True,
            "documents": {split: int(len(starts)) for split, starts in corpus.documents.items()}}
  return LMData(splits=corpus.splits, data=data, segment_length=max_length,
                stateful=bool(stateful), stream_segments=int(stream_segments),
                stream_sets=int(stream_sets),
                documents=corpus.documents if pack_documents else None)
