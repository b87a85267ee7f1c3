"""Batches of a random-access source with grain: shuffled examples, resumable, sharded by process.

Every process builds the same sequence of global batches (example indices, shuffled with `seed`, a
new permutation each epoch) and reads only its own rows: process p gets rows
[p * B/P, (p + 1) * B/P) of each global batch of B. The global batches are thus the same for any
number of processes, and the iterator state (global batches consumed) is the same on every process.

A batch is {"inputs"... : [B/P, ...], "targets": int32 [B/P], "weights": float32 [B/P]}; weights are
0 on the rows that pad the last batch of a split read once without dropping the remainder.
"""

import functools

import numpy as np

_FINGERPRINT = ("num_examples", "global_batch_size", "seed", "shuffle", "repeat", "drop_remainder")


def _read_rows(source, rows: slice, local_batch_size: int, indices: np.ndarray) -> dict:
  """This process's rows of one global batch of example indices, padded to local_batch_size."""
  examples = [source[int(i)] for i in indices[rows]]
  weights = np.zeros(local_batch_size, np.float32)
  weights[:len(examples)] = 1.0
  if len(examples) < local_batch_size:
    blank = {name: np.zeros_like(value) for name, value in source[0].items()}
    examples += [blank] * (local_batch_size - len(examples))
  batch = {name: np.stack([example[name] for example in examples]) for name in examples[0]}
  batch["weights"] = weights
  return batch


class BatchIterator:
  """Iterator of batches with `get_state()` (a JSON-able dict) and `set_state(state)`."""

  def __init__(self, dataset, fingerprint: dict):
    """`dataset`: a grain.IterDataset of batches."""
    self._iterator = iter(dataset)
    self._fingerprint = fingerprint

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._iterator)

  def get_state(self) -> dict:
    return {**self._fingerprint, "position": self._iterator.get_state()}

  def set_state(self, state: dict):
    """Resumes right after the batch that was last taken when `state` was saved."""
    saved = {key: state.get(key) for key in _FINGERPRINT}
    if saved != self._fingerprint:
      raise ValueError(f"cannot resume this data iterator ({self._fingerprint}) from the state of a "
                       f"different one ({saved}): the data or batch settings changed")
    self._iterator.set_state(state["position"])


def make_batches(source, *, global_batch_size: int, seed: int, shuffle: bool, repeat: bool,
                 process_index: int = 0, process_count: int = 1, drop_remainder: bool = True,
                 num_threads: int = 4) -> BatchIterator:
  """This process's share of each global batch of `source`.

  repeat=True: endless, epochs follow each other (a batch may span two). repeat=False,
  drop_remainder=False: every example exactly once, the last batch padded (weights 0).
  `num_threads` read examples ahead in the background.
  """
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
  if len(source) == 0:
    raise ValueError("the source has no examples")
  import grain  # only reading data needs it: the benchmarks import this module without it
  local_batch_size = global_batch_size // process_count
  indices = grain.MapDataset.range(len(source))
  if shuffle:
    indices = indices.shuffle(seed=seed)
  if repeat:
    indices = indices.repeat()
  rows = slice(process_index * local_batch_size, (process_index + 1) * local_batch_size)
  batches = (indices.batch(global_batch_size, drop_remainder=drop_remainder,
                           batch_fn=np.asarray)
             .map(functools.partial(_read_rows, source, rows, local_batch_size)))
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  fingerprint = dict(num_examples=len(source), global_batch_size=global_batch_size, seed=seed,
                     shuffle=shuffle, repeat=repeat, drop_remainder=drop_remainder)
  return BatchIterator(batches.to_iter_dataset(read_options), fingerprint)
