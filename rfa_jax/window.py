"""Exact softmax attention over a window of nearby keys, in blocks: O(L w) time and memory.

Query i sees key j when i - w < j <= i (causal) or |i - j| < w (non-causal), the key mask keeps j and,
with `segment_ids` ([batch, length] int, packed sequences), both carry the same id.
Logits are `scale * q_i . k_j` (scale 1/sqrt(head_dim) by default; q and k as given, not normalised),
softmax in float32 over the visible keys; a query that sees none outputs 0. Shapes as in
`rfa_jax.rfa`: q, k: [batch, length, heads, head_dim], v: [batch, length, heads, value_dim].

The sequence is cut into blocks of w positions; each query block attends to its own block and the one
before it (and, non-causal, the one after), masked to the window, so the logits are
[batch, blocks, heads, w, 2w (3w)] rather than [length, length].
"""

import jax
import jax.numpy as jnp


def window_attention(q, k, v, *, window: int, causal: bool, key_mask=None, scale=None,
                     segment_ids=None):
  """Returns [batch, length, heads, value_dim] (v's dtype); see the module docstring."""
  batch, length, heads, head_dim = q.shape
  scale = head_dim ** -0.5 if scale is None else scale
  blocks = -(-length // window)
  pad = blocks * window - length
  if key_mask is None:
    key_mask = jnp.ones((batch, length), bool)

  def to_blocks(x, before, after):
    """[B, L, ...] -> [B, blocks, (before + 1 + after) * w, ...]: each block with its neighbours."""
    x = jnp.pad(x, [(0, 0), (window * before, pad + window * after)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(batch, blocks + before + after, window, *x.shape[2:])
    return jnp.concatenate([x[:, i:i + blocks] for i in range(before + 1 + after)], axis=2)

  after = 0 if causal else 1
  keys, values, kept = (to_blocks(x, 1, after) for x in (k, v, key_mask))
  queries = to_blocks(q, 0, 0)  # [B, N, w, H, d]
  query_pos = jnp.arange(blocks * window).reshape(blocks, window)
  key_pos = (jnp.arange(blocks)[:, None] - 1) * window + jnp.arange((2 + after) * window)[None]
  gap = query_pos[:, :, None] - key_pos[:, None, :]  # [N, w, keys]: i - j
  in_window = (gap >= 0) & (gap < window) if causal else jnp.abs(gap) < window
  visible = in_window[None, :, None] & kept[:, :, None, None, :]  # [B, N, 1, w, keys]
  if segment_ids is not None:
    same = to_blocks(segment_ids, 0, 0)[..., :, None] == to_blocks(segment_ids, 1, after)[..., None, :]
    visible = visible & same[:, :, None]
  logits = jnp.einsum("bnihd,bnjhd->bnhij", queries, keys, preferred_element_type=jnp.float32)
  logits = jnp.where(visible, logits * scale, -jnp.inf)
  peak = jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True))
  weights = jnp.exp(logits - jnp.where(jnp.isfinite(peak), peak, 0.0))
  weights = weights / jnp.maximum(jnp.sum(weights, -1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  out = jnp.einsum("bnhij,bnjhd->bnihd", weights, values.astype(jnp.float32))
  return out.reshape(batch, blocks * window, heads, -1)[:, :length].astype(v.dtype)
