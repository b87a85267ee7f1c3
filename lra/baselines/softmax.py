"""Exact multi-head dot-product attention (Vaswani et al., 2017): the baseline every mechanism is
compared with, through `jax.nn.dot_product_attention` (cuDNN's fused flash attention on a GPU where
it applies, XLA's elsewhere; see `common.fused_attention`). O(L^2 d) time; O(L^2) memory per head
with XLA, O(L) with the fused kernel.

Decoding (causal): `init_cache((batch, max_length, emb_dim))` creates a key/value cache of
max_length positions and `cache_index` (tokens consumed) as `nnx.Cache`; with decode=True a call
takes the next tokens (one, or a prompt) without a padding mask, writes their keys and values at
cache_index.. and attends over the cached positions up to each token's own. The cache has a fixed shape, so every
step reads all max_length positions (the visible ones by mask): O(max_length d) per token.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.baselines.common import Attention, dot_product_attention, fused_attention


class SoftmaxAttention(Attention):
  """out_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j over unpadded keys (j <= i when causal)."""

  decode = False

  def attend(self, q, k, v, mask):
    return fused_attention(q, k, v, mask, self.causal)

  def init_cache(self, input_shape, dtype=jnp.float32):
    """Zero keys and values [batch, max_length, heads, head_dim] in `dtype`, cache_index 0."""
    if not self.causal:
      raise ValueError("init_cache needs causal=True: bidirectional attention has no decode cache")
    if len(input_shape) != 3:
      raise ValueError(f"input_shape={tuple(input_shape)}; expected (batch, max_length, emb_dim)")
    shape = (input_shape[0], input_shape[1], self.num_heads, self.head_dim)
    self.cached_key = nnx.Cache(jnp.zeros(shape, dtype))
    self.cached_value = nnx.Cache(jnp.zeros(shape, dtype))
    self.cache_index = nnx.Cache(jnp.array(0, jnp.int32))

  def __call__(self, x, mask):
    if not self.decode:
      return super().__call__(x, mask)
    if mask is not None:
      raise ValueError("decode=True takes mask=None: the cache holds no padding")
    if getattr(self, "cache_index", None) is None:
      raise ValueError("decode=True needs a cache: call init_cache((batch, max_length, emb_dim))")
    q, k, v = self.query(x), self.key(x), self.value(x)
    index, length = self.cache_index[...], self.cached_key.shape[1]
    keys = jax.lax.dynamic_update_slice_in_dim(
        self.cached_key[...], k.astype(self.cached_key.dtype), index, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(
        self.cached_value[...], v.astype(self.cached_value.dtype), index, axis=1)
    self.cached_key[...], self.cached_value[...] = keys, values
    self.cache_index[...] = index + x.shape[1]
    visible = np.arange(length)[None, :] <= (index + jnp.arange(x.shape[1]))[:, None]
    return self.out(dot_product_attention(q, keys.astype(q.dtype), values.astype(v.dtype),
                                          visible[None, None]))
