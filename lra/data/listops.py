"""ListOps (LRA): the value (0-9) of a nested expression of MIN, MAX, MED (median) and SM (sum
modulo 10) over digits, e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]` = 9.

Files: `basic_{train,val,test}.tsv` in the release's `listops-1000/` folder, found under data_dir at
any level (`sources.find_release_folder`), header `Source\\tTarget`, one expression
per line as whitespace-separated tokens, in the LRA generator's form where every operator application
is also bracketed by parentheses: `( ( ( [MIN 4 ) 7 ) ] )`.

Tokens have fixed ids (`VOCAB`), never built from the data. The parentheses repeat the structure that
the operators and `]` already give and triple the length, so by default they are dropped: sequences are
then as long as the LRA generator counts them (500-2000, which `max_length` 2000 holds).

`generate` writes new files of the same distribution and format, seeded, with a `generator.json`
beside them that records how; `prepare` generates only into an empty or absent data_dir and never
stands in for files the user has.
"""

import hashlib
import json
import os
import random
import shutil

import numpy as np
from absl import logging

from lra.data import sources

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = ("<pad>", *"0123456789", *OPERATORS, END, "(", ")")
TOKEN_IDS = {token: index for index, token in enumerate(VOCAB)}
SPLIT_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = "Source\tTarget"
SUBDIR = "listops-1000"
HOW_TO_OBTAIN = (f"{sources.LRA_RELEASE}, or write new files with "
                 "`lra.data.listops.generate(data_dir, ...)` (`python -m lra.train` does so itself "
                 "when data_dir is empty or absent)")

_OPERATOR_BYTES = tuple((op.encode(), bytes([1 + i])) for i, op in enumerate(OPERATORS))


def _byte_ids() -> np.ndarray:
  """uint8 [256]: id of each one-byte token (operators as bytes 1-4), 255 for any other byte."""
  table = np.full(256, 255, np.uint8)
  for token, index in TOKEN_IDS.items():
    if len(token) == 1:
      table[ord(token)] = index
  for op, byte in _OPERATOR_BYTES:
    table[byte[0]] = TOKEN_IDS[op.decode()]
  return table


_BYTE_IDS = _byte_ids()


GENERATOR_FILE = "generator.json"
_PARTIAL = ".listops-1000.partial"  # where `generate` writes before renaming the folder into place


def find_folder(data_dir) -> str:
  """The folder holding the ListOps split files: `<data_dir>/listops-1000`,
  `<data_dir>/lra_release/listops-1000` or data_dir itself. MissingDataError if there is none."""
  return sources.find_release_folder(data_dir, SUBDIR, SPLIT_FILES.values(), "ListOps files")


def generation_options(*, generate_train: int, generate_eval: int, min_length: int,
                       max_length: int, generate_seed: int) -> dict:
  """The arguments of `generate` for the task options of a config."""
  return dict(num_train=generate_train, num_val=generate_eval, num_test=generate_eval,
              seed=generate_seed, min_length=min_length, max_length=max_length)


def needs_generation(data_dir, options: dict) -> bool:
  """Whether `prepare` would generate: no ListOps files under data_dir, and data_dir absent or empty.

  Raises MissingDataError if data_dir holds other files (files in an unexpected place must not be
  replaced by generated data), and ValueError if it holds a generated set made with other options.
  """
  try:
    folder = find_folder(data_dir)
  except sources.MissingDataError as error:
    present = [] if not os.path.isdir(data_dir) else [
        name for name in os.listdir(data_dir) if name != _PARTIAL]
    if not present:
      return True
    raise sources.MissingDataError(
        f"{error} data_dir holds other files ({', '.join(sorted(present)[:5])}), so no data is "
        "generated in their place: point --config.data_dir at the folder with basic_train.tsv, "
        "basic_val.tsv and basic_test.tsv (or a folder above it), or at an empty or absent "
        "directory to generate a synthetic ListOps set there.") from None
  recorded = read_generator_record(folder)
  if recorded is not None and recorded != _record(options):
    changed = sorted(k for k in set(recorded) | set(_record(options))
                     if recorded.get(k) != _record(options).get(k))
    raise ValueError(
        f"{folder} holds ListOps data generated with other options ("
        + ", ".join(f"{k}: {recorded.get(k)!r} there, {_record(options).get(k)!r} now"
                    for k in changed)
        + "); use another --config.data_dir, or the options it was generated with.")
  return False


def prepare(data_dir, options: dict) -> bool:
  """Generates ListOps into `<data_dir>/listops-1000/` when `needs_generation`; returns whether it
  did. `options`: `generation_options(...)`."""
  if not needs_generation(data_dir, options):
    return False
  logging.warning("No ListOps files under %s (looked in listops-1000/, lra_release/listops-1000/ "
                  "and the folder itself): GENERATING a synthetic ListOps set there with %s. "
                  "Results on it are not results on the LRA release.", data_dir, options)
  generate(data_dir, **options)
  return True


def read_generator_record(folder) -> dict | None:
  path = os.path.join(folder, GENERATOR_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _record(options: dict) -> dict:
  return {"generator": "lra.data.listops.generate", "max_depth": 10, "max_args": 10, **options}


def split_path(folder, split: str) -> str:
  return os.path.join(folder, SPLIT_FILES[split])


def tokenize(source: str | bytes, parentheses: bool = False) -> np.ndarray:
  """Token ids (uint8 [T]) of one expression; ValueError on a token outside `VOCAB`."""
  data = source.encode() if isinstance(source, str) else source
  # Each operator becomes one control byte, so the line is tokenised by C-level bytes operations.
  if len(data.translate(None, bytes(range(1, 1 + len(OPERATORS))))) == len(data):
    mapped = data
    for op, byte in _OPERATOR_BYTES:
      mapped = mapped.replace(op, byte)
    tokens = mapped.split()
    joined = b"".join(tokens)
    if len(joined) == len(tokens):
      ids = _BYTE_IDS[np.frombuffer(joined, np.uint8)]
      if not np.any(ids == 255):
        return ids if parentheses else ids[ids < TOKEN_IDS["("]]
  unknown = next(token for token in data.split()
                 if token.decode(errors="replace") not in VOCAB[1:])
  raise ValueError(f"token {unknown.decode(errors='replace')[:20]!r} is not in the ListOps "
                   f"vocabulary {VOCAB[1:]}")


def read_tsv(path, parentheses: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
  """(token ids per example, targets int32 [N]) of one ListOps TSV file."""
  if not os.path.exists(path):
    raise sources.missing(path, "a ListOps TSV file (header `Source\\tTarget`)", HOW_TO_OBTAIN)
  sequences, targets = [], []
  with open(path, "rb") as f:
    header = f.readline().rstrip(b"\r\n").decode(errors="replace")
    if header != HEADER:
      raise sources.malformed(path, "line 1", f"the header {HEADER!r}", repr(header[:80]),
                              HOW_TO_OBTAIN)
    for where, fields in sources.tsv_records(f, path, "Source, Target", HOW_TO_OBTAIN,
                                             first_line=2):
      target = fields[1].strip()
      if target not in [str(d).encode() for d in range(10)]:
        raise sources.malformed(path, where, "a Target digit 0-9", repr(target.decode()[:20]),
                                HOW_TO_OBTAIN)
      try:
        sequences.append(tokenize(fields[0], parentheses))
      except ValueError as error:
        raise sources.malformed(path, where, "Source tokens from the ListOps vocabulary",
                                str(error), HOW_TO_OBTAIN) from None
      targets.append(int(target))
  if not targets:
    raise sources.malformed(path, "line 2", "at least one example", "none", HOW_TO_OBTAIN)
  return sequences, np.asarray(targets, np.int32)


def load(data_dir, *, max_length: int, parentheses: bool = False) -> sources.TaskData:
  """The LRA ListOps splits (validation = basic_val.tsv), sequences truncated to max_length."""
  folder = find_folder(data_dir)
  splits = {}
  for split in SPLIT_FILES:
    path = split_path(folder, split)
    sequences, targets = read_tsv(path, parentheses)
    truncated = sum(len(s) > max_length for s in sequences)
    if truncated:
      logging.warning("%s: %d of %d expressions are longer than max_length=%d and are truncated.",
                      path, truncated, len(sequences), max_length)
    splits[split] = sources.SequenceSource(
        sources.Ragged(sequences), {"inputs": np.arange(len(sequences))}, targets,
        max_length=max_length, shift=0)
  data = {"files": sources.file_records(split_path(folder, split) for split in SPLIT_FILES)}
  generator = read_generator_record(folder)
  if generator is not None:
    data.update(generated=True, generator=generator)
  return sources.TaskData(vocab_size=len(VOCAB), num_classes=10, dual=False, has_padding=True,
                          splits=splits, data=data)


def evaluate(source: str) -> int:
  """The value of an expression given as tokens (parentheses optional), parsed with a stack."""
  stack = [[]]
  for token in source.split():
    if token in ("(", ")"):
      continue
    if token in OPERATORS:
      stack.append([token])
    elif token == END:
      op, *args = stack.pop()
      if not args:
        raise ValueError(f"operator {op} without arguments in {source[:80]!r}")
      stack[-1].append(apply(op, args))
    elif token.isdigit() and len(token) == 1:
      stack[-1].append(int(token))
    else:
      raise ValueError(f"token {token!r} is not in the ListOps vocabulary")
  if len(stack) != 1 or len(stack[0]) != 1:
    raise ValueError(f"unbalanced expression {source[:80]!r}")
  return stack[0][0]


def apply(op: str, args: list[int]) -> int:
  """One operator on its digit arguments; MED of an even count is the floor of the mean of the
  middle two (the LRA generator's int(np.median))."""
  if op == "[MIN":
    return min(args)
  if op == "[MAX":
    return max(args)
  if op == "[SM":
    return sum(args) % 10
  if op == "[MED":
    ordered = sorted(args)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
  raise ValueError(f"unknown operator {op!r}")


def _random_tree(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: int):
  """(tree, length) of the LRA distribution, or None once length exceeds `budget` (such a tree would
  be rejected). A tree is a digit or (operator index, [subtrees]); length counts digits, operators
  and `]`: a node at depth < max_depth is an operator with probability 1/4, with 2..max_args
  arguments. Uniform integers are drawn as int(random() * n), twice as fast as randrange."""
  if depth >= max_depth or rng.random() > 0.25:
    return int(rng.random() * 10), 1
  num_args = 2 + int(rng.random() * (max_args - 1))
  length, args = 2, []
  for _ in range(num_args):
    child = _random_tree(rng, depth + 1, max_depth, max_args, budget - length)
    if child is None:
      return None
    args.append(child[0])
    length += child[1]
    if length > budget:
      return None
  return (int(rng.random() * len(OPERATORS)), args), length


def _value(tree) -> int:
  if isinstance(tree, int):
    return tree
  op, args = tree
  return apply(OPERATORS[op], [_value(arg) for arg in args])


def _tokens(tree, out: list[str]):
  """Appends the LRA text form: operator applications nested in parentheses, one per argument."""
  if isinstance(tree, int):
    out.append(str(tree))
    return
  op, args = tree
  out.extend(["("] * (len(args) + 1))
  out.append(OPERATORS[op])
  for arg in args:
    _tokens(arg, out)
    out.append(")")
  out.extend([END, ")"])


def generate(directory, num_train: int, num_val: int, num_test: int, seed: int = 0,
             min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
             max_args: int = 10):
  """Writes `<directory>/listops-1000/basic_{train,val,test}.tsv` in the LRA format, and
  `generator.json` with these arguments.

  The LRA generator's distribution: trees of depth <= max_depth with 2..max_args arguments per
  operator, kept when min_length < length < max_length (length without parentheses) and distinct
  from every earlier one. Deterministic given `seed`. The files are written in a hidden folder that
  is renamed into place once complete, so an interrupted run leaves no partial set behind.
  """
  if not 0 <= min_length < max_length - 1:
    raise ValueError(f"min_length={min_length}, max_length={max_length}: expected "
                     "0 <= min_length < max_length - 1")
  out_dir = os.path.join(directory, SUBDIR)
  if os.path.exists(out_dir):
    raise FileExistsError(f"{out_dir} exists; generate writes only a new ListOps folder")
  partial = os.path.join(directory, _PARTIAL)
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  rng = random.Random(seed)
  seen = set()
  counts = {"train": num_train, "validation": num_val, "test": num_test}
  for split, count in counts.items():
    with open(split_path(partial, split), "w") as f:
      f.write(HEADER + "\n")
      written = 0
      while written < count:
        sample = _random_tree(rng, 1, max_depth, max_args, max_length - 1)
        if sample is None or sample[1] <= min_length:
          continue
        tokens = []
        _tokens(sample[0], tokens)
        text = " ".join(tokens)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
          continue
        seen.add(digest)
        f.write(f"{text}\t{_value(sample[0])}\n")
        written += 1
    logging.info("Generated %d ListOps %s examples.", count, split)
  options = dict(num_train=num_train, num_val=num_val, num_test=num_test, seed=seed,
                 min_length=min_length, max_length=max_length)
  record = {**_record(options), "max_depth": max_depth, "max_args": max_args}
  with open(os.path.join(partial, GENERATOR_FILE), "w") as f:
    json.dump(record, f, indent=2)
  os.rename(partial, out_dir)
