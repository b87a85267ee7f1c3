"""Longformer attention (Beltagy et al., 2020): a sliding window plus global tokens.

Each query sees the keys within `window // 2` positions on either side (causal: on the past side
only) and the first `num_global_tokens` tokens (the CLS token); global tokens attend to every key.
The window is computed on blocks of window // 2 tokens, each query block against its neighbour
blocks: O(L (1.5 window + G) d) time for G global tokens, instead of LRA's dense masked L x L.
A window covering the sequence is exact softmax attention.
"""

import numpy as np

from lra.baselines.common import (Attention, block_positions, from_blocks, full_rows, integer,
                                  joint_softmax, logits, mix, neighbours, to_blocks)


class LongformerAttention(Attention):
  """Options: window (512, LRA's sliding window), num_global_tokens (1)."""

  def __init__(self, *, window: int = 512, num_global_tokens: int = 1, **common):
    super().__init__(**common)
    self.window = integer("window", window)
    self.num_global_tokens = integer("num_global_tokens", num_global_tokens, minimum=0)

  def attend(self, q, k, v, mask):
    length = q.shape[1]
    radius, num_global = self.window // 2, min(self.num_global_tokens, length)
    size = min(max(radius, 1), length)  # blocks of >= radius tokens: the window spans 3 blocks
    offsets = (-1, 0) if self.causal else (-1, 0, 1)
    qb, kb, vb, mb = (to_blocks(x, size) for x in (q, k, v, mask))
    positions = block_positions(qb.shape[1], size)
    near_positions = neighbours(positions[None], offsets)[0]
    distance = positions[:, :, None] - near_positions[:, None, :]  # [N, C, K]: i - j
    in_window = (np.abs(distance) <= radius) & (near_positions[:, None, :] >= num_global)
    if self.causal:
      in_window = in_window & (distance >= 0)
    window = neighbours(mb, offsets)[:, :, None, None, :] & in_window[:, None]
    kg, vg = k[:, None, :num_global], v[:, None, :num_global]  # [B, 1, G, H, d]
    to_global = mask[:, None, None, None, :num_global]
    if self.causal:
      to_global = to_global & (np.arange(num_global) <= positions[:, None, :, None])
    weights = joint_softmax([logits(qb, neighbours(kb, offsets)), logits(qb, kg)],
                            [window, to_global])
    out = mix(weights[0], neighbours(vb, offsets)) + mix(weights[1], vg)
    out = from_blocks(out, length).astype(v.dtype)
    return full_rows(out, q, k, v, mask, self.causal, range(num_global))
