"""Local attention: the sequence is cut into non-overlapping blocks of `block_size` tokens and each
query attends only within its block (LRA default block 50). O(L C d) time, O(L C) memory for
blocks of C tokens. A block of at least L tokens is exact softmax attention."""

import numpy as np

from lra.baselines.common import (Attention, dot_product_attention, from_blocks, integer,
                                  to_blocks)


class LocalAttention(Attention):
  """Options: block_size (50). Causal: the block's keys up to the query."""

  def __init__(self, *, block_size: int = 50, **common):
    super().__init__(**common)
    self.block_size = integer("block_size", block_size)

  def attend(self, q, k, v, mask):
    length = q.shape[1]
    size = min(self.block_size, length)
    qb, kb, vb, mb = (to_blocks(x, size) for x in (q, k, v, mask))  # [B, N, C, ...]
    visible = mb[:, :, None, None, :]  # [B, N, H, Cq, Ck]
    if self.causal:
      visible = visible & np.tri(size, dtype=bool)
    return from_blocks(dot_product_attention(qb, kb, vb, visible), length)
