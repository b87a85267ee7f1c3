"""Reading `nnx.MultiHeadAttention`-style masks as what RFA can honour: key padding, causality and
packed sequences (segments).

RFA folds the visible keys into one state per (batch, head) and sequence, so the patterns it can apply
are a query-independent key padding mask, causality ("key j is visible to query i iff j <= i"), and
block-diagonal segment masks: query i sees key j iff they belong to the same packed sequence. These are
what Flax's lm1b and wmt examples build:

    combine_masks(make_attention_mask(tok > 0, tok > 0), make_causal_mask(tok),
                  make_attention_mask(segmentation, segmentation, jnp.equal))

(without the causal part for an encoder; decoder against encoder segments for cross attention).

A mask `[batch|1, heads|1, q_len, kv_len]` (True = may attend), restricted to the keys that causality
lets each query see, is read on its first head as:

- the key padding: key j is kept when some query (of some head) may see it;
- segments: a query's id is 1 + the position of the first key it sees (0 when it sees none), a key's
  id that of the first query that sees it; in self attention a position's id is its key's id, else
  its query's. Every query of one sequence sees that sequence's first key first, so a sequence gets
  one id; ids need not be contiguous;
- representable when (causal, or `runs` for bidirectional gating: every sequence is one run of
  positions, padding aside, and) every
  query row either is all False (a padded query: its output is unspecified,
  as with softmax attention, which averages all keys there) or equals "kept keys with the query's id"
  (and j <= i when causal). A mask with one row for all queries, `[batch|1, heads|1, 1, kv_len]`, and
  `[batch, kv_len]` masks are key padding masks and have no segments.

A mask whose rows are all one sequence per batch row is `packed` nowhere, and RFA then runs its
unpacked forms.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rfa_jax.segments import one_run_each

ACCEPTED = ("[batch, kv_len] or [batch|1, heads|1, q_len|1, kv_len] (True = may attend, as built by "
            "nnx.make_attention_mask / make_causal_mask / combine_masks)")


class MaskReading(NamedTuple):
  """key_mask: [batch, kv_len] bool. segment_ids: [batch, q_len] (self attention: of queries and keys)
  and key_segment_ids: [batch, kv_len] (cross attention only) int32, or None without segments.
  packed: [batch] bool, the rows holding more than one sequence (None without segments).
  representable: [batch] bool, or None when it needs no check."""
  key_mask: jax.Array | None
  segment_ids: jax.Array | None = None
  key_segment_ids: jax.Array | None = None
  packed: jax.Array | None = None
  representable: jax.Array | None = None


def read_mask(mask, *, batch, num_heads, q_len, kv_len, causal, cross=False,
              runs=False) -> MaskReading:
  """Reads `mask` (see the module docstring). Shapes are checked here; the pattern check is in-graph,
  see `check_representable`. runs: every sequence must be one run of positions (implied by causal)."""
  if mask is None:
    return MaskReading(None)
  shape = np.shape(mask)
  if len(shape) == 2 and shape[0] in (1, batch) and shape[1] == kv_len:
    return MaskReading(jnp.broadcast_to(jnp.asarray(mask).astype(bool), (batch, kv_len)))
  if (len(shape) != 4 or shape[0] not in (1, batch) or shape[1] not in (1, num_heads)
      or shape[2] not in (1, q_len) or shape[3] not in (1, kv_len)):
    raise ValueError(f"mask has shape {shape}; expected {ACCEPTED} with batch={batch}, "
                     f"heads={num_heads}, q_len={q_len}, kv_len={kv_len}")
  mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), shape[:3] + (kv_len,))
  broadcast = lambda x: jnp.broadcast_to(x, (batch,) + x.shape[1:])
  key_mask = jnp.any(mask & _past(q_len, kv_len) if causal and shape[2] > 1 else mask, axis=(1, 2))
  if shape[2] == 1:  # one row for every query: key padding only
    padded_query = ~jnp.any(mask, axis=-1, keepdims=True)
    representable = jnp.all(padded_query | (mask == key_mask[:, None, None]), axis=(1, 2, 3))
    return MaskReading(broadcast(key_mask),
                       representable=None if shape[1] == 1 else broadcast(representable))
  visible = mask & _past(q_len, kv_len) if causal else mask
  query_ids, key_ids = _segments(visible[:, 0])
  if not cross:
    query_ids = key_ids = jnp.where(key_ids != 0, key_ids, query_ids)
  expected = (query_ids[:, :, None] == key_ids[:, None, :]) & (key_ids != 0)[:, None] & key_mask[:, None]
  if causal:
    expected = expected & _past(q_len, kv_len)
  padded_query = ~jnp.any(visible, axis=-1, keepdims=True)
  representable = jnp.all(padded_query | (visible == expected[:, None]), axis=(1, 2, 3))
  if causal or runs:  # the causal and gated forms restart where a new id starts
    representable = representable & one_run_each(query_ids)
  packed = _several(query_ids) | _several(key_ids)
  return MaskReading(broadcast(key_mask), broadcast(query_ids),
                     broadcast(key_ids) if cross else None, broadcast(packed), broadcast(representable))


def _segments(visible):
  """visible: [b, q_len, kv_len] -> query ids [b, q_len], key ids [b, kv_len] (module docstring)."""
  sees = jnp.any(visible, axis=-1)
  query_ids = jnp.where(sees, jnp.argmax(visible, axis=-1) + 1, 0).astype(jnp.int32)
  first_query = jnp.argmax(visible, axis=-2)  # [b, kv_len]
  key_ids = jnp.where(jnp.any(visible, axis=-2), jnp.take_along_axis(query_ids, first_query, -1), 0)
  return query_ids, key_ids.astype(jnp.int32)


def _several(ids):
  """[b, n] -> [b] bool: more than one distinct non-zero id."""
  top = jnp.max(ids, axis=-1, keepdims=True)
  return jnp.any((ids != 0) & (ids != top), axis=-1)


def _past(q_len, kv_len):
  return jnp.tril(jnp.ones((q_len, kv_len), bool))


def check_representable(mask, representable, *, causal, cross=False, runs=False, **shapes):
  """Raises ValueError when a concrete mask is not representable (see the module docstring); a traced
  mask cannot raise, so the caller poisons the output rows of such batch elements with NaN instead."""
  if representable is None or isinstance(representable, jax.core.Tracer):
    return
  bad = np.flatnonzero(~np.asarray(representable))
  if not bad.size:
    return
  if not causal and not cross:
    as_causal = read_mask(mask, causal=True, **shapes).representable
    if np.asarray(as_causal).all():
      raise ValueError("mask is causal (query i sees only keys j <= i) but the attention is not: "
                       "construct RFAAttention(..., causal=True) or call it with is_causal=True; RFA "
                       "takes causality from that flag and key padding and segments from the mask")
  raise ValueError(
      f"mask of shape {np.shape(mask)} (batch element {int(bad[0])}) is an attention pattern that RFA "
      "cannot apply: RFA honours key padding" + (" together with causality" if causal else "") +
      " and block-diagonal packed-sequence (segment) masks (rows of padded queries may be all "
      "False" + ("; each sequence one run of positions, as the gates run along it" if runs and
                 not causal else "") +
      "); other per-query or per-head patterns (local windows, arbitrary masks) are rejected")
