"""BigBird attention (Zaheer et al., 2020), ITC form, on blocks of `block_size` tokens.

Every query block attends to its neighbouring blocks (window of 3 blocks), the global blocks (first
and last) and `num_random_blocks` (r) random other blocks per head; the global blocks attend to
every key. Each key is counted once (the window skips global blocks, random blocks skip both).
O(L C (5 + r) d) time for blocks of C tokens, plus O(C L d) for the global rows.
causal=True: the window is the previous and own block (keys j <= i), only the first block is
global, and random blocks come from earlier blocks.

Random blocks: for each head and query block, the top r of uniform scores over the allowed blocks.
The scores ([H, N_max, N_max], N_max = ceil(max_length / block_size)) are drawn once, so the pattern
is fixed, as in LRA (which drew it with numpy at trace time); `redraw=True` draws fresh scores at
every training call.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lra.baselines.common import (Attention, block_positions, from_blocks, full_rows, integer,
                                  joint_softmax, logits, mix, neighbours, to_blocks)


class BigBirdAttention(Attention):
  """Options: block_size (64), num_random_blocks (3), redraw (False)."""

  def __init__(self, *, block_size: int = 64, num_random_blocks: int = 3, redraw: bool = False,
               **common):
    super().__init__(**common)
    self.block_size = integer("block_size", block_size)
    self.num_random_blocks = integer("num_random_blocks", num_random_blocks, minimum=0)
    self.init_random(common["rngs"], redraw)

  def draw(self, key):
    max_blocks = -(-self.max_length // self.block_size)
    return jax.random.uniform(key, (self.num_heads, max_blocks, max_blocks))

  def attend(self, q, k, v, mask):
    batch, length = q.shape[:2]
    self.check_length(length)
    size = min(self.block_size, length)
    qb, kb, vb, mb = (to_blocks(x, size) for x in (q, k, v, mask))
    num_blocks = qb.shape[1]
    blocks, positions = np.arange(num_blocks), block_positions(num_blocks, size)
    global_blocks = [0] if self.causal else sorted({0, num_blocks - 1})
    is_global = np.isin(blocks, global_blocks)

    offsets = (-1, 0) if self.causal else (-1, 0, 1)
    near_positions = neighbours(positions[None], offsets)[0]  # [N, 3C]
    in_window = np.broadcast_to(~is_global[near_positions // size][:, None, :],
                                (num_blocks, size, near_positions.shape[1]))
    if self.causal:
      in_window = in_window & (near_positions[:, None, :] <= positions[:, :, None])
    window = neighbours(mb, offsets)[:, :, None, None, :] & in_window[:, None]

    global_positions = positions[global_blocks].reshape(-1)
    kg, vg = (x[:, global_blocks].reshape(batch, 1, -1, *x.shape[3:]) for x in (kb, vb))
    to_global = mb[:, global_blocks].reshape(batch, 1, 1, 1, -1)
    if self.causal:
      to_global = to_global & (global_positions <= positions[:, None, :, None])

    scores = [logits(qb, neighbours(kb, offsets)), logits(qb, kg)]
    visible = [window, to_global]
    values = [neighbours(vb, offsets), vg]
    num_random = min(self.num_random_blocks, num_blocks)
    if num_random:
      kr, vr, random_ok = self._random_blocks(kb, vb, mb, is_global, num_random)
      scores.append(logits(qb, kr))
      visible.append(random_ok)
      values.append(vr)
    weights = joint_softmax(scores, visible)
    out = sum(mix(w, x) for w, x in zip(weights, values))
    out = from_blocks(out, length).astype(v.dtype)
    return full_rows(out, q, k, v, mask, self.causal, global_positions[global_positions < length])

  def _random_blocks(self, kb, vb, mb, is_global, num_random):
    """Keys, values [B, N, r C, H, d] of the r random blocks of each head and query block, and
    their visibility [B, N, H, 1, r C]."""
    batch, num_blocks, size, heads = kb.shape[:4]
    blocks = np.arange(num_blocks)
    allowed = ~is_global[None, :] & (np.abs(blocks[:, None] - blocks[None, :]) > 1)
    if self.causal:
      allowed = allowed & (blocks[None, :] < blocks[:, None])
    scores = self.random()[:, :num_blocks, :num_blocks]
    top, chosen = jax.lax.top_k(jnp.where(allowed, scores, -1.0), num_random)  # [H, N, r]
    heads_index = np.arange(heads)[:, None, None]

    def gather(x):  # [B, N, C, H, ...] -> [B, N, r C, H, ...]
      picked = jnp.moveaxis(x, 3, 1)[:, heads_index, chosen]  # [B, H, N, r, C, ...]
      picked = picked.reshape(batch, heads, num_blocks, num_random * size, *x.shape[4:])
      return jnp.moveaxis(picked, 1, 3)

    ok = mb[:, chosen] & (top >= 0)[None, :, :, :, None]  # [B, H, N, r, C]
    ok = jnp.moveaxis(ok.reshape(batch, heads, num_blocks, -1), 1, 2)[:, :, :, None, :]
    return gather(kb), gather(vb), ok
