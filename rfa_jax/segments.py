"""Packed sequences: several sequences (segments) in one row, told apart by `segment_ids`.

`segment_ids: [batch, length]` int, 0 = padding, equal ids = one sequence; for the causal and gated forms
each sequence is one run of positions, padding aside (as packing lays them out). Query i attends to key j
only when both carry the same non-zero id; a packed row gives at every real token what its sequence
gives alone.

- Causal forms restart the state (S, z) where a sequence starts (`restarts`): a decay of exactly 0
  across the boundary, applied as a mask, never as exp(-inf). Bidirectional gating restarts both of
  its passes the same way (the backward one on the reversed row).
- Padded queries (id 0) output 0 in every form.
- Non-causal and cross attention sum each query's own segment, in any layout of ids.
  Self-attention (`packed_noncausal`): a stable sort by id makes every sequence one run, where a
  forward and a reverse pass restarted at the sequences' edges share each chunk's scores
  (`within_runs`), over L tokens. Cross attention (`grouped`): keys and queries are sorted by (id,
  key before query), so that every query follows the keys of its segment; one causal chunked pass
  that restarts where the id changes then gives each query its segment's sum (over Lq + Lk
  tokens). Both linear in length, never an L x L mask.
"""

import jax
import jax.numpy as jnp
import numpy as np

from rfa_jax.causal import bidirectional_sums, chunked_sums
from rfa_jax.normalizer import normalize


def restarts(segment_ids):
  """[B, L] ids -> [B, L] bool: True where a sequence starts after an earlier one, i.e. a non-zero id
  that differs from the last non-zero id before it. Padding (id 0) restarts nothing: its keys add
  nothing and its queries' outputs are set to 0 (`zero_padding`), so a sequence may hold padding. The
  first sequence of a row continues whatever state it is given."""
  position = jnp.arange(segment_ids.shape[1])
  last_real = jax.lax.cummax(jnp.where(segment_ids != 0, position, -1), axis=1)  # at or before i
  before = jnp.concatenate([jnp.full_like(last_real[:, :1], -1), last_real[:, :-1]], axis=1)
  previous = jnp.take_along_axis(segment_ids, jnp.maximum(before, 0), axis=1)
  return (segment_ids != 0) & (before >= 0) & (segment_ids != previous)


def reverse_restarts(segment_ids):
  """[B, L] ids -> [B, L] bool: True where a reverse pass restarts after a token, i.e. the
  `restarts` of the reversed row, reversed back (a sequence's last token, but the row's last)."""
  return jnp.flip(restarts(jnp.flip(segment_ids, axis=1)), axis=1)


def one_run_each(segment_ids):
  """[B, L] -> [B] bool: every non-zero id occupies one run of positions (padding aside), as the
  causal forms need: the number of runs (`restarts` + 1) equals the number of distinct ids."""
  real = segment_ids != 0
  runs = jnp.sum(restarts(segment_ids), axis=1) + jnp.any(real, axis=1)
  ordered = jnp.sort(segment_ids, axis=1)
  distinct = jnp.sum((ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] != 0), axis=1)
  return runs == distinct + (ordered[:, 0] != 0)


def zero_padding(out, segment_ids):
  """out: [B, L, H, dv] with the rows of padded queries (id 0) set to 0."""
  return out if segment_ids is None else jnp.where((segment_ids != 0)[:, :, None, None], out, 0)


def last_sequence(segment_ids):
  """[B, L] -> [B]: the id of each row's last non-zero position (its first id when there is none)."""
  position = jnp.arange(segment_ids.shape[1])
  last = jnp.max(jnp.where(segment_ids != 0, position, 0), axis=1)
  return jnp.take_along_axis(segment_ids, last[:, None], axis=1)[:, 0]


def key_mask_of(key_mask, segment_ids):
  """The key mask with padding (id 0) folded in: [B, L] bool, or key_mask when segment_ids is None."""
  if segment_ids is None:
    return key_mask
  real = segment_ids != 0
  return real if key_mask is None else key_mask & real


def grouped(phi_q, query_ids, phi_k, v, key_ids, key_weight=None, *, chunk_size, normalizer="floor",
            inter_chunk="scan"):
  """out_i = normalize(sum_{j: id_j = id_i} phi_q_i . phi_k_j v_j, sum_{same j} phi_q_i . phi_k_j).

  phi_q: [B, H, Lq, F], query_ids: [B, Lq]; phi_k: [B, H, Lk, F], v: [B, H, Lk, dv], key_ids: [B, Lk],
  key_weight: [B, H or 1, Lk] or None (0 for padded keys). Any layout of ids (they need not be
  contiguous). Returns [B, H, Lq, dv] float32.
  """
  batch, q_len = query_ids.shape
  k_len = key_ids.shape[1]
  ids = jnp.concatenate([key_ids, query_ids], axis=1).astype(jnp.int32)
  is_query = jnp.concatenate([jnp.zeros((batch, k_len), jnp.int32),
                              jnp.ones((batch, q_len), jnp.int32)], axis=1)
  position = jnp.broadcast_to(jnp.arange(k_len + q_len, dtype=jnp.int32), ids.shape)
  sorted_ids, _, order = jax.lax.sort((ids, is_query, position), dimension=1, num_keys=2)

  def merged(keys_part, queries_part):  # keys' rows then queries' rows, in sorted order
    return _along_length(jnp.concatenate([keys_part, queries_part], axis=2), order)

  zeros = lambda length, x: jnp.zeros(x.shape[:2] + (length,) + x.shape[3:], jnp.float32)
  numerator, denominator, _ = chunked_sums(
      merged(zeros(k_len, phi_q), phi_q), merged(phi_k, zeros(q_len, phi_k)),
      merged(v.astype(jnp.float32), zeros(q_len, v)),
      None if key_weight is None else merged(key_weight, zeros(q_len, key_weight)),
      reset=restarts(sorted_ids), chunk_size=chunk_size, inter_chunk=inter_chunk)
  where = jnp.argsort(order, axis=1)[:, k_len:]  # each query's place in the sorted order
  return normalize(_along_length(numerator, where), _along_length(denominator, where), normalizer)


def within_runs(phi_q, phi_k, v, segment_ids, key_weight, *, chunk_size, normalizer="floor",
                inter_chunk="scan"):
  """`grouped` for self-attention whose every id is one run of positions (`one_run_each`; padding may
  sit inside a run): num_i = sum_{j<=i, same run} + sum_{j>=i, same run} - (j = i), the forward and
  reverse passes restarted at the runs' edges and sharing each chunk's C x C scores
  (`bidirectional_sums` without decay); the key j = i, counted by both, is taken out once.
  phi_q, phi_k: [B, H, L, F], v: [B, H, L, dv], segment_ids: [B, L], key_weight: [B, H or 1, L] (0 for
  padded keys). Returns [B, H, L, dv] float32."""
  numerator, denominator = bidirectional_sums(
      phi_q, phi_k, v, key_weight, None, key_weight, None, chunk_size=chunk_size,
      reset=restarts(segment_ids), reverse_reset=reverse_restarts(segment_ids),
      inter_chunk=inter_chunk)
  diagonal = jnp.einsum("bhif,bhif->bhi", phi_q, phi_k) * key_weight
  return normalize(numerator - diagonal[..., None] * v.astype(jnp.float32),
                   denominator - diagonal, normalizer)


def packed_noncausal(phi_q, phi_k, v, segment_ids, key_weight, **options):
  """Non-causal self-attention of packed rows, any layout of ids (options: `within_runs`'s): a stable
  sort of each row's tokens by id makes every sequence one run (a row already so laid out keeps its
  order), `within_runs` sums them, and the outputs go back to their places. Shapes as in
  `within_runs`; returns [B, H, L, dv] float32."""
  order = jnp.argsort(segment_ids, axis=1, stable=True)
  to_runs = lambda x: _along_length(x, order)
  out = within_runs(to_runs(phi_q), to_runs(phi_k), to_runs(v),
                    jnp.take_along_axis(segment_ids, order, axis=1),
                    to_runs(key_weight), **options)
  return _along_length(out, jnp.argsort(order, axis=1))


def _along_length(x, index):
  """x: [B, H, L, ...] at positions index: [B, L'] of each row."""
  return jnp.take_along_axis(x, index.reshape(index.shape[0], 1, -1, *(1,) * (x.ndim - 3)), axis=2)


def check_segment_ids(name, segment_ids, batch, length, *, contiguous):
  """Shape [batch, length] and an integer dtype; with `contiguous` (causal and gated forms), when the ids are
  concrete, every non-zero id must occupy one run of positions."""
  if np.shape(segment_ids) != (batch, length):
    raise ValueError(f"{name} has shape {tuple(np.shape(segment_ids))}; expected [batch={batch}, "
                     f"length={length}] (int, 0 = padding, equal ids = one sequence)")
  if not jnp.issubdtype(jnp.result_type(segment_ids), jnp.integer):
    raise ValueError(f"{name} has dtype {jnp.result_type(segment_ids)}; expected integers "
                     "(0 = padding, equal ids = one sequence)")
  if not contiguous or isinstance(segment_ids, jax.core.Tracer):
    return
  with jax.ensure_compile_time_eval():  # concrete ids give concrete answers inside jit too
    bad = np.flatnonzero(~np.asarray(one_run_each(jnp.asarray(segment_ids))))
  if bad.size:
    raise ValueError(f"{name}: in batch row {int(bad[0])} an id occurs in separate runs of positions "
                     "(another id between them); a causal or gated form restarts its state where a new "
                     "id starts, so each sequence must be one run (padding may sit inside it): renumber "
                     "the runs")
