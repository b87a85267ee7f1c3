"""Reading `nnx.MultiHeadAttention`-style masks as what RFA can honour: key padding (+ causality).

RFA folds every visible key into one state per (batch, head), so the only patterns it can apply are a
query-independent key padding mask and, for causal attention, "key j is visible to query i iff j <= i".
A mask `[batch|1, heads|1, q_len|1, kv_len]` (True = may attend; as `nnx.make_attention_mask`,
`make_causal_mask` and `combine_masks` build them) is read as:

- the key padding: key j is kept when some query (of some head) may see it;
- representable when every query row, restricted to the keys that causality lets it see (all keys when
  not causal), either is all False (a padded query: its output is unspecified, as with softmax attention,
  which averages all keys there) or equals that key padding restricted the same way.

`[batch, kv_len]` masks are key padding masks as they are.
"""

import jax
import jax.numpy as jnp
import numpy as np

ACCEPTED = ("[batch, kv_len] or [batch|1, heads|1, q_len|1, kv_len] (True = may attend, as built by "
            "nnx.make_attention_mask / make_causal_mask / combine_masks)")


def read_mask(mask, *, batch, num_heads, q_len, kv_len, causal):
  """Returns (key_mask: [batch, kv_len] bool, representable: [batch] bool or None when it needs no
  check). Shapes are checked here; the pattern check is in-graph, see `check_representable`."""
  if mask is None:
    return None, None
  shape = np.shape(mask)
  if len(shape) == 2 and shape[0] in (1, batch) and shape[1] == kv_len:
    return jnp.broadcast_to(jnp.asarray(mask).astype(bool), (batch, kv_len)), None
  if (len(shape) != 4 or shape[0] not in (1, batch) or shape[1] not in (1, num_heads)
      or shape[2] not in (1, q_len) or shape[3] not in (1, kv_len)):
    raise ValueError(f"mask has shape {shape}; expected {ACCEPTED} with batch={batch}, "
                     f"heads={num_heads}, q_len={q_len}, kv_len={kv_len}")
  mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), shape[:3] + (kv_len,))
  if shape[2] == 1:  # one row for every query: no causal pattern can hide in it
    causal = False
  visible = mask & _past(q_len, kv_len) if causal else mask
  key_mask = jnp.any(visible, axis=(1, 2))  # [batch|1, kv_len]
  if shape[1] == 1 and shape[2] == 1:
    return jnp.broadcast_to(key_mask, (batch, kv_len)), None
  expected = key_mask[:, None, None, :] & _past(q_len, kv_len) if causal else key_mask[:, None, None]
  padded_query = ~jnp.any(visible, axis=-1, keepdims=True)
  representable = jnp.all(padded_query | (visible == expected), axis=(1, 2, 3))
  return (jnp.broadcast_to(key_mask, (batch, kv_len)),
          jnp.broadcast_to(representable, (batch,)))


def _past(q_len, kv_len):
  return jnp.tril(jnp.ones((q_len, kv_len), bool))


def check_representable(mask, representable, *, causal, **shapes):
  """Raises ValueError when a concrete mask is not representable (see the module docstring); a traced
  mask cannot raise, so the caller poisons the output rows of such batch elements with NaN instead."""
  if representable is None or isinstance(representable, jax.core.Tracer):
    return
  bad = np.flatnonzero(~np.asarray(representable))
  if not bad.size:
    return
  if not causal:
    _, as_causal = read_mask(mask, causal=True, **shapes)
    if np.asarray(as_causal).all():
      raise ValueError("mask is causal (query i sees only keys j <= i) but the attention is not: "
                       "construct RFAAttention(..., causal=True) or call it with is_causal=True; RFA "
                       "takes causality from that flag and only key padding from the mask")
  raise ValueError(
      f"mask of shape {np.shape(mask)} (batch element {int(bad[0])}) is an attention pattern that RFA "
      "cannot apply: RFA honours a query-independent key padding mask" +
      (" together with causality" if causal else "") + " (rows of padded queries may be all False); "
      "per-query or per-head patterns (segment/block masks, local windows) are rejected")
