"""Reformer LSH attention (Kitaev et al., 2020) with a shared query-key projection.

In each of `num_hashes` rounds, token i gets the bucket argmax([q_i R, -q_i R]) of a random rotation
R: [d, num_buckets / 2] per head; tokens are sorted by (bucket, position), cut into chunks of
`chunk_size` tokens, and each chunk attends to itself and the previous chunk. Keys are the queries
rescaled to length sqrt(d) (trax's `length_normalized`); a token attends to itself only when it sees
nothing else (self logit -1e5, as in trax). Rounds are combined with their log-sum-exp weights.
O(n_h L log L) for the sort and O(n_h L 2 c d) for attention.

Padding: padded tokens get one extra bucket after every round's buckets, so they sort behind all
valid tokens, and are masked as keys; valid tokens meet the same valid tokens whatever the padding
holds. Rotations come from the random stream: fixed in evaluation, redrawn at every training call
when `redraw`. LRA hashed with a fixed seed, ignored padding and cut the sorted sequence into
n_h * num_buckets chunks (its chunk_len was unused). No causal form: which earlier tokens share a
chunk with token i depends on the buckets of later tokens.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lra.baselines.common import (MASKED_LOGIT, Attention, from_blocks, integer, masked_softmax,
                                  neighbours, to_blocks)

SELF_LOGIT = -1e5


class ReformerAttention(Attention):
  """Options: num_hashes (1), num_buckets (10, even), chunk_size (10), redraw (True)."""

  projections = ("query", "value")
  causal_unsupported = ("sorting by hash lets later tokens decide which earlier tokens share a "
                        "chunk")

  def __init__(self, *, num_hashes: int = 1, num_buckets: int = 10, chunk_size: int = 10,
               redraw: bool = True, **common):
    super().__init__(**common)
    self.num_hashes = integer("num_hashes", num_hashes)
    self.num_buckets = integer("num_buckets", num_buckets, minimum=2)
    if self.num_buckets % 2:
      raise ValueError(f"num_buckets={num_buckets!r}; expected an even number")
    self.chunk_size = integer("chunk_size", chunk_size)
    self.init_random(common["rngs"], redraw)

  def draw(self, key):
    shape = (self.num_hashes, self.num_heads, self.head_dim, self.num_buckets // 2)
    return jax.random.normal(key, shape)

  def attend(self, q, k, v, mask):
    del k  # the keys are the rescaled queries
    batch, length, heads, head_dim = q.shape
    total = self.num_hashes * length
    order = self._sort_order(q, mask)  # [B H, n_h L]: (round, token) at each sorted place
    positions = order % length
    chunk = min(self.chunk_size, total)

    def sort(x):  # [B, L, H, ...] -> [B H, n_h L, ...] in sorted order
      x = jnp.moveaxis(x, 2, 1).reshape(batch * heads, length, *x.shape[3:])
      return jnp.take_along_axis(x, positions.reshape(positions.shape + (1,) * (x.ndim - 2)), 1)

    def look_back(x):  # [B H, n_h L, ...] -> chunk and its predecessor: [B H, M, 2 c, ...]
      return neighbours(to_blocks(x, chunk), (-1, 0))

    sq, sv = sort(q), sort(v)
    valid = sort(jnp.broadcast_to(mask[:, :, None], (batch, length, heads)))
    sk = sq * jax.lax.rsqrt(jnp.mean(jnp.square(sq), -1, keepdims=True) + 1e-6)
    scores = jnp.einsum("nmqd,nmkd->nmqk", to_blocks(sq, chunk), look_back(sk),
                        preferred_element_type=jnp.float32) * head_dim ** -0.5
    is_self = to_blocks(positions, chunk)[..., None] == look_back(positions)[..., None, :]
    scores = jnp.where(is_self, SELF_LOGIT, scores)
    visible = look_back(valid)[:, :, None, :]
    out = jnp.einsum("nmqk,nmkd->nmqd", masked_softmax(scores, visible).astype(sv.dtype),
                     look_back(sv), preferred_element_type=jnp.float32)
    lse = jax.nn.logsumexp(jnp.where(visible, scores, MASKED_LOGIT), -1)
    undo = jnp.argsort(order, -1)
    out = jnp.take_along_axis(from_blocks(out, total), undo[..., None], 1)
    lse = jnp.take_along_axis(from_blocks(lse, total), undo, 1)
    out = out.reshape(batch, heads, self.num_hashes, length, head_dim)
    weights = jax.nn.softmax(lse.reshape(batch, heads, self.num_hashes, length), axis=2)
    return jnp.moveaxis(jnp.sum(out * weights[..., None], 2), 1, 2).astype(v.dtype)

  def _sort_order(self, q, mask):
    """[B H, n_h L] indices r L + i sorted by (round r's bucket of token i, i); padded tokens get
    bucket n_h num_buckets, behind every valid token of every round."""
    batch, length, heads = q.shape[:3]
    rotated = jnp.einsum("blhd,rhdk->bhrlk", jax.lax.stop_gradient(q), self.random())
    buckets = jnp.argmax(jnp.concatenate([rotated, -rotated], -1), -1)  # [B, H, n_h, L]
    buckets = buckets + self.num_buckets * np.arange(self.num_hashes)[:, None]
    buckets = jnp.where(mask[:, None, None, :], buckets, self.num_hashes * self.num_buckets)
    sort_key = (buckets * length + np.arange(length)).reshape(batch * heads, -1)
    return jnp.argsort(sort_key, -1)
