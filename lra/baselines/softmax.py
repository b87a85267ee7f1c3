"""Exact multi-head dot-product attention (Vaswani et al., 2017): the baseline every mechanism is
compared with, through `jax.nn.dot_product_attention` (cuDNN's fused flash attention on a GPU where
it applies, XLA's elsewhere; see `common.fused_attention`). O(L^2 d) time; O(L^2) memory per head
with XLA, O(L) with the fused kernel.

Decoding (causal): `init_cache((batch, max_length, emb_dim))` creates a key/value cache, heads
first ([batch, heads, slots, head_dim], slots = max_length rounded up to a block of CACHE_BLOCK),
and `cache_index` (tokens consumed) as `nnx.Cache`; with decode=True a call takes the next tokens
(one, or a prompt) without a padding mask, writes their keys and values in place at
cache_index.., and attends over the filled blocks only, with an online softmax over blocks
(`cached_attention`): O(t d) per token at position t, not O(max_length d). Not differentiable
(the number of blocks read depends on cache_index).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra.baselines.common import MASKED_LOGIT, Attention, fused_attention

CACHE_BLOCK = 256  # cache positions read per step of the decoding loop


class SoftmaxAttention(Attention):
  """out_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j over unpadded keys (j <= i when causal)."""

  decode = False

  def attend(self, q, k, v, mask):
    return fused_attention(q, k, v, mask, self.causal)

  def attend_within(self, q, k, v, mask, segment_ids):
    """Packed sequences: query i sees key j only when segment_ids_i == segment_ids_j != 0 (XLA's
    attention with the [L, L] block-diagonal mask); a query that sees no key outputs 0."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    visible = same & (mask & (segment_ids != 0))[:, None, :]
    if self.causal:
      visible = visible & jnp.tril(jnp.ones(visible.shape[1:], bool))
    out = jax.nn.dot_product_attention(q, k, v, mask=visible[:, None], implementation="xla")
    return jnp.where(jnp.any(visible, -1)[:, :, None, None], out, 0).astype(v.dtype)

  def init_cache(self, input_shape, dtype=jnp.float32):
    """Zero keys and values [batch, heads, slots, head_dim] in `dtype`, cache_index 0; slots is
    max_length rounded up to a multiple of the block the decoding loop reads."""
    if not self.causal:
      raise ValueError("init_cache needs causal=True: bidirectional attention has no decode cache")
    if len(input_shape) != 3:
      raise ValueError(f"input_shape={tuple(input_shape)}; expected (batch, max_length, emb_dim)")
    block = min(CACHE_BLOCK, input_shape[1])
    slots = -(-input_shape[1] // block) * block
    shape = (input_shape[0], self.num_heads, slots, self.head_dim)
    self.cached_key = nnx.Cache(jnp.zeros(shape, dtype))
    self.cached_value = nnx.Cache(jnp.zeros(shape, dtype))
    self.cache_index = nnx.Cache(jnp.array(0, jnp.int32))
    self.cache_block = block

  def __call__(self, x, mask, segment_ids=None):
    if not self.decode:
      return super().__call__(x, mask, segment_ids)
    if segment_ids is not None:
      raise ValueError("decode=True takes segment_ids=None: the cache holds one sequence per row")
    if mask is not None:
      raise ValueError("decode=True takes mask=None: the cache holds no padding")
    if getattr(self, "cache_index", None) is None:
      raise ValueError("decode=True needs a cache: call init_cache((batch, max_length, emb_dim))")
    q, k, v = self.query(x), self.key(x), self.value(x)
    index = self.cache_index[...]
    heads_first = lambda t, cache: jnp.swapaxes(t, 1, 2).astype(cache.dtype)
    keys = jax.lax.dynamic_update_slice_in_dim(
        self.cached_key[...], heads_first(k, self.cached_key), index, axis=2)
    values = jax.lax.dynamic_update_slice_in_dim(
        self.cached_value[...], heads_first(v, self.cached_value), index, axis=2)
    self.cached_key[...], self.cached_value[...] = keys, values
    self.cache_index[...] = index + x.shape[1]
    return self.out(cached_attention(q, keys, values, index, self.cache_block).astype(v.dtype))


def cached_attention(q, keys, values, index, block: int):
  """Causal softmax attention of new queries over a key/value cache, reading filled blocks only.

  q: [B, n, H, d], the queries at positions index .. index + n - 1; keys, values: [B, H, T, d] with
  positions < index + n filled, T a multiple of `block`. Query i sees positions j <= index + i. An
  online softmax over blocks of `block` positions (running maximum m, sum l, weighted values acc):
  m' = max(m, max_j s_j), l' = l e^(m - m') + sum_j e^(s_j - m'), acc likewise; out = acc / l.
  Returns [B, n, H, d] float32.
  """
  batch, n, heads, d = q.shape
  q = jnp.swapaxes(q, 1, 2).astype(jnp.float32) * d ** -0.5  # [B, H, n, d]
  position = index + jnp.arange(n)  # each query's own position

  def read_block(b, carry):
    m, l, acc = carry
    start = b * block
    k = jax.lax.dynamic_slice_in_dim(keys, start, block, axis=2).astype(jnp.float32)
    v = jax.lax.dynamic_slice_in_dim(values, start, block, axis=2).astype(jnp.float32)
    visible = start + jnp.arange(block)[None, :] <= position[:, None]  # [n, block]
    s = jnp.where(visible, jnp.einsum("bhqd,bhkd->bhqk", q, k), MASKED_LOGIT)
    m_new = jnp.maximum(m, jnp.max(s, -1))
    p = jnp.exp(s - m_new[..., None]) * visible
    rescale = jnp.exp(m - m_new)
    return (m_new, l * rescale + jnp.sum(p, -1),
            acc * rescale[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, v))

  init = (jnp.full((batch, heads, n), MASKED_LOGIT, jnp.float32),
          jnp.zeros((batch, heads, n), jnp.float32), jnp.zeros((batch, heads, n, d), jnp.float32))
  filled_blocks = (index + n - 1) // block + 1
  _, l, acc = jax.lax.fori_loop(0, filled_blocks, read_block, init)
  return jnp.swapaxes(acc / l[..., None], 1, 2)
