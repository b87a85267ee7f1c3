"""Sliding-window softmax attention: each query attends exactly to the keys within `window` positions
(i - w < j <= i causal, |i - j| < w otherwise) through `rfa_jax.window_attention`, in blocks:
O(L w d) time, O(L w) memory. It is the window branch of RFA's `window` option on its own, the control
that shows what the RFA branch adds. A window of at least L positions is exact softmax attention."""

import rfa_jax
from lra.baselines.common import Attention, integer


class SlidingWindowAttention(Attention):
  """Options: window (64)."""

  def __init__(self, *, window: int = 64, **common):
    super().__init__(**common)
    self.window = integer("window", window)

  def attend(self, q, k, v, mask):
    return rfa_jax.window_attention(q, k, v, window=self.window, causal=self.causal, key_mask=mask)
