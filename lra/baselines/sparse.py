"""Sparse Transformer attention (Child et al., 2019), in the merged form: every head attends to the
union of both halves of a factorised pattern with stride l = block_size.

- pattern="fixed": (A) the keys of the query's own block of l tokens and (B) the last
  `summary_size` (c) tokens of every other block. O(L (l + L c / l) d) time.
- pattern="strided": (A) the keys within distance l (|i - j| < l) and (B) the keys at a multiple
  of l from the query ((i - j) mod l = 0). O(L (3 l + L / l) d) time.

The first `num_global_tokens` tokens (the CLS token) attend to and are attended by every token, as
in LRA with CLS pooling. causal=True keeps only keys j <= i in every part. LRA built these patterns
as a dense L x L mask (quadratic cost) and always intersected them with the causal triangle, also
in its bidirectional encoders; here causal=False gives the bidirectional patterns at sparse cost.
"""

import jax.numpy as jnp
import numpy as np

from lra.baselines.common import (Attention, block_positions, from_blocks, full_rows, integer,
                                  joint_softmax, logits, mix, neighbours, one_of, to_blocks)


class SparseAttention(Attention):
  """Options: pattern ("fixed" | "strided"), block_size (128), summary_size (32, fixed only),
  num_global_tokens (1). Defaults: the merged fixed pattern LRA used."""

  def __init__(self, *, pattern: str = "fixed", block_size: int = 128, summary_size: int = 32,
               num_global_tokens: int = 1, **common):
    super().__init__(**common)
    self.pattern = one_of("pattern", pattern, ("fixed", "strided"))
    self.block_size = integer("block_size", block_size)
    self.summary_size = integer("summary_size", summary_size)
    self.num_global_tokens = integer("num_global_tokens", num_global_tokens, minimum=0)

  def attend(self, q, k, v, mask):
    length = q.shape[1]
    size, num_global = min(self.block_size, length), min(self.num_global_tokens, length)
    qb, kb, vb, mb = (to_blocks(x, size) for x in (q, k, v, mask))
    positions = block_positions(qb.shape[1], size)  # [N, C]
    regular = mb & (positions >= num_global)  # [B, N, C]: keys that the global part does not hold
    part = self._fixed if self.pattern == "fixed" else self._strided
    scores, visible, combine = part(qb, kb, vb, regular, positions)
    if num_global:
      kg, vg = k[:, None, :num_global], v[:, None, :num_global]  # [B, 1, G, H, d]
      seen = mask[:, None, None, None, :num_global]
      if self.causal:
        seen = seen & (np.arange(num_global) <= positions[:, None, :, None])
      scores, visible = scores + [logits(qb, kg)], visible + [seen]
    weights = joint_softmax(scores, visible)
    out = combine(weights)
    if num_global:
      out = out + mix(weights[-1], vg)
    out = from_blocks(out, length).astype(v.dtype)
    return full_rows(out, q, k, v, mask, self.causal, range(num_global))

  def _fixed(self, qb, kb, vb, regular, positions):
    """(A) own block, (B) the last c tokens of every other block (earlier blocks when causal)."""
    batch, num_blocks, size = regular.shape
    c = min(self.summary_size, size)

    def summaries_of(x):  # the last c tokens of every block: [B, N, C, ...] -> [B, 1, N c, ...]
      return x[:, :, size - c:].reshape(batch, 1, num_blocks * c, *x.shape[3:])

    ks, vs, summary_ok = summaries_of(kb), summaries_of(vb), summaries_of(regular)
    summary_block = np.repeat(np.arange(num_blocks), c)
    own = regular[:, :, None, None, :]
    other = summary_block != np.arange(num_blocks)[:, None]  # [N, N c]
    if self.causal:
      own = own & np.tri(size, dtype=bool)
      other = summary_block < np.arange(num_blocks)[:, None]
    summaries = summary_ok[:, :, None, None, :] & other[:, None, None, :]
    scores = [logits(qb, kb), logits(qb, ks)]
    return scores, [own, summaries], lambda w: mix(w[0], vb) + mix(w[1], vs)

  def _strided(self, qb, kb, vb, regular, positions):
    """(A) |i - j| < l, (B) same offset r in every other block m (m < n when causal)."""
    num_blocks, size = positions.shape
    offsets = (-1, 0) if self.causal else (-1, 0, 1)
    near_positions = neighbours(positions[None], offsets)[0]  # [N, K]
    distance = positions[:, :, None] - near_positions[:, None, :]  # [N, C, K]: i - j
    band = (np.abs(distance) < size) & ((distance >= 0) if self.causal else True)
    near = neighbours(regular, offsets)[:, :, None, None, :] & band[:, None]
    blocks = np.arange(num_blocks)
    if self.causal:
      other = blocks[None, :] < blocks[:, None]
    else:
      other = blocks[None, :] != blocks[:, None]
    column = jnp.swapaxes(regular, 1, 2)[:, None, None] & other[:, None, None, :]  # [B, N, 1, C, M]
    strided = jnp.einsum("bnrhd,bmrhd->bnhrm", qb, kb,
                         preferred_element_type=jnp.float32) * qb.shape[-1] ** -0.5
    scores = [logits(qb, neighbours(kb, offsets)), strided]

    def combine(w):
      return (mix(w[0], neighbours(vb, offsets))
              + jnp.einsum("bnhrm,bmrhd->bnrhd", w[1].astype(vb.dtype), vb,
                           preferred_element_type=jnp.float32))

    return scores, [near, column], combine
